"""Key slices from a DICOM tree plus a PACS bookmark export (the paper's source).

The export, `bookmarks.csv`, has one row per bookmark: the key slice's
`sop_instance_uid`, its `relative_path` under the DICOM root (a hint: the UID
decides), and the eight endpoint coordinates `x11 ... y22` in 0-based pixels.
Optional columns: `lesion_id` (kept as the lesion's id) and `noisy` (0/1).

The unit of work is one folder of the tree (`SeriesTask`): its headers are read
once to find every key slice's series and neighbours, so a build scales by
folders across processes or Beam workers.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import math
import posixpath
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
from etils import epath

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import key_slice
from deeplesion_tf.data import png16
from deeplesion_tf.data import skips

REQUIRED_COLUMNS = ("sop_instance_uid", "relative_path") + bookmarks.COORDINATE_NAMES

_HEADER_TAGS = ["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "PatientID",
                "ImagePositionPatient", "SliceLocation", "InstanceNumber"]

_KIND_TO_REASON = {
    ct_reader.NOT_CT: skips.NOT_CT,
    ct_reader.MISSING_TAG: skips.MISSING_TAG,
}

@dataclasses.dataclass(frozen=True)
class BookmarkRow:
    """One parsed row of `bookmarks.csv` (`row_number` counts data rows from 1)."""

    row_number: int
    lesion_id: str
    sop_instance_uid: str
    relative_path: str
    coords: Tuple[float, ...]
    noisy: bool = False


@dataclasses.dataclass(frozen=True)
class SeriesTask:
    """The bookmarks whose key slices lie in one folder of the DICOM tree."""

    directory: str
    bookmarks: Tuple[BookmarkRow, ...]


@dataclasses.dataclass(frozen=True)
class Instance:
    """What the header of one DICOM file says (`path` is absolute)."""

    path: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    position: Optional[float]
    instance_number: Optional[int]


def read_bookmarks(csv_path: epath.PathLike) -> Tuple[List[BookmarkRow], List[skips.Skip]]:
    """Parses a bookmark export.

    Returns:
      `(rows, skipped)`: valid rows in file order, and a `Skip` for each row that
      cannot be parsed (`malformed_row`) or repeats an earlier measurement of the
      same instance (`duplicate_bookmark`).

    Raises:
      ValueError: the file lacks a required column (nothing could be built).
    """
    text = epath.Path(csv_path).read_text()
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}; a bookmark export needs "
                         f"{list(REQUIRED_COLUMNS)}")
    rows, skipped, seen = [], [], set()
    for number, record in enumerate(reader, start=1):
        where = f"{csv_path} row {number}"
        try:
            coords = tuple(float(record[name]) for name in bookmarks.COORDINATE_NAMES)
            uid = (record["sop_instance_uid"] or "").strip()
            path = (record["relative_path"] or "").strip()
            if not uid and not path:
                raise ValueError("no sop_instance_uid and no relative_path")
            noisy = str(record.get("noisy") or "0").strip() not in ("0", "", "false", "False")
        except (TypeError, ValueError) as e:
            skipped.append(skips.Skip(skips.MALFORMED_ROW, 1, f"{where}: {e}"))
            continue
        signature = (uid or path, tuple(round(c, 3) for c in coords))
        if signature in seen:
            skipped.append(skips.Skip(skips.DUPLICATE_BOOKMARK, 1, f"{where}: repeats a bookmark"))
            continue
        seen.add(signature)
        lesion_id = (record.get("lesion_id") or "").strip() or f"bookmark-{number}"
        rows.append(BookmarkRow(number, lesion_id, uid, path, coords, noisy))
    return rows, skipped


def plan_tasks(rows: Sequence[BookmarkRow]) -> List[SeriesTask]:
    """Groups bookmarks by the folder of their key slice, in a deterministic order."""
    groups: Dict[str, List[BookmarkRow]] = collections.defaultdict(list)
    for row in rows:
        groups[posixpath.dirname(row.relative_path.replace("\\", "/"))].append(row)
    return [SeriesTask(d, tuple(groups[d])) for d in sorted(groups)]


def _read_header(path: epath.Path) -> Optional[Instance]:
    try:
        with path.open("rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception:  # Any unreadable file is simply not indexed; its bookmarks are
        return None    # then classified by read_ct, which names the reason.
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid:
        return None
    return Instance(
        path=str(path), sop_instance_uid=uid,
        series_instance_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        position=ct_reader.slice_position(ds), instance_number=ct_reader.instance_number(ds))


def index_directory(root: epath.PathLike, directory: str) -> Dict[str, Instance]:
    """Reads the headers of every file in one folder: SOPInstanceUID -> `Instance`."""
    folder = epath.Path(root) / directory if directory else epath.Path(root)
    index = {}
    if not folder.is_dir():
        return index
    for path in sorted(folder.iterdir()):
        if path.is_file():
            instance = _read_header(path)
            if instance is not None:
                index.setdefault(instance.sop_instance_uid, instance)
    return index


def patient_pseudonym(root: epath.PathLike, task: SeriesTask, salt: str) -> Optional[str]:
    """The pseudonym of the patient of a task, from the first readable key-slice header."""
    for row in task.bookmarks:
        instance = _read_header(epath.Path(root) / row.relative_path)
        if instance is not None and instance.patient_id:
            return deid.pseudonym(salt, "patient", instance.patient_id)
    return None


def _series_members(index: Dict[str, Instance], series_uid: str) -> List[Instance]:
    """The slices of a series from head to feet (patient z descending).

    That is the order in which scanners number axial slices, and the order of the
    NIH release's slice files, so `previous_slice` is the slice above the key
    slice in both sources. The instance number breaks ties or stands in.
    """
    members = [i for i in index.values() if i.series_instance_uid == series_uid]
    return sorted(members, key=lambda i: (i.position is None, -(i.position or 0.0),
                                          i.instance_number or 0, i.path))


def _slice_interval(members: Sequence[Instance], fallback: Optional[float]) -> float:
    positions = [m.position for m in members if m.position is not None]
    if len(positions) >= 2:
        steps = np.abs(np.diff(positions))
        steps = steps[steps > 0]
        if steps.size:
            return float(np.median(steps))
    return float(fallback) if fallback else math.nan


def _locate(root: epath.PathLike, rows: Sequence[BookmarkRow], index: Dict[str, Instance]
            ) -> Union[Instance, skips.Skip]:
    """Finds the key slice of bookmarks that share an instance, or says why not."""
    first = rows[0]
    where = f"{first.relative_path} (bookmark row {first.row_number})"
    if first.sop_instance_uid in index:
        return index[first.sop_instance_uid]
    path = epath.Path(root) / first.relative_path
    if not first.relative_path or not path.exists():
        return skips.Skip(skips.MISSING_FILE, len(rows), f"{where}: no such file")
    try:
        with path.open("rb") as f:
            ct = ct_reader.read_ct(f)
    except ct_reader.CTReadError as e:
        return skips.Skip(_KIND_TO_REASON.get(e.kind, skips.UNREADABLE_FILE), len(rows),
                          f"{where}: {e.reason}")
    if first.sop_instance_uid and ct.sop_instance_uid != first.sop_instance_uid:
        return skips.Skip(skips.UNKNOWN_INSTANCE, len(rows),
                          f"{where}: the export's instance is not in this folder")
    # Readable, but without a usable header entry (e.g. no SOPInstanceUID).
    return skips.Skip(skips.UNREADABLE_FILE, len(rows), f"{where}: header cannot be indexed")


def _read(path: str) -> ct_reader.CTSlice:
    with epath.Path(path).open("rb") as f:
        return ct_reader.read_ct(f)


def process_series(
    root: epath.PathLike,
    task: SeriesTask,
    salt: str,
    padding: float,
    compress_level: int = 1,
) -> List[skips.Outcome]:
    """Builds the examples of one folder.

    Returns:
      In a deterministic order: `(key, example)` pairs (see `key_slice.make_example`),
      `Skip`s for bookmarks that could not be used and `Repair`s for examples kept
      with a neighbour replaced by the key slice.
    """
    index = index_directory(root, task.directory)
    by_instance: Dict[str, List[BookmarkRow]] = collections.defaultdict(list)
    for row in task.bookmarks:
        by_instance[row.sop_instance_uid or row.relative_path].append(row)

    outcomes: List[skips.Outcome] = []
    png_cache: Dict[str, bytes] = {}

    def encoded(ct_slice: ct_reader.CTSlice, path: str) -> bytes:
        if path not in png_cache:
            png_cache[path] = png16.encode_hu(ct_slice.hu, compress_level)
        return png_cache[path]

    for rows in by_instance.values():
        located = _locate(root, rows, index)
        if isinstance(located, skips.Skip):
            outcomes.append(located)
            continue
        where = f"{located.path} (bookmark row {rows[0].row_number})"
        try:
            ct = _read(located.path)
        except ct_reader.CTReadError as e:
            outcomes.append(skips.Skip(_KIND_TO_REASON.get(e.kind, skips.UNREADABLE_FILE),
                                       len(rows), f"{where}: {e.reason}"))
            continue
        if not located.patient_id:
            outcomes.append(skips.Skip(skips.NO_PATIENT_ID, len(rows), f"{where}: no PatientID"))
            continue
        height, width = ct.hu.shape
        lesions, skipped = key_slice.lesion_features(
            [key_slice.LesionRecord(r.lesion_id, r.coords, noisy=r.noisy) for r in rows],
            height, width, ct.pixel_spacing_mm, padding)
        outcomes.extend(skipped)
        if not lesions["lesion_id"]:
            continue

        members = _series_members(index, located.series_instance_uid)
        position = [m.sop_instance_uid for m in members].index(located.sop_instance_uid)
        images = {"image": encoded(ct, located.path)}
        for name, step in (("previous_slice", -1), ("next_slice", 1)):
            neighbour = members[min(max(position + step, 0), len(members) - 1)]
            try:
                neighbour_ct = ct if neighbour.path == located.path else _read(neighbour.path)
                if neighbour_ct.hu.shape != ct.hu.shape:
                    raise ct_reader.CTReadError(neighbour.path, "size differs from the key slice",
                                                ct_reader.UNSUPPORTED)
                images[name] = encoded(neighbour_ct, neighbour.path)
            except ct_reader.CTReadError as e:
                outcomes.append(skips.Repair(skips.NEIGHBOR_REPLACED_BY_KEY, f"{where}: {e}"))
                images[name] = images["image"]

        patient = deid.pseudonym(salt, "patient", located.patient_id)
        study = deid.pseudonym(salt, "study", located.study_instance_uid)
        series = deid.pseudonym(salt, "series", located.series_instance_uid)
        window = (math.nan, math.nan)
        if ct.windows:
            center, width_hu = ct.windows[0]
            window = (center - width_hu / 2.0, center + width_hu / 2.0)
        example = key_slice.make_example(
            **images, lesions=lesions, patient_id=patient, study_id=study, series_id=series,
            slice_index=position, spacing_mm=ct.pixel_spacing_mm,
            slice_interval_mm=_slice_interval(members, ct.slice_thickness_mm), window=window)
        outcomes.append((f"{patient}_{study}_{series}_{position:05d}", example))
    return outcomes
