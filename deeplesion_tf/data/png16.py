"""16-bit grayscale PNGs holding HU + 32768, the NIH release's image format."""

from __future__ import annotations

import io
import struct
from typing import NamedTuple

import numpy as np
from PIL import Image

from deeplesion_tf.data.release_format import HU_OFFSET

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAYSCALE = 0  # PNG colour type


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


def encode_hu(hu: np.ndarray, compress_level: int = 1) -> bytes:
    """Encodes a `[rows, columns]` HU slice as a 16-bit PNG of HU + 32768.

    HU are rounded to integers (CT stores integers; a non-integer rescale slope
    is the only source of fractions) and clipped to the uint16 range.

    Args:
      hu: HU values, any real dtype.
      compress_level: zlib level; 1 is several times faster than the default 6
        for about 5% larger files.
    """
    values = np.clip(np.rint(np.asarray(hu, np.float64)) + HU_OFFSET, 0, 65535).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def decode_hu(data: bytes) -> np.ndarray:
    """Decodes a 16-bit PNG of HU + 32768 to `[rows, columns]` float32 HU."""
    with Image.open(io.BytesIO(data)) as image:
        values = np.asarray(image)
    if values.dtype != np.uint16 and image.mode not in ("I;16", "I;16B", "I"):
        raise ValueError(f"expected a 16-bit grayscale PNG, got mode {image.mode}")
    return values.astype(np.float32) - HU_OFFSET
