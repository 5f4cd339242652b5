"""Key slices from the NIH DeepLesion release (`Images_png/` + `DL_info.csv`).

Honours the release's conventions (see `release_format`): 1-based coordinates,
the official `Train_Val_Test` split, `Possibly_noisy`, `Coarse_lesion_type`,
spacing, slice range and windows. Its 16-bit PNGs are passed through as bytes,
never decoded and re-encoded; only their headers are read, to check them.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
from typing import Dict, List, Optional, Sequence, Tuple

from etils import epath

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import key_slice
from deeplesion_tf.data import png16
from deeplesion_tf.data import release_format
from deeplesion_tf.data import skips

@dataclasses.dataclass(frozen=True)
class ReleaseRow:
    """One parsed row of `DL_info.csv`; `row_index` is its 0-based data row."""

    row_index: int
    file_name: str
    patient: int
    study: int
    series: int
    key_slice: int
    coords: Tuple[float, ...]      # 0-based
    coarse_type: int
    noisy: bool
    slice_range: Tuple[int, int]
    spacing_xyz: Tuple[float, float, float]
    window: Tuple[float, float]
    split: str


@dataclasses.dataclass(frozen=True)
class KeySliceTask:
    """The rows that share one key slice (`File_name`)."""

    file_name: str
    rows: Tuple[ReleaseRow, ...]

    @property
    def split(self) -> str:
        return self.rows[0].split


def _parse_row(index: int, record: Dict[str, str]) -> ReleaseRow:
    numbers = release_format.parse_numbers
    coords = numbers(record["Measurement_coordinates"])
    if len(coords) != 8:
        raise ValueError(f"Measurement_coordinates has {len(coords)} values, expected 8")
    spacing = numbers(record["Spacing_mm_px_"])
    window = numbers(record["DICOM_windows"])
    slice_range = [int(v) for v in numbers(record["Slice_range"])]
    if len(spacing) != 3 or len(window) != 2 or len(slice_range) != 2:
        raise ValueError("Spacing_mm_px_, DICOM_windows or Slice_range has the wrong length")
    split = release_format.SPLITS.get(int(record["Train_Val_Test"]))
    if split is None:
        raise ValueError(f"Train_Val_Test {record['Train_Val_Test']!r} is not 1, 2 or 3")
    file_name = record["File_name"].strip()
    if not file_name.endswith(".png"):
        raise ValueError(f"File_name {file_name!r} is not a PNG name")
    return ReleaseRow(
        row_index=index,
        file_name=file_name,
        patient=int(record["Patient_index"]),
        study=int(record["Study_index"]),
        series=int(record["Series_ID"]),
        key_slice=int(record["Key_slice_index"]),
        coords=bookmarks.from_release_coordinates(coords),
        coarse_type=int(float(record["Coarse_lesion_type"])),
        noisy=int(float(record["Possibly_noisy"])) != 0,
        slice_range=(slice_range[0], slice_range[1]),
        spacing_xyz=(spacing[0], spacing[1], spacing[2]),
        window=(window[0], window[1]),
        split=split,
    )


def read_dl_info(csv_path: epath.PathLike) -> Tuple[List[ReleaseRow], List[skips.Skip]]:
    """Parses `DL_info.csv`.

    Returns:
      `(rows, skipped)`: parsed rows in file order and one `malformed_row` Skip
      per row that cannot be parsed.

    Raises:
      ValueError: the header lacks one of the release's 18 columns.
    """
    reader = csv.DictReader(io.StringIO(epath.Path(csv_path).read_text()))
    missing = [c for c in release_format.DL_INFO_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{csv_path}: not a DL_info.csv, missing columns {missing}")
    rows, skipped = [], []
    for index, record in enumerate(reader):
        try:
            rows.append(_parse_row(index, record))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            skipped.append(skips.Skip(skips.MALFORMED_ROW, 1,
                                      f"{csv_path} data row {index}: {type(e).__name__}: {e}"))
    return rows, skipped


def plan_tasks(rows: Sequence[ReleaseRow]) -> List[KeySliceTask]:
    """Groups rows by key slice, sorted by `File_name`."""
    groups: Dict[str, List[ReleaseRow]] = collections.defaultdict(list)
    for row in rows:
        groups[row.file_name].append(row)
    return [KeySliceTask(name, tuple(groups[name])) for name in sorted(groups)]


def _slice_path(images_dir: epath.Path, row: ReleaseRow, slice_number: int) -> epath.Path:
    folder = release_format.series_folder(row.patient, row.study, row.series)
    return images_dir / folder / release_format.slice_file(slice_number)


def _read_png(path: epath.Path) -> Tuple[Optional[bytes], Optional[png16.PngHeader], str]:
    """The bytes and header of a PNG, or `(None, None, why)`."""
    if not path.exists():
        return None, None, skips.MISSING_PNG
    data = path.read_bytes()
    try:
        header = png16.read_header(data)
    except ValueError:
        return None, None, skips.NOT_16BIT_PNG
    if not png16.is_hu_png(header):
        return None, None, skips.NOT_16BIT_PNG
    return data, header, ""


def process_key_slice(images_dir: epath.PathLike, task: KeySliceTask, padding: float
                      ) -> List[skips.Outcome]:
    """Builds the example of one key slice (PNG bytes passed through)."""
    images_dir = epath.Path(images_dir)
    first = task.rows[0]
    key_path = _slice_path(images_dir, first, first.key_slice)
    data, header, why = _read_png(key_path)
    if data is None:
        detail = f"{key_path}: " + ("no such file" if why == skips.MISSING_PNG
                                    else "not a 16-bit grayscale PNG")
        return [skips.Skip(why, len(task.rows), detail)]
    outcomes: List[skips.Outcome] = []
    spacing_x, spacing_y, spacing_z = first.spacing_xyz
    lesions, skipped = key_slice.lesion_features(
        [key_slice.LesionRecord(str(r.row_index), r.coords, r.coarse_type, r.noisy)
         for r in task.rows],
        header.height, header.width, (spacing_y, spacing_x), padding)
    outcomes.extend(skipped)
    if not lesions["lesion_id"]:
        return outcomes
    images = {"image": data}
    low, high = first.slice_range
    for name, step in (("previous_slice", -1), ("next_slice", 1)):
        number = min(max(first.key_slice + step, low), high)
        neighbour, neighbour_header, why = _read_png(_slice_path(images_dir, first, number))
        if neighbour is None or neighbour_header[:2] != header[:2]:
            outcomes.append(skips.Repair(skips.NEIGHBOR_REPLACED_BY_KEY,
                                         f"{task.file_name}: slice {number} {why or 'size differs'}"))
            neighbour = data
        images[name] = neighbour
    example = key_slice.make_example(
        **images, lesions=lesions,
        patient_id=f"{first.patient:06d}",
        study_id=f"{first.patient:06d}_{first.study:02d}",
        series_id=release_format.series_folder(first.patient, first.study, first.series),
        slice_index=first.key_slice - 1,
        spacing_mm=(spacing_y, spacing_x),
        slice_interval_mm=spacing_z,
        window=first.window)
    outcomes.append((task.file_name[: -len(".png")], example))
    return outcomes
