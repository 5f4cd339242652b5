"""Key slices from the NIH DeepLesion release (`Images_png/` + `DL_info.csv`).

Honours the release's conventions (see `release_format`): 1-based coordinates,
the official `Train_Val_Test` split, `Possibly_noisy`, `Coarse_lesion_type`,
spacing, slice range and windows. Its 16-bit PNGs are passed through as bytes,
never re-encoded; each is decoded in full once, to check it, before it is written.

Nothing stops a build but a `DL_info.csv` that cannot be read as a table (see
`csv_table`) or lacks a column. Every row ends as a lesion of an example or as
one counted `Skip` naming the file and the row (`malformed_row`), the key
slice's PNG (`missing_png`, `not_16bit_png`, `corrupt_png`, `image_too_small`,
`unreadable_file`) or the lesion (`invalid_geometry`); a neighbour slice that
cannot be used is replaced by the key slice and counted as a `Repair`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from etils import epath

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import checks
from deeplesion_tf.data import csv_table
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


def _cell_numbers(record: Dict[str, str], column: str, count: int) -> Tuple[float, ...]:
    """A list cell such as `"233.537, 95.0204"` as `count` finite floats."""
    text = record[column]
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != count:
        raise checks.InvalidValue(column, text, f"has {len(parts)} values; expected {count}")
    values = []
    for part in parts:
        try:
            values.append(checks.number(part, column))
        except checks.InvalidValue as e:
            raise checks.InvalidValue(column, text, f"holds {part!r}, which {e.why}") from None
    return tuple(values)


def _whole(record: Dict[str, str], column: str, minimum: int = 1) -> int:
    """A whole-number cell, at least `minimum` (the release counts from 1)."""
    value = checks.integer(record[column], column)
    if value < minimum:
        raise checks.InvalidValue(column, record[column], f"must be >= {minimum}")
    return value


def _one_of(record: Dict[str, str], column: str, allowed) -> int:
    value = checks.integer(record[column], column)
    if value not in allowed:
        raise checks.InvalidValue(column, record[column], f"is not one of {sorted(allowed)}")
    return value


def _parse_row(index: int, record: Dict[str, str]) -> ReleaseRow:
    """Parses and checks one `DL_info.csv` row.

    Checked: the ids and `Key_slice_index` are whole numbers >= 1 and `File_name`
    is the one they give; `Key_slice_index` lies in `Slice_range`; eight finite
    coordinates; three finite positive spacings; a window of two finite values,
    low < high; `Coarse_lesion_type` -1 or a `COARSE_TYPES` key;
    `Possibly_noisy` 0/1; `Train_Val_Test` 1/2/3. The columns this reader does
    not use (`Bounding_boxes`, diameters, location, `Image_size`, gender, age)
    are not read: the geometry is recomputed from the measurement and the size
    taken from the PNG.

    Raises:
      checks.InvalidValue: a cell that fails; the message names the column.
    """
    patient = _whole(record, "Patient_index")
    study = _whole(record, "Study_index")
    series = _whole(record, "Series_ID")
    key = _whole(record, "Key_slice_index")
    file_name = record["File_name"].strip()
    expected = release_format.key_slice_file_name(patient, study, series, key)
    if file_name != expected:
        raise checks.InvalidValue(
            "File_name", record["File_name"],
            f"disagrees with Patient_index, Study_index, Series_ID and Key_slice_index "
            f"{patient}, {study}, {series}, {key}, which give {expected!r}")
    coords = _cell_numbers(record, "Measurement_coordinates", 8)
    low, high = (checks.integer(v, "Slice_range") for v in _cell_numbers(record, "Slice_range", 2))
    if not 1 <= low <= key <= high:
        raise checks.InvalidValue("Slice_range", record["Slice_range"],
                                  f"must hold Key_slice_index {key} (1 <= low <= key <= high)")
    spacing = _cell_numbers(record, "Spacing_mm_px_", 3)
    if min(spacing) <= 0:
        raise checks.InvalidValue("Spacing_mm_px_", record["Spacing_mm_px_"],
                                  "must be three values > 0")
    window = _cell_numbers(record, "DICOM_windows", 2)
    if not window[0] < window[1]:
        raise checks.InvalidValue("DICOM_windows", record["DICOM_windows"],
                                  "must be low < high")
    coarse = _one_of(record, "Coarse_lesion_type",
                     set(release_format.COARSE_TYPES) | {release_format.UNKNOWN_COARSE_TYPE})
    noisy = _one_of(record, "Possibly_noisy", {0, 1})
    split = release_format.SPLITS[_one_of(record, "Train_Val_Test", set(release_format.SPLITS))]
    return ReleaseRow(
        row_index=index,
        file_name=file_name,
        patient=patient,
        study=study,
        series=series,
        key_slice=key,
        coords=bookmarks.from_release_coordinates(coords),
        coarse_type=coarse,
        noisy=noisy == 1,
        slice_range=(low, high),
        spacing_xyz=(spacing[0], spacing[1], spacing[2]),
        window=(window[0], window[1]),
        split=split,
    )


def read_dl_info(csv_path: epath.PathLike) -> Tuple[List[ReleaseRow], List[skips.Skip]]:
    """Parses `DL_info.csv` (UTF-8 with or without a BOM; `,`, `;` or tab).

    Returns:
      `(rows, skipped)`: parsed rows in file order and one `malformed_row` Skip
      per data row that does not parse or fails a check of `_parse_row`; its
      detail names the file, the 0-based data row (the lesion id a parsed row
      would have had) and the column.

    Raises:
      ValueError: the file is not UTF-8/UTF-16 text, or the header lacks one of
        the release's 18 columns; the message names the file.
    """
    table = csv_table.read(csv_path)
    missing = table.missing(release_format.DL_INFO_COLUMNS)
    if missing:
        raise ValueError(f"{csv_path}: not a DL_info.csv, missing columns {missing}")
    rows, skipped = [], []
    for number, line, record, error in table.rows():
        index = number - 1
        where = f"{csv_path} data row {index} (line {line})"
        if error is not None:
            skipped.append(skips.Skip(skips.MALFORMED_ROW, 1, f"{where}: {error}"))
            continue
        try:
            rows.append(_parse_row(index, record))
        except ValueError as e:
            skipped.append(skips.Skip(skips.MALFORMED_ROW, 1, f"{where}: {e}"))
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


class _Png(NamedTuple):
    """A slice file read and checked: its bytes and header, or why it cannot be used."""

    data: Optional[bytes]
    header: Optional[png16.PngHeader]
    reason: str = ""  # a skips reason, "" when usable
    why: str = ""     # in words, for the log


def _read_png(path: epath.Path) -> _Png:
    """Reads a slice PNG and decodes it in full (CRCs, every IDAT byte), once."""
    try:
        if not path.exists():
            return _Png(None, None, skips.MISSING_PNG, "no such file")
        data = path.read_bytes()
    except OSError as e:
        return _Png(None, None, skips.UNREADABLE_FILE,
                    f"cannot be read ({type(e).__name__}: {e})")
    try:
        header = png16.read_header(data)
    except ValueError as e:
        return _Png(None, None, skips.NOT_16BIT_PNG, str(e))
    if not png16.is_hu_png(header):
        return _Png(None, None, skips.NOT_16BIT_PNG,
                    f"not a 16-bit grayscale PNG (bit depth {header.bit_depth}, "
                    f"colour type {header.color_type})")
    try:
        png16.decode_hu(data)
    except ValueError as e:
        return _Png(None, None, skips.CORRUPT_PNG, str(e))
    try:  # After decoding: a size read from a damaged header is no size.
        checks.slice_size(header.height, header.width)
    except checks.InvalidValue as e:
        return _Png(None, None, skips.IMAGE_TOO_SMALL, str(e))
    return _Png(data, header)


def process_key_slice(images_dir: epath.PathLike, task: KeySliceTask, padding: float,
                      context_slices: int = 1) -> List[skips.Outcome]:
    """Builds the example of one key slice (PNG bytes passed through, checked first).

    `context_slices`: slices stored on each side (1: previous and next; more adds
    `key_slice.context_steps`, each clamped to the series' `Slice_range` as the NIH
    loader's `get_slice_name` does).

    Returns:
      The `(key, example)` pair, or a `Skip` of all the task's rows naming the key
      slice's file when it is missing, unreadable, not a 16-bit grayscale PNG,
      below `checks.MIN_SLICE_SIDE_PX` or corrupt; plus `invalid_geometry` skips
      of single lesions, and a `Repair` for each neighbour replaced by the key
      slice (missing, unreadable, corrupt, 8-bit, too small or of another size).
    """
    images_dir = epath.Path(images_dir)
    first = task.rows[0]
    key_path = _slice_path(images_dir, first, first.key_slice)
    key = _read_png(key_path)
    if key.data is None:
        return [skips.Skip(key.reason, len(task.rows), f"{key_path}: {key.why}")]
    data, header = key.data, key.header
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
    steps = [("previous_slice", -1), ("next_slice", 1)] + [
        (f"context slice {step:+d}", step) for step in key_slice.context_steps(context_slices)]
    for name, step in steps:
        number = min(max(first.key_slice + step, low), high)
        if number == first.key_slice:  # The series' edge: the key slice stands in, as planned.
            images[name] = data
            continue
        path = _slice_path(images_dir, first, number)
        neighbour = _read_png(path)
        why = neighbour.why
        if neighbour.data is not None and neighbour.header[:2] != header[:2]:
            why = (f"{neighbour.header.height}x{neighbour.header.width} differs from the key "
                   f"slice's {header.height}x{header.width}")
        if why:
            outcomes.append(skips.Repair(skips.NEIGHBOR_REPLACED_BY_KEY,
                                         f"{task.file_name}: {name} {path}: {why}"))
            images[name] = data
        else:
            images[name] = neighbour.data
    context = None
    if context_slices > 1:
        context = [images.pop(f"context slice {step:+d}")
                   for step in key_slice.context_steps(context_slices)]
    example = key_slice.make_example(
        **images, context_slices=context, lesions=lesions,
        patient_id=f"{first.patient:06d}",
        study_id=f"{first.patient:06d}_{first.study:02d}",
        series_id=release_format.series_folder(first.patient, first.study, first.series),
        slice_index=first.key_slice - 1,
        spacing_mm=(spacing_y, spacing_x),
        slice_interval_mm=spacing_z,
        window=first.window)
    outcomes.append((task.file_name[: -len(".png")], example))
    return outcomes
