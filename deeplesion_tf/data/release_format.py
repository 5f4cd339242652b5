"""Conventions of the NIH DeepLesion release (`Images_png/` and `DL_info.csv`).

Shared by the synthetic PACS, which writes this layout, and the readers.
Facts checked on real rows (see `shared/data/deeplesion_release_metadata`):
coordinates are 1-based `x, y`; `Bounding_boxes` is the measurement's extent
widened by 5 px; images are 16-bit PNGs holding HU + 32768; the slices of a
series live in `Images_png/<patient>_<study>_<series>/<slice>.png`.
"""

from __future__ import annotations

from typing import List, Sequence

# Column order of `DL_info.csv`.
DL_INFO_COLUMNS = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)

# `Coarse_lesion_type`; -1 means unknown (every training row in the release).
COARSE_TYPES = {
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
}
UNKNOWN_COARSE_TYPE = -1
# The short names of the NIH papers' figures, type 1..8 in order (`COARSE_TYPE_SHORT_NAMES[t - 1]`).
COARSE_TYPE_SHORT_NAMES = ("BN", "AB", "ME", "LV", "LU", "KD", "ST", "PV")

# `Train_Val_Test`.
SPLITS = {1: "train", 2: "validation", 3: "test"}

# PNG value = HU + HU_OFFSET.
HU_OFFSET = 32768


def series_folder(patient: int, study: int, series: int) -> str:
    """`Images_png` sub-folder of a series, e.g. `000001_01_01`."""
    return f"{patient:06d}_{study:02d}_{series:02d}"


def slice_file(slice_index: int) -> str:
    """File name of one slice inside its series folder, e.g. `109.png`."""
    return f"{slice_index:03d}.png"


def key_slice_file_name(patient: int, study: int, series: int, slice_index: int) -> str:
    """`File_name` column value, e.g. `000001_01_01_109.png`."""
    return f"{series_folder(patient, study, series)}_{slice_file(slice_index)}"


def format_numbers(values: Sequence[float]) -> str:
    """Joins numbers as the release does: `"233.537, 95.0204"` (6 significant digits)."""
    return ", ".join(f"{float(v):.6g}" for v in values)


def parse_numbers(text: str) -> List[float]:
    """Parses a release list cell such as `"233.537, 95.0204"`.

    Raises:
      ValueError: the cell is empty or holds something that is not a number.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(p == "" for p in parts):
        raise ValueError(f"not a list of numbers: {text!r}")
    return [float(p) for p in parts]
