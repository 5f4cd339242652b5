"""16-bit grayscale PNGs holding HU + 32768, the NIH release's image format."""

from __future__ import annotations

import io
import struct
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image

from deeplesion_tf.data.release_format import HU_OFFSET

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAYSCALE = 0  # PNG colour type
_SUB_FILTER = 1  # PNG filter type


class PngHeader(NamedTuple):
    width: int
    height: int
    bit_depth: int
    color_type: int


def read_header(data: bytes) -> PngHeader:
    """Reads a PNG's IHDR without decoding the image.

    Raises:
      ValueError: the bytes do not start with a PNG signature and IHDR chunk.
    """
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    return PngHeader(width, height, bit_depth, color_type)


def is_hu_png(header: PngHeader) -> bool:
    """Whether a PNG can hold HU + 32768: one 16-bit grayscale channel."""
    return header.bit_depth == 16 and header.color_type == GRAYSCALE


def require_hu_png(header: PngHeader) -> None:
    """Raises ValueError, naming bit depth and colour type, unless `is_hu_png(header)`."""
    if not is_hu_png(header):
        raise ValueError(f"a PNG of bit depth {header.bit_depth} and colour type "
                         f"{header.color_type}; expected 16-bit grayscale of HU + 32768")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_hu(hu: np.ndarray, compress_level: int = 1) -> bytes:
    """Encodes a `[rows, columns]` HU slice as a 16-bit grayscale PNG of HU + 32768.

    HU are rounded to integers (CT stores integers; a non-integer rescale slope
    is the only source of fractions) and clipped to the uint16 range.

    Written here rather than with Pillow: Pillow offers no choice of PNG filter,
    and its adaptive filtering makes encoding 2.5x slower on CT slices, the
    largest cost of a DICOM build (benchmarks/BENCHMARKS.md). Every row uses the
    Sub filter, which turns CT's smooth 16-bit values into small bytes that zlib
    level 1 packs within 3% of Pillow's size. Any PNG decoder reads the result.

    Args:
      hu: HU values, any real dtype.
      compress_level: zlib level, 0-9.
    """
    values = np.clip(np.rint(np.asarray(hu, np.float64)) + HU_OFFSET, 0, 65535)
    if values.ndim != 2:
        raise ValueError(f"expected one 2-D slice, got shape {values.shape}")
    height, width = values.shape
    raw = values.astype(">u2").view(np.uint8).reshape(height, 2 * width)
    rows = np.empty((height, 2 * width + 1), np.uint8)
    rows[:, 0] = _SUB_FILTER
    rows[:, 1:3] = raw[:, :2]
    # Sub: each byte minus the byte one pixel (2 bytes) to its left, modulo 256.
    np.subtract(raw[:, 2:], raw[:, :-2], out=rows[:, 3:], dtype=np.uint8, casting="unsafe")
    header = struct.pack(">IIBBBBB", width, height, 16, GRAYSCALE, 0, 0, 0)
    return (_PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level))
            + _chunk(b"IEND", b""))


def _check_chunks(data: bytes) -> None:
    """Walks every chunk to IEND, checking lengths and CRCs.

    Pillow's `verify` stops before IEND's CRC and accepts a file cut inside it;
    libpng (TensorFlow's `decode_png`) refuses both, so they are checked here.
    """
    offset = len(_PNG_SIGNATURE)
    while True:
        if offset + 12 > len(data):
            raise ValueError("PNG data ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        end = offset + 12 + length
        if end > len(data):
            raise ValueError(f"PNG chunk {kind!r} is truncated")
        if zlib.crc32(data[offset + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            raise ValueError(f"PNG chunk {kind!r} fails its CRC")
        if kind == b"IEND":
            return
        offset = end


def decode_hu(data: bytes) -> np.ndarray:
    """Decodes a 16-bit PNG of HU + 32768 to `[rows, columns]` float32 HU, in full.

    Every chunk's length and CRC is checked through IEND (`_check_chunks`, then
    Pillow's `verify`) and the image data decompressed completely (`load`), so
    that a PNG with an intact header over corrupt or truncated data is refused
    here rather than when a later reader (TensorFlow's `decode_png`, which
    checks the same) meets it.

    Raises:
      ValueError: not a PNG, not 16-bit grayscale, or its data does not decode;
        the message says which.
    """
    header = read_header(data)
    require_hu_png(header)
    try:
        _check_chunks(data)
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            values = np.asarray(image)
    # Pillow reports corrupt data as OSError, SyntaxError, zlib.error, struct.error,
    # EOFError or ValueError depending on where the stream breaks.
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"PNG data does not decode ({type(e).__name__}: {e})") from e
    if values.shape != (header.height, header.width):
        raise ValueError(f"PNG decodes to shape {values.shape}; its header says "
                         f"{header.height}x{header.width}")
    return values.astype(np.float32) - HU_OFFSET
