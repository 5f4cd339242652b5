"""`bin/detect`'s inputs: DICOM files, DICOM series folders and PNGs, as key slices with context.

Inputs:
  * A DICOM file: one key slice; its neighbours are not looked up, so the key
    slice stands in for the previous and next slice (pass the folder for context).
  * A folder: every file below it (recursively) is read; DICOM slices are
    grouped by series and ordered head to feet (as `pacs_source` orders them),
    and every slice is a key slice with its neighbours as context (the key
    slice stands in at the ends of a series, as in the dataset builders).
    16-bit PNGs (HU + 32768, the NIH release's format) in a folder are a series
    in file-name order.
    A DICOM file without pixel data in a folder (a header, as bin/fetch_from_pacs
    writes the slices it did not retrieve) is a place in its series, not a key
    slice: where it is a key slice's neighbour, the key slice stands in (noted).
  * A PNG file: one key slice; its neighbours are the previous and next PNG of
    its folder in file-name order (the release names slices by index).
A file that cannot be read fails alone, as a `Failure` naming the file and
why (not DICOM, not CT, an invalid header value such as a RescaleSlope of
"abc" or a slice below `checks.MIN_SLICE_SIDE_PX` per side, an 8-bit PNG, PNG
data that does not decode), before the model runs; the others still run.

Output names are pseudonyms, never paths or DICOM identifiers (see `detect`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom

from deeplesion_tf.data import checks
from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import png16

PNG_PREFIX = "png_"


@dataclasses.dataclass
class SliceInput:
    """A key slice with its context, ready for the model.

    Attributes:
      name: output name (pseudonymous, see the module docstring), unique in a run.
      source: the key slice's file, for the log only (never written: it may
        carry the patient's identifiers).
      hu: `[H, W, 3]` float32 HU of the previous, key and next slice.
      spacing_mm: `(row, column)` mm, or None where unknown.
      context: `(previous, next)` output names of the neighbours.
      notes: what to know about the context and the header (e.g. a neighbour
        replaced by the key); names, never paths.
      is_dicom: read from a DICOM file (`source`), whose header a report can reference.
    """

    name: str
    source: str
    hu: np.ndarray
    spacing_mm: Optional[Tuple[float, float]]
    context: Tuple[str, str]
    notes: List[str]
    is_dicom: bool = False


@dataclasses.dataclass
class Failure:
    """An input that gave no result; `reason` says why (`source` is its path, for the log)."""

    source: str
    reason: str


# -- Output names --------------------------------------------------------------------------------

def dicom_name(ct: ct_reader.CTSlice, salt: str) -> str:
    """`<patient>_<study>_<series>_<instance>` pseudonyms of a DICOM slice's identifiers."""
    return "_".join(deid.pseudonym(salt, kind, value) for kind, value in (
        ("patient", ct.patient_id), ("study", ct.study_instance_uid),
        ("series", ct.series_instance_uid), ("instance", ct.sop_instance_uid)))


def png_name(path: str, salt: str) -> str:
    """`png_<pseudonym>` of a PNG's absolute real path (the path itself may name the patient)."""
    return PNG_PREFIX + deid.pseudonym(salt, "file", os.path.realpath(path))


# -- Reading inputs ----------------------------------------------------------------------------

def _read_png(path: str) -> np.ndarray:
    """`[H, W]` HU of a 16-bit PNG of HU + 32768.

    Raises:
      ValueError: not a 16-bit grayscale PNG, a side below
        `checks.MIN_SLICE_SIDE_PX` (`checks.InvalidValue`), or data that does
        not decode (CRC, truncation); the message says which.
    """
    with open(path, "rb") as f:
        data = f.read()
    header = png16.read_header(data)
    png16.require_hu_png(header)
    checks.slice_size(header.height, header.width, "PNG height x width")
    return png16.decode_hu(data)


def _reason(error: Exception) -> str:
    """What went wrong, without the file name (`Failure.source` holds it)."""
    return error.reason if isinstance(error, ct_reader.CTReadError) else str(error)


def _is_png(path: str) -> bool:
    return path.lower().endswith(".png")


def _header_notes(ct: ct_reader.CTSlice) -> List[str]:
    return [f"header: {message}; treated as absent" for message in ct.ignored]


def _with_context(names: Sequence[str], paths: Sequence[str], hus: Sequence[np.ndarray],
                  index: int, spacing: Optional[Tuple[float, float]],
                  notes: Sequence[str] = (), is_dicom: bool = False,
                  num_slices: int = 3, slice_interval_mm: Optional[float] = None,
                  stored_interval_mm: Optional[float] = None) -> SliceInput:
    """Key slice `index` of an ordered series with `num_slices` slices around it (its
    neighbours; more for a 3DCE model), clamped to the series.

    Where a slice is missing past the series' ends, is a header without pixels or
    differs in size, the key slice stands in (noted, by the step's name). With
    `slice_interval_mm` (a model trained at a fixed interval), the slices that far
    apart are interpolated from the series at its `stored_interval_mm` by the
    training pipeline's own `detector_pipeline.interpolate_slices`.
    """
    key = hus[index]
    half = num_slices // 2
    reach = half
    known = stored_interval_mm is not None and math.isfinite(stored_interval_mm) \
        and stored_interval_mm > 0
    if slice_interval_mm is not None and known:
        reach = max(half, math.ceil(half * slice_interval_mm / stored_interval_mm))
    slices, context, notes = [], {}, list(notes)
    for step in range(-reach, reach + 1):
        if step == 0:
            slices.append(key)
            continue
        j = min(max(index + step, 0), len(paths) - 1)
        which = {-1: "previous", 1: "next"}.get(step, f"{step:+d}")
        if j == index:
            notes.append(f"no {which} slice: the key slice stands in")
        elif hus[j] is None:
            notes.append(f"{which} slice {names[j]} is a header without pixels: the key "
                         "slice stands in")
            j = index
        elif hus[j].shape != key.shape:
            notes.append(f"{which} slice {names[j]} differs in size: the key slice stands in")
            j = index
        slices.append(hus[j])
        context[step] = names[j]
    if slice_interval_mm is None:
        hu = np.stack(slices, axis=-1).astype(np.float32)
    else:
        if not known:
            notes.append("the series' slice interval is unknown: the key slice stands in for "
                         f"the slices {slice_interval_mm:g} mm away (as in training)")
        from deeplesion_tf.data import detector_pipeline  # TensorFlow: only for this case

        hu = detector_pipeline.interpolate_slices(
            np.stack(slices).astype(np.float32),
            stored_interval_mm if known else math.nan, slice_interval_mm, num_slices).numpy()
    return SliceInput(names[index], paths[index], hu, spacing, (context[-1], context[1]), notes,
                      is_dicom)


def _header_only(path: str) -> Optional[ct_reader.CTSlice]:
    """A CT header without pixel data as a `CTSlice` with `hu` None, or None if not CT."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # Unreadable after all: the caller reports the first error.
        return None
    if str(ds.get("SOPClassUID", "")) not in (ct_reader.CT_IMAGE_STORAGE,
                                              ct_reader.ENHANCED_CT_IMAGE_STORAGE):
        return None
    position, number, _ = ct_reader.header_geometry(ds)
    return ct_reader.CTSlice(None, (0.0, 0.0), position, None, (), number,
                             str(ds.get("SOPInstanceUID", "")),
                             str(ds.get("SeriesInstanceUID", "")),
                             str(ds.get("StudyInstanceUID", "")),
                             str(ds.get("PatientID", "") or "").strip())


def _series_of_folder(files: Sequence[str], png_spacing, salt: str, num_slices: int = 3,
                      slice_interval_mm: Optional[float] = None
                      ) -> Iterator[Union[SliceInput, Failure]]:
    """Every readable slice among `files` as a key slice of its series."""
    dicom = collections.defaultdict(list)  # series UID -> [(order key, path, CTSlice)]
    pngs = []
    for path in sorted(files):
        try:
            if _is_png(path):
                pngs.append((path, _read_png(path)))
                continue
            ct = ct_reader.read_ct(path)
        except ct_reader.CTReadError as error:
            header = _header_only(path) if error.kind == ct_reader.NO_PIXEL_DATA else None
            if header is None:
                yield Failure(path, _reason(error))
            else:
                dicom[header.series_instance_uid].append(
                    (ct_reader.head_to_feet_key(header.slice_position_mm,
                                                header.instance_number, path), path, header))
            continue
        except (ValueError, OSError) as error:
            yield Failure(path, _reason(error))
            continue
        order = ct_reader.head_to_feet_key(ct.slice_position_mm, ct.instance_number, path)
        dicom[ct.series_instance_uid].append((order, path, ct))

    for members in dicom.values():
        members.sort(key=lambda m: m[0])
        paths = [m[1] for m in members]
        names = [dicom_name(m[2], salt) for m in members]
        hus = [m[2].hu for m in members]
        interval = ct_reader.slice_interval([m[2].slice_position_mm for m in members])
        for i, (_, path, ct) in enumerate(members):
            if ct.hu is not None:
                yield _with_context(names, paths, hus, i, ct.pixel_spacing_mm,
                                    _header_notes(ct), is_dicom=True, num_slices=num_slices,
                                    slice_interval_mm=slice_interval_mm,
                                    stored_interval_mm=interval)
    if pngs:
        paths = [p for p, _ in pngs]
        names = [png_name(p, salt) for p in paths]
        hus = [h for _, h in pngs]
        for i in range(len(paths)):
            yield _with_context(names, paths, hus, i, png_spacing, num_slices=num_slices,
                                slice_interval_mm=slice_interval_mm)


def _png_with_neighbours(path: str, png_spacing, salt: str, num_slices: int = 3,
                         slice_interval_mm: Optional[float] = None
                         ) -> Union[SliceInput, Failure]:
    """A PNG file as the key slice, its folder's PNGs before and after it as context
    (`num_slices // 2` on each side; the first that does not read ends that side)."""
    folder = os.path.dirname(path) or "."
    series = sorted(os.path.join(folder, f) for f in os.listdir(folder) if _is_png(f))
    index = series.index(os.path.join(folder, os.path.basename(path)))
    try:
        key = _read_png(path)
    except (ValueError, OSError) as error:
        return Failure(path, _reason(error))
    paths_n, hus_n, notes = [path], [key], []
    for direction in (-1, 1):
        for distance in range(1, num_slices // 2 + 1):
            j = index + direction * distance
            if not 0 <= j < len(series):
                break
            try:
                hu = _read_png(series[j])
            except (ValueError, OSError):
                which = {-1: "previous", 1: "next"}[direction]
                notes.append(f"the {which} PNG of the folder, {png_name(series[j], salt)}, "
                             "does not read as a slice: the key slice stands in")
                break
            if direction < 0:
                paths_n.insert(0, series[j])
                hus_n.insert(0, hu)
            else:
                paths_n.append(series[j])
                hus_n.append(hu)
    return _with_context([png_name(p, salt) for p in paths_n], paths_n, hus_n,
                         paths_n.index(path), png_spacing, notes, num_slices=num_slices,
                         slice_interval_mm=slice_interval_mm)


def gather_inputs(paths: Sequence[str], png_spacing: Optional[Tuple[float, float]] = None,
                  salt: Optional[str] = None, num_slices: int = 3,
                  slice_interval_mm: Optional[float] = None
                  ) -> Iterator[Union[SliceInput, Failure]]:
    """Key slices of the command line's paths (module docstring), or why a path failed.

    Args:
      paths: DICOM files, folders, 16-bit PNGs.
      png_spacing: `(row, column)` mm of PNG slices, which carry none; None: unknown.
      salt: of the output names' pseudonyms; None: `deid.site_salt()`.
      num_slices: slices per key slice the model takes (3; 3M for 3DCE).
      slice_interval_mm: the interval the model was trained at (interpolated from a
        DICOM series at its own; PNGs carry none, so the key slice stands in); None:
        the series' own neighbours.
    """
    salt = deid.site_salt() if salt is None else salt
    for path in paths:
        if os.path.isdir(path):
            files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names
                     if not f.startswith(".")]
            if not files:
                yield Failure(path, "an empty folder")
                continue
            yield from _series_of_folder(files, png_spacing, salt, num_slices, slice_interval_mm)
        elif not os.path.exists(path):
            yield Failure(path, "no such file or folder")
        elif _is_png(path):
            yield _png_with_neighbours(path, png_spacing, salt, num_slices, slice_interval_mm)
        else:
            try:
                ct = ct_reader.read_ct(path)
            except ct_reader.CTReadError as error:
                yield Failure(path, _reason(error))
                continue
            yield _with_context([dicom_name(ct, salt)], [path], [ct.hu], 0, ct.pixel_spacing_mm,
                                _header_notes(ct), is_dicom=True, num_slices=num_slices,
                                slice_interval_mm=slice_interval_mm)
