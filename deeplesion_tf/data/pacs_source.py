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
import dataclasses
import math
import os
import posixpath
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import pydicom
from etils import epath

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import checks
from deeplesion_tf.data import csv_table
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
    ct_reader.INVALID_VALUE: skips.INVALID_VALUE,
    ct_reader.TOO_SMALL: skips.IMAGE_TOO_SMALL,
}
# A neighbour further from the key slice than this many slice intervals is not
# its neighbour: a slice in between is missing (or its position is unreadable).
_MAX_NEIGHBOUR_GAP = 1.5

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
    """The bookmarks whose key slices lie in one series (or, unreadable, one folder).

    Attributes:
      directories: folders of the tree holding the key slices, relative to the
        root. A series exported over two folders is one task, so that its
        slices are ordered, numbered and written once.
      bookmarks: the rows.
      patient: the pseudonym of the patient, from the key slices' headers; None
        where no header could be read (the task then yields only skips).
    """

    directories: Tuple[str, ...]
    bookmarks: Tuple[BookmarkRow, ...]
    patient: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Instance:
    """What the header of one DICOM file says (`path` is absolute; `real_path` with
    symbolic links resolved, which identifies the file)."""

    path: str
    real_path: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    position: Optional[float]
    instance_number: Optional[int]
    ignored: Tuple[str, ...] = ()


class _OutsideRoot(ValueError):
    """A `relative_path` that is absolute or climbs above the root."""


def _relative_path(raw: Optional[str]) -> str:
    """A row's `relative_path` as a normalised POSIX path under the root ("" if blank).

    Backslashes (a Windows export) become slashes, then `posixpath.normpath`
    folds `a/./b`, `a//b` and `a/../b`.

    Raises:
      _OutsideRoot: an absolute path (`/x`, a drive `C:x`, a UNC `\\\\host\\x`) or one
        that leaves the root (`../x` after normalisation).
      checks.InvalidValue: the path names the root itself.
    """
    text = (raw or "").strip().replace("\\", "/")
    if not text:
        return ""
    if text.startswith("/") or (len(text) >= 2 and text[1] == ":" and text[0].isascii()
                                and text[0].isalpha()):
        raise _OutsideRoot(f"relative_path {raw!r} is absolute: it leaves the manual_dir")
    path = posixpath.normpath(text)
    if path == ".." or path.startswith("../"):
        raise _OutsideRoot(f"relative_path {raw!r} leaves the manual_dir")
    if path == ".":
        raise checks.InvalidValue("relative_path", raw, "names the root, not a file")
    return path


def _coordinate(record: Dict[str, str], name: str) -> float:
    """One endpoint coordinate. NaN and infinity pass: `bookmarks.measure` refuses
    them as `invalid_geometry`, with the other geometry faults."""
    text = (record[name] or "").strip()
    try:
        return float(text)
    except ValueError:
        raise checks.InvalidValue(name, record[name], "is not a number") from None


def _signature(instance: str, coords: Sequence[float]) -> tuple:
    """What makes two bookmarks one: the same instance and coordinates to 0.001 px."""
    return instance, tuple(round(c, 3) for c in coords)


_NOISY = {"": False, "0": False, "false": False, "1": True, "true": True}


def read_bookmarks(csv_path: epath.PathLike) -> Tuple[List[BookmarkRow], List[skips.Skip]]:
    """Parses a bookmark export (any `csv_table` accepts: UTF-8 with or without a
    BOM, `,` `;` or tab).

    Every data row ends as a `BookmarkRow` or as exactly one `Skip` whose detail
    names the file and the row: `malformed_row` (the row does not parse, has
    another number of fields than the header, a coordinate that is not a number,
    a `noisy` other than 0/1/true/false, neither a UID nor a path),
    `outside_manual_dir` (an absolute `relative_path` or one that climbs out of
    the root), or `duplicate_bookmark` (the same coordinates, to 0.001 px, on the
    same instance, or on the same normalised path where the UID is absent).
    `relative_path` is returned normalised: forward slashes, no `.`/`..` parts.

    Returns:
      `(rows, skipped)`: valid rows in file order, and the skips.

    Raises:
      ValueError: the file is not UTF-8/UTF-16 text or lacks a required column
        (nothing could be built); the message names the file.
    """
    table = csv_table.read(csv_path)
    missing = table.missing(REQUIRED_COLUMNS)
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}; a bookmark export needs "
                         f"{list(REQUIRED_COLUMNS)}")
    rows, skipped, seen = [], [], set()
    for number, _, record, error in table.rows():
        where = f"{csv_path} row {number}"
        if error is not None:
            skipped.append(skips.Skip(skips.MALFORMED_ROW, 1, f"{where}: {error}"))
            continue
        try:
            path = _relative_path(record["relative_path"])
            uid = (record["sop_instance_uid"] or "").strip()
            if not uid and not path:
                raise ValueError("no sop_instance_uid and no relative_path")
            coords = tuple(_coordinate(record, name) for name in bookmarks.COORDINATE_NAMES)
            noisy_text = (record.get("noisy") or "").strip()
            if noisy_text.lower() not in _NOISY:
                raise checks.InvalidValue("noisy", noisy_text, "is not 0, 1, true or false")
            noisy = _NOISY[noisy_text.lower()]
        except _OutsideRoot as e:
            skipped.append(skips.Skip(skips.OUTSIDE_MANUAL_DIR, 1, f"{where}: {e}"))
            continue
        except ValueError as e:
            skipped.append(skips.Skip(skips.MALFORMED_ROW, 1, f"{where}: {e}"))
            continue
        signature = _signature(uid or path, coords)
        if signature in seen:
            skipped.append(skips.Skip(skips.DUPLICATE_BOOKMARK, 1, f"{where}: repeats a bookmark"))
            continue
        seen.add(signature)
        lesion_id = (record.get("lesion_id") or "").strip() or f"bookmark-{number}"
        rows.append(BookmarkRow(number, lesion_id, uid, path, coords, noisy))
    return rows, skipped


REPORTS_FOLDER = "sr"


def read_reports(root: epath.PathLike) -> Tuple[List[BookmarkRow], List[skips.Skip]]:
    """The bookmarks of the TID 1500 measurement reports under `root/sr/` (`sr_bookmarks`).

    The other way in beside `bookmarks.csv`: every file under `sr/` (in path order)
    is read as a report, and each measurement group becomes a `BookmarkRow`
    numbered in that order, its key image found by SOPInstanceUID among the headers
    of the rest of the tree (read once). A file that is not a report counts one
    `malformed_report`; a group that cannot be used, one skip by its reason; a
    report's key image missing from the tree, `unknown_instance`; a repeated
    measurement, `duplicate_bookmark` (as in the CSV).
    """
    from deeplesion_tf.data import sr_bookmarks  # highdicom: only for this way in

    base = epath.Path(root)
    paths = _files(base / REPORTS_FOLDER)
    uid_to_path = {}
    real_root = _real(base)
    for path in _files(base, skip=base / REPORTS_FOLDER):
        instance = _read_header(path, _real(path))
        if instance is not None and _inside(real_root, instance.real_path):
            uid_to_path.setdefault(instance.sop_instance_uid,
                                   path.relative_to(base).as_posix())
    rows, skipped, seen = [], [], set()
    for path in paths:
        where = path.relative_to(base).as_posix()
        try:
            with path.open("rb") as f:
                dataset = pydicom.dcmread(f)
            found, unusable = sr_bookmarks.read_report(dataset, where)
        except Exception as error:  # Not DICOM, truncated, not a TID 1500 report.
            skipped.append(skips.Skip(skips.MALFORMED_REPORT, 1,
                                      f"{where}: not a readable DICOM SR ({error})"))
            continue
        skipped.extend(unusable)
        for bookmark in found:
            if bookmark.sop_instance_uid not in uid_to_path:
                skipped.append(skips.Skip(skips.UNKNOWN_INSTANCE, 1,
                                          f"{bookmark.where}: its key image "
                                          f"{bookmark.sop_instance_uid} is not in the tree"))
                continue
            signature = _signature(bookmark.sop_instance_uid, bookmark.coords)
            if signature in seen:
                skipped.append(skips.Skip(skips.DUPLICATE_BOOKMARK, 1,
                                          f"{bookmark.where}: repeats a bookmark"))
                continue
            seen.add(signature)
            rows.append(BookmarkRow(len(rows) + 1, bookmark.lesion_id, bookmark.sop_instance_uid,
                                    uid_to_path[bookmark.sop_instance_uid], bookmark.coords))
    return rows, skipped


def _files(folder: epath.Path, skip: Optional[epath.Path] = None) -> List[epath.Path]:
    """Every file under `folder`, in path order, leaving out the folder `skip`.

    By `iterdir`: `epath` refuses recursive globs (on cloud storage they would
    cost a request per folder level and pattern).
    """
    found = []
    for path in sorted(folder.iterdir()):
        if skip is not None and path == skip:
            continue
        if path.is_dir():
            found.extend(_files(path, skip))
        elif path.is_file():
            found.append(path)
    return found


def _real(path: epath.PathLike) -> str:
    """`path` with symbolic links resolved."""
    return os.path.realpath(os.fspath(path))


def _inside(real_root: str, real_path: str) -> bool:
    """Whether a resolved path lies under the resolved root."""
    return os.path.commonpath([real_root, real_path]) == real_root


def plan_tasks(root: epath.PathLike, rows: Iterable[BookmarkRow], salt: str
               ) -> List[SeriesTask]:
    """Groups bookmarks by the series of their key slice, in a deterministic order.

    Reads the header of every key slice once. Rows whose key slice has no
    readable header are grouped by folder; they end as skips naming the reason.
    """
    real_root = _real(root)
    headers: Dict[str, Optional[Instance]] = {}
    groups: Dict[tuple, List[BookmarkRow]] = collections.defaultdict(list)
    patients: Dict[tuple, str] = {}
    for row in rows:
        if row.relative_path not in headers:
            path = epath.Path(root) / row.relative_path
            real_path = _real(path)
            headers[row.relative_path] = (
                _read_header(path, real_path)
                if row.relative_path and _inside(real_root, real_path) else None)
        instance = headers[row.relative_path]
        folder = posixpath.dirname(row.relative_path)
        group = (("series", instance.series_instance_uid) if instance is not None
                 else ("folder", folder))
        groups[group].append(row)
        if instance is not None and instance.patient_id and group not in patients:
            patients[group] = deid.pseudonym(salt, "patient", instance.patient_id)
    tasks = [SeriesTask(tuple(sorted({posixpath.dirname(r.relative_path) for r in members})),
                        tuple(members), patients.get(group))
             for group, members in groups.items()]
    return sorted(tasks, key=lambda t: (t.directories, t.bookmarks[0].row_number))


def _read_header(path: epath.Path, real_path: str) -> Optional[Instance]:
    try:
        with path.open("rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        uid = str(ds.get("SOPInstanceUID", "") or "")
        position, number, ignored = ct_reader.header_geometry(ds)
        instance = Instance(
            path=str(path), real_path=real_path, sop_instance_uid=uid,
            series_instance_uid=str(ds.get("SeriesInstanceUID", "") or ""),
            study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or "").strip(),
            position=position, instance_number=number, ignored=ignored)
    except Exception:  # Any unreadable file is simply not indexed; its bookmarks are
        return None    # then classified by read_ct, which names the reason.
    return instance if uid else None


def index_directories(root: epath.PathLike, directories: Sequence[str]) -> Dict[str, Instance]:
    """Reads the headers of every file in the folders: SOPInstanceUID -> `Instance`.

    A file that resolves outside `root` (a symbolic link) is not indexed; of two
    files with one SOPInstanceUID (a copy), the first in path order is kept.
    """
    real_root = _real(root)
    index = {}
    for directory in directories:
        folder = epath.Path(root) / directory if directory else epath.Path(root)
        if not folder.is_dir() or not _inside(real_root, _real(folder)):
            continue
        for path in sorted(folder.iterdir()):
            real_path = _real(path)
            if path.is_file() and _inside(real_root, real_path):
                instance = _read_header(path, real_path)
                if instance is not None:
                    index.setdefault(instance.sop_instance_uid, instance)
    return index


def series_members(index: Dict[str, Instance], series_uid: str) -> List[Instance]:
    """The slices of a series from head to feet (`ct_reader.head_to_feet_key`)."""
    members = [i for i in index.values() if i.series_instance_uid == series_uid]
    return sorted(members, key=lambda i: ct_reader.head_to_feet_key(
        i.position, i.instance_number, i.path))


def series_interval(members: Sequence[Instance], fallback: Optional[float]) -> float:
    interval = ct_reader.slice_interval([m.position for m in members])
    if interval is not None:
        return interval
    return float(fallback) if fallback else math.nan


def _locate(root: epath.PathLike, real_root: str, rows: Sequence[BookmarkRow],
            index: Dict[str, Instance]) -> Union[Instance, skips.Skip]:
    """Finds the key slice of bookmarks that share an instance, or says why not."""
    first = rows[0]
    where = f"{first.relative_path} (bookmark row {first.row_number})"
    if first.sop_instance_uid in index:
        return index[first.sop_instance_uid]
    path = epath.Path(root) / first.relative_path
    if not first.relative_path or not path.exists():
        return skips.Skip(skips.MISSING_FILE, len(rows), f"{where}: no such file")
    real_path = _real(path)
    if not _inside(real_root, real_path):
        return skips.Skip(skips.OUTSIDE_MANUAL_DIR, len(rows),
                          f"{where}: resolves outside the manual_dir (a symbolic link)")
    if not first.sop_instance_uid:  # A row that gives only the path: the file decides.
        for instance in index.values():
            if instance.real_path == real_path:
                return instance
    try:
        with path.open("rb") as f:
            ct = ct_reader.read_ct(f)
    except OSError as e:  # A folder, no permission, ...
        return skips.Skip(skips.UNREADABLE_FILE, len(rows), f"{where}: cannot be read ({e})")
    except ct_reader.CTReadError as e:
        return skips.Skip(_KIND_TO_REASON.get(e.kind, skips.UNREADABLE_FILE), len(rows),
                          f"{where}: {e.reason}")
    if first.sop_instance_uid and ct.sop_instance_uid != first.sop_instance_uid:
        return skips.Skip(skips.UNKNOWN_INSTANCE, len(rows),
                          f"{where}: the export's instance is not in this folder")
    # Readable, but without a usable header entry (e.g. no SOPInstanceUID).
    return skips.Skip(skips.UNREADABLE_FILE, len(rows), f"{where}: header cannot be indexed")


def _read(path: str) -> ct_reader.CTSlice:
    try:
        with epath.Path(path).open("rb") as f:
            return ct_reader.read_ct(f)
    except OSError as e:  # Vanished or unreadable between indexing and reading.
        raise ct_reader.CTReadError(path, f"cannot be read ({e})", ct_reader.NOT_DICOM) from e


def neighbour_slice(members: Sequence[Instance], position: int, step: int, interval: float
                    ) -> Union[Instance, str]:
    """The slice `step` away from the key slice `members[position]`, or why there is none.

    Past the ends of a series the last slice stands in (the key slice itself for
    steps of 1, returned as such), as the NIH loaders do; where positions are
    known, a neighbour more than `|step| - 1 + _MAX_NEIGHBOUR_GAP` intervals away,
    or one whose position is unknown, is refused.
    """
    key = members[position]
    neighbour = members[min(max(position + step, 0), len(members) - 1)]
    if neighbour is key:
        return key
    if any(m.position is not None for m in members):
        if key.position is None:
            return "the key slice's position is unknown (" + "; ".join(key.ignored) + ")"
        if neighbour.position is None:
            return f"{neighbour.path}: position unknown (" + "; ".join(neighbour.ignored) + ")"
        gap = abs(neighbour.position - key.position)
        allowed = abs(step) - 1 + _MAX_NEIGHBOUR_GAP
        if math.isfinite(interval) and gap > allowed * interval:
            return (f"{neighbour.path} lies {gap:g} mm from the key slice, "
                    f"{gap / interval:.1f} slice intervals for a step of {abs(step)}: a slice "
                    "in between is missing")
    return neighbour


def process_series(
    root: epath.PathLike,
    task: SeriesTask,
    salt: str,
    padding: float,
    compress_level: int = 1,
    context_slices: int = 1,
) -> List[skips.Outcome]:
    """Builds the examples of one folder.

    `context_slices`: slices stored on each side of the key slice (1: the previous
    and next; more adds `key_slice.context_steps`).

    Returns:
      In a deterministic order: `(key, example)` pairs (see `key_slice.make_example`),
      `Skip`s for bookmarks that could not be used and `Repair`s for examples kept
      with a neighbour replaced by the key slice.
    """
    index = index_directories(root, task.directories)
    real_root = _real(root)
    by_instance: Dict[str, List[BookmarkRow]] = collections.defaultdict(list)
    for row in task.bookmarks:
        by_instance[row.sop_instance_uid or row.relative_path].append(row)

    outcomes: List[skips.Outcome] = []
    # Bookmarks of one file reached by two spellings (a UID and a path, two
    # paths) are one key slice: grouped by the resolved file.
    by_file: Dict[str, Tuple[Instance, List[BookmarkRow]]] = {}
    for rows in by_instance.values():
        located = _locate(root, real_root, rows, index)
        if isinstance(located, skips.Skip):
            outcomes.append(located)
            continue
        by_file.setdefault(located.real_path, (located, []))[1].extend(rows)

    png_cache: Dict[str, bytes] = {}

    def encoded(ct_slice: ct_reader.CTSlice, path: str) -> bytes:
        if path not in png_cache:
            png_cache[path] = png16.encode_hu(ct_slice.hu, compress_level)
        return png_cache[path]

    for located, rows in by_file.values():
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
        outcomes.extend(skips.Repair(skips.INVALID_OPTIONAL_VALUE, f"{where}: {message}: ignored")
                        for message in ct.ignored)

        members = series_members(index, located.series_instance_uid)
        position = [m.sop_instance_uid for m in members].index(located.sop_instance_uid)
        interval = series_interval(members, ct.slice_thickness_mm)
        images = {"image": encoded(ct, located.path)}
        steps = [("previous_slice", -1), ("next_slice", 1)] + [
            (f"context slice {step:+d}", step) for step in key_slice.context_steps(context_slices)]
        for name, step in steps:
            neighbour = neighbour_slice(members, position, step, interval)
            try:
                if isinstance(neighbour, str):
                    raise ct_reader.CTReadError(located.path, neighbour, ct_reader.UNSUPPORTED)
                neighbour_ct = ct if neighbour.path == located.path else _read(neighbour.path)
                if neighbour_ct.hu.shape != ct.hu.shape:
                    raise ct_reader.CTReadError(neighbour.path, "size differs from the key slice",
                                                ct_reader.UNSUPPORTED)
                images[name] = encoded(neighbour_ct, neighbour.path)
            except ct_reader.CTReadError as e:
                outcomes.append(skips.Repair(skips.NEIGHBOR_REPLACED_BY_KEY,
                                             f"{where}: {name}: {e}"))
                images[name] = images["image"]
        context = None
        if context_slices > 1:
            context = [images.pop(f"context slice {step:+d}")
                       for step in key_slice.context_steps(context_slices)]

        patient = deid.pseudonym(salt, "patient", located.patient_id)
        study = deid.pseudonym(salt, "study", located.study_instance_uid)
        series = deid.pseudonym(salt, "series", located.series_instance_uid)
        window = (math.nan, math.nan)
        if ct.windows:
            center, width_hu = ct.windows[0]
            window = (center - width_hu / 2.0, center + width_hu / 2.0)
        example = key_slice.make_example(
            **images, context_slices=context, lesions=lesions, patient_id=patient,
            study_id=study, series_id=series,
            slice_index=position, spacing_mm=ct.pixel_spacing_mm,
            slice_interval_mm=interval, window=window)
        outcomes.append((f"{patient}_{study}_{series}_{position:05d}", example))
    return outcomes
