"""Reading CT slices from DICOM with pydicom.

HU = stored value x RescaleSlope + RescaleIntercept (the modality LUT). Compressed
transfer syntaxes (JPEG, JPEG-LS, JPEG 2000) decode through the pylibjpeg plugins
that pydicom finds on its own.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from deeplesion_tf.data import checks

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
INVALID_VALUE = "invalid_value"
TOO_SMALL = "too_small"


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
      patient_id: PatientID (an identifier: pseudonymise it before writing).
      ignored: one message per optional attribute present with an invalid value
        (a window, the thickness, the position, the instance number), which is
        then treated as absent.
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
    patient_id: str = ""
    ignored: Tuple[str, ...] = ()


def _source_name(source: PathOrFile) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", "<file object>"))


def _present(ds: pydicom.Dataset, keyword: str):
    """The value of `keyword`, or None where it is absent or empty.

    A value its VR cannot hold (e.g. "abc" in the DS RescaleSlope of an
    implicit-VR file) makes pydicom raise when it converts it; such a value is
    returned as its raw text (a list where it holds backslashes), for `checks`
    to refuse by name.
    """
    try:
        element = ds.get(keyword)
    except Exception:  # pydicom raises ValueError, OverflowError, ... by VR.
        raw = ds.get_item(keyword)
        text = bytes(getattr(raw, "value", b"") or b"").decode("ascii", "replace").strip(" \0")
        element = text.split("\\") if "\\" in text else text
    if element is None or (isinstance(element, (str, bytes)) and not element.strip()):
        return None
    if hasattr(element, "__len__") and not isinstance(element, (str, bytes)) \
            and len(element) == 0:
        return None
    return element


def _values(element) -> list:
    if isinstance(element, (list, tuple, pydicom.multival.MultiValue)):
        return list(element)
    return [element]


def _optional(ds: pydicom.Dataset, keyword: str, parse, ignored: List[str]):
    """`parse(value, keyword)` of an optional attribute; None, noted in `ignored`, if invalid."""
    value = _present(ds, keyword)
    if value is None:
        return None
    try:
        return parse(value, keyword)
    except checks.InvalidValue as e:
        ignored.append(str(e))
        return None


def _windows(ds: pydicom.Dataset, ignored: List[str]) -> Tuple[Tuple[float, float], ...]:
    centers = _optional(ds, "WindowCenter", lambda v, k: [checks.number(c, k) for c in _values(v)],
                        ignored) or []
    widths = _optional(ds, "WindowWidth", lambda v, k: [checks.positive(w, k) for w in _values(v)],
                       ignored) or []
    return tuple(zip(centers, widths))


def _position(value, keyword: str) -> float:
    if keyword == "ImagePositionPatient":
        return checks.numbers(_values(value), keyword, 3)[2]
    return checks.number(value, keyword)


def head_to_feet_key(position_mm: Optional[float], instance_number: Optional[int], path: str):
    """The sort key that orders a series' slices from head to feet (patient z descending).

    That is the order in which scanners number axial slices, and the order of the
    NIH release's slice files, so `previous_slice` is the slice above the key slice
    in every source. Slices without a position sort last; the instance number breaks
    ties or stands in, then the path.
    """
    return (position_mm is None, -(position_mm or 0.0), instance_number or 0, path)


def slice_interval(positions) -> Optional[float]:
    """A series' slice interval in mm: the median distance of consecutive known
    positions (`None` entries skipped), or None where fewer than two differ."""
    known = [p for p in positions if p is not None]
    steps = np.abs(np.diff(known)) if len(known) >= 2 else np.zeros([0])
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


def dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    """Any DICOM dataset (an image, a header, a report) as the bytes of a part-10 file."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def header_geometry(ds: pydicom.Dataset) -> Tuple[Optional[float], Optional[int], Tuple[str, ...]]:
    """Where a slice lies in its series, tolerating bad values.

    Returns:
      `(position, instance_number, ignored)`: patient z from ImagePositionPatient,
      else SliceLocation, else None; InstanceNumber or None; and one message per
      attribute that was present but invalid (and treated as absent).
    """
    ignored: List[str] = []
    position = _optional(ds, "ImagePositionPatient", _position, ignored)
    if position is None:
        position = _optional(ds, "SliceLocation", _position, ignored)
    number = _optional(ds, "InstanceNumber", checks.integer, ignored)
    return position, number, tuple(ignored)


def _required(ds: pydicom.Dataset, name: str, keyword: str, parse):
    value = _present(ds, keyword)
    if value is None:
        raise CTReadError(name, f"missing {keyword}", MISSING_TAG)
    try:
        return parse(value, keyword)
    except checks.InvalidValue as e:
        raise CTReadError(name, str(e), INVALID_VALUE) from e


def _count(ds: pydicom.Dataset, keyword: str, default: int) -> int:
    value = _present(ds, keyword)
    return default if value is None else checks.integer(value, keyword)


class _Rescale(NamedTuple):
    slope: float
    intercept: float
    spacing_mm: Tuple[float, float]


def _spacing(value, keyword: str) -> Tuple[float, float]:
    row_mm, col_mm = checks.numbers(_values(value), keyword, 2)
    return checks.positive(row_mm, keyword), checks.positive(col_mm, keyword)


def _check_ct(ds: pydicom.Dataset, name: str) -> _Rescale:
    """Checks that `ds` is a single-frame grayscale CT; returns its rescale and spacing."""
    modality = ds.get("Modality")
    sop_class = str(ds.get("SOPClassUID", ""))
    if modality != "CT" and sop_class not in (CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE):
        raise CTReadError(
            name, f"not a CT image (Modality={modality!r}, SOPClassUID={sop_class!r})", NOT_CT)
    if "PixelData" not in ds:
        raise CTReadError(name, "has no pixel data", NO_PIXEL_DATA)
    try:
        frames = _count(ds, "NumberOfFrames", 1)
        samples = _count(ds, "SamplesPerPixel", 1)
    except checks.InvalidValue as e:
        raise CTReadError(name, str(e), INVALID_VALUE) from e
    rows = _required(ds, name, "Rows", checks.integer)
    columns = _required(ds, name, "Columns", checks.integer)
    try:
        checks.slice_size(rows, columns, "Rows x Columns")
    except checks.InvalidValue as e:
        raise CTReadError(name, str(e), TOO_SMALL) from e
    if frames != 1:
        raise CTReadError(name, f"is a multi-frame image ({frames} frames); "
                          "expected one slice per file", UNSUPPORTED)
    if samples != 1:
        raise CTReadError(name, f"has {samples} samples per pixel; expected grayscale",
                          UNSUPPORTED)
    # A CT without its rescale would silently give raw stored values, not HU; a
    # slope of 0 would give one value everywhere.
    return _Rescale(slope=_required(ds, name, "RescaleSlope", checks.nonzero),
                    intercept=_required(ds, name, "RescaleIntercept", checks.number),
                    spacing_mm=_required(ds, name, "PixelSpacing", _spacing))


def read_ct(source: PathOrFile) -> CTSlice:
    """Reads one CT slice and converts it to HU.

    Args:
      source: a path, or a binary file object (e.g. from `tf.io.gfile.GFile`).

    Returns:
      A `CTSlice`.

    Every numeric attribute is parsed by `checks`: the rescale and spacing must
    be finite (slope not 0, spacing > 0) and each side at least
    `checks.MIN_SLICE_SIDE_PX`; optional values that are present but invalid
    (windows, thickness, position, instance number) are treated as absent and
    listed in `CTSlice.ignored`.

    Raises:
      CTReadError: the file is not DICOM, not CT, has no pixel data, lacks the
        rescale or spacing tags or holds invalid values in them (kind
        `INVALID_VALUE`, naming the attribute), is below the minimum size, or its
        pixel data cannot be decoded (a compressed transfer syntax whose plugin
        is missing, truncated data).
    """
    name = _source_name(source)
    try:
        ds = pydicom.dcmread(source)
    except InvalidDicomError as e:
        raise CTReadError(name, f"not a DICOM file ({e})", NOT_DICOM) from e
    # pydicom raises many types for a corrupt file (OSError, EOFError, struct.error,
    # its own BytesLengthException, ...); all mean "not readable as DICOM".
    except Exception as e:  # noqa: BLE001
        raise CTReadError(name, f"cannot be parsed as DICOM ({type(e).__name__}: {e})",
                          NOT_DICOM) from e
    try:
        return _to_slice(ds, name)
    except CTReadError:
        raise
    except Exception as e:  # noqa: BLE001 - an element pydicom cannot convert, read lazily.
        raise CTReadError(name, f"header cannot be parsed ({type(e).__name__}: {e})",
                          NOT_DICOM) from e


def _to_slice(ds: pydicom.Dataset, name: str) -> CTSlice:
    rescale = _check_ct(ds, name)
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
    if stored.shape != (ds.Rows, ds.Columns):
        raise CTReadError(name, f"pixel data has shape {stored.shape}; Rows x Columns says "
                          f"{ds.Rows}x{ds.Columns}", UNSUPPORTED)
    with np.errstate(over="ignore", invalid="ignore"):
        hu = stored.astype(np.float32) * np.float32(rescale.slope) + np.float32(rescale.intercept)
    if not np.all(np.isfinite(hu)):  # e.g. a slope of 1e38
        raise CTReadError(name, f"RescaleSlope {rescale.slope!r} and RescaleIntercept "
                          f"{rescale.intercept!r} overflow float32 HU", INVALID_VALUE)
    ignored: List[str] = []
    position, number, geometry_ignored = header_geometry(ds)
    ignored.extend(geometry_ignored)
    windows = _windows(ds, ignored)
    return CTSlice(
        hu=hu,
        pixel_spacing_mm=rescale.spacing_mm,
        slice_position_mm=position,
        slice_thickness_mm=_optional(ds, "SliceThickness", checks.positive, ignored),
        windows=windows,
        instance_number=number,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        ignored=tuple(ignored),
    )


def apply_window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Maps HU through a display window to float32 in [0, 1] (DICOM's linear window)."""
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = center - width / 2.0
    return np.clip((np.asarray(hu, np.float32) - low) / np.float32(width), 0.0, 1.0)
