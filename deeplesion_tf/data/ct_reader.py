"""Reading CT slices from DICOM with pydicom.

HU = stored value x RescaleSlope + RescaleIntercept (the modality LUT). Compressed
transfer syntaxes (JPEG, JPEG-LS, JPEG 2000) decode through the pylibjpeg plugins
that pydicom finds on its own.
"""

from __future__ import annotations

import os
from typing import BinaryIO, NamedTuple, Optional, Tuple, Union

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"

PathOrFile = Union[str, os.PathLike, BinaryIO]


# What went wrong, for callers that count failures by kind (`CTReadError.kind`).
NOT_DICOM = "not_dicom"
NOT_CT = "not_ct"
NO_PIXEL_DATA = "no_pixel_data"
MISSING_TAG = "missing_tag"
UNSUPPORTED = "unsupported"
UNDECODABLE = "undecodable"


class CTReadError(ValueError):
    """A file that cannot be read as a CT slice; the message names the file and the reason.

    Attributes:
      source: the file's path or name.
      reason: what is wrong, in words.
      kind: one of the module's constants (NOT_DICOM, NOT_CT, ...).
    """

    def __init__(self, source: str, reason: str, kind: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.kind = kind


class CTSlice(NamedTuple):
    """One axial CT slice.

    Attributes:
      hu: `[rows, columns]` float32 Hounsfield units.
      pixel_spacing_mm: `(row_spacing, column_spacing)` in mm (DICOM PixelSpacing order).
      slice_position_mm: z of ImagePositionPatient, else SliceLocation, else None.
      slice_thickness_mm: SliceThickness, or None.
      windows: `((center, width), ...)` from WindowCenter/WindowWidth, may be empty.
      instance_number: InstanceNumber, or None.
      sop_instance_uid: identifies the instance (a DICOM UID: never write it out).
      series_instance_uid: likewise.
      study_instance_uid: likewise.
    """

    hu: np.ndarray
    pixel_spacing_mm: Tuple[float, float]
    slice_position_mm: Optional[float]
    slice_thickness_mm: Optional[float]
    windows: Tuple[Tuple[float, float], ...]
    instance_number: Optional[int]
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


def _source_name(source: PathOrFile) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<file object>"))


def _as_floats(value) -> Tuple[float, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return tuple(float(v) for v in value)
    return (float(value),)


def _windows(ds: pydicom.Dataset) -> Tuple[Tuple[float, float], ...]:
    centers = _as_floats(ds.get("WindowCenter"))
    widths = _as_floats(ds.get("WindowWidth"))
    return tuple(zip(centers, widths))


def slice_position(ds: pydicom.Dataset) -> Optional[float]:
    """Patient z of a slice: ImagePositionPatient, else SliceLocation, else None."""
    position = ds.get("ImagePositionPatient")
    if position is not None and len(position) == 3:
        return float(position[2])
    if ds.get("SliceLocation") is not None:
        return float(ds.SliceLocation)
    return None


def instance_number(ds: pydicom.Dataset) -> Optional[int]:
    """InstanceNumber, or None where it is absent or empty."""
    number = ds.get("InstanceNumber")
    return int(number) if number not in (None, "") else None


def _check_ct(ds: pydicom.Dataset, name: str) -> None:
    modality = ds.get("Modality")
    sop_class = str(ds.get("SOPClassUID", ""))
    if modality != "CT" and sop_class not in (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE):
        raise CTReadError(name, f"not a CT image (Modality={modality!r}, SOPClassUID={sop_class!r})",
                          NOT_CT)
    if "PixelData" not in ds:
        raise CTReadError(name, "has no pixel data", NO_PIXEL_DATA)
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise CTReadError(name, f"is a multi-frame image ({ds.NumberOfFrames} frames); "
                          "expected one slice per file", UNSUPPORTED)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise CTReadError(name, f"has {ds.SamplesPerPixel} samples per pixel; expected grayscale",
                          UNSUPPORTED)
    # A CT without its rescale would silently give raw stored values, not HU.
    for tag in ("RescaleSlope", "RescaleIntercept", "PixelSpacing"):
        if ds.get(tag) is None:
            raise CTReadError(name, f"missing {tag}", MISSING_TAG)


def read_ct(source: PathOrFile) -> CTSlice:
    """Reads one CT slice and converts it to HU.

    Args:
      source: a path, or a binary file object (e.g. from `tf.io.gfile.GFile`).

    Returns:
      A `CTSlice`.

    Raises:
      CTReadError: the file is not DICOM, not CT, has no pixel data, lacks the
        rescale or spacing tags, or its pixel data cannot be decoded (a
        compressed transfer syntax whose plugin is missing, truncated data).
    """
    name = _source_name(source)
    try:
        ds = pydicom.dcmread(source)
    except InvalidDicomError as e:
        raise CTReadError(name, f"not a DICOM file ({e})", NOT_DICOM) from e
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise CTReadError(name, f"cannot be parsed as DICOM ({type(e).__name__}: {e})",
                          NOT_DICOM) from e
    _check_ct(ds, name)
    try:
        stored = ds.pixel_array
    except Exception as e:  # pydicom raises many types here; all mean "cannot decode".
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", str(syntax))
        raise CTReadError(
            name, f"pixel data cannot be decoded (transfer syntax {syntax_name}): "
                  f"{type(e).__name__}: {e}", UNDECODABLE) from e
    if stored.ndim != 2:
        raise CTReadError(name, f"pixel data has shape {stored.shape}; expected one 2-D slice",
                          UNSUPPORTED)
    slope = float(ds.RescaleSlope)
    intercept = float(ds.RescaleIntercept)
    hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    try:
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    except (TypeError, ValueError) as e:
        raise CTReadError(name, f"PixelSpacing {ds.PixelSpacing!r} is not two numbers",
                          MISSING_TAG) from e
    if not (row_mm > 0 and col_mm > 0):
        raise CTReadError(name, f"PixelSpacing {ds.PixelSpacing!r} is not positive",
                          MISSING_TAG)
    thickness = ds.get("SliceThickness")
    return CTSlice(
        hu=hu,
        pixel_spacing_mm=(row_mm, col_mm),
        slice_position_mm=slice_position(ds),
        slice_thickness_mm=float(thickness) if thickness not in (None, "") else None,
        windows=_windows(ds),
        instance_number=instance_number(ds),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
    )


def apply_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Maps HU through a display window to float32 in [0, 1] (DICOM's linear window)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    return np.clip((np.asarray(hu, np.float32) - low) / np.float32(width), 0.0, 1.0)
