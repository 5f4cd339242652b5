"""Running an exported detector on DICOM files, DICOM series folders and PNGs (`bin/detect`).

Inputs:
  * A DICOM file: one key slice; its neighbours are not looked up, so the key
    slice stands in for the previous and next slice (pass the folder for context).
  * A folder: every file below it (recursively) is read; DICOM slices are
    grouped by series and ordered head to feet (as `pacs_source` orders them),
    and every slice is a key slice with its neighbours as context (the key
    slice stands in at the ends of a series, as in the dataset builders).
    16-bit PNGs (HU + 32768, the NIH release's format) in a folder are a series
    in file-name order.
  * A PNG file: one key slice; its neighbours are the previous and next PNG of
    its folder in file-name order (the release names slices by index).
A file that cannot be read fails alone, as a `Failure` naming the file and
why (not DICOM, not CT, an invalid header value such as a RescaleSlope of
"abc" or a slice below `checks.MIN_SLICE_SIDE_PX` per side, an 8-bit PNG, PNG
data that does not decode), before the model runs; the others still run.

Results: one JSON file per key slice, and with `draw` one PNG of the key slice
under a display window with the boxes coloured by class and labelled, all
directly in the output folder. Neither their names nor their contents hold an
input path or a DICOM identifier, since in a PACS export both carry the
patient's: a DICOM slice is named
`<patient>_<study>_<series>_<instance>`, each part `deid.pseudonym` of the
PatientID, StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID under the
site's salt (`deid.site_salt`, the dataset builder's, so a slice's patient,
study and series pseudonyms are those of the TFDS dataset), and a PNG slice
`png_<pseudonym of its absolute real path>`. The JSON's `source` is that name
and its `context` the neighbours' names. Which input became which name is
logged, not written.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from absl import logging

from deeplesion_tf.data import checks
from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import png16
from deeplesion_tf.serving import detector_module

BOX_CONVENTION = ("[ymin, xmin, ymax, xmax]: 0-based rows and columns of the key slice, "
                  "pixel centres at integers")
MM_CONVENTION = "box_px times the pixel spacing: mm from the centre of the top-left pixel"
DIAMETER_ESTIMATE = ("the box without the training's padding on each side; long = its longer "
                     "side, short = its shorter (exact for diameters along the image axes, "
                     "short of an oblique long diameter by up to 1/sqrt(2))")
SOFT_TISSUE_WINDOW = (-160.0, 240.0)
PNG_PREFIX = "png_"
# Colours of classes 1, 2, ... (cycled).
_PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230))


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
    """

    name: str
    source: str
    hu: np.ndarray
    spacing_mm: Optional[Tuple[float, float]]
    context: Tuple[str, str]
    notes: List[str]


@dataclasses.dataclass
class Failure:
    """An input that gave no result; `reason` says why (`source` is its path, for the log)."""

    source: str
    reason: str


def resolve_saved_model(path: str) -> str:
    """`path` if it holds a SavedModel, else its highest numeric version folder.

    Raises:
      FileNotFoundError: neither.
    """
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = []
    if tf.io.gfile.isdir(path):
        versions = [int(n.rstrip("/")) for n in tf.io.gfile.listdir(path)
                    if n.rstrip("/").isdigit()
                    and tf.io.gfile.exists(os.path.join(path, n.rstrip("/"), "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"{path}: no saved_model.pb there nor in a numeric version "
                                "folder (bin/export_detector writes export_dir/<version>/)")
    return os.path.join(path, str(max(versions)))


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
                  notes: Sequence[str] = ()) -> SliceInput:
    """Key slice `index` of an ordered series, its neighbours clamped to the series."""
    key = hus[index]
    slices, context, notes = [], [], list(notes)
    for step in (-1, 1):
        j = min(max(index + step, 0), len(paths) - 1)
        which = "previous" if step < 0 else "next"
        if j == index:
            notes.append(f"no {which} slice: the key slice stands in")
        elif hus[j].shape != key.shape:
            notes.append(f"{which} slice {names[j]} differs in size: the key slice stands in")
            j = index
        slices.append(hus[j])
        context.append(names[j])
    hu = np.stack([slices[0], key, slices[1]], axis=-1).astype(np.float32)
    return SliceInput(names[index], paths[index], hu, spacing, (context[0], context[1]), notes)


def _series_of_folder(files: Sequence[str], png_spacing, salt: str
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
        except (ct_reader.CTReadError, ValueError, OSError) as error:
            yield Failure(path, _reason(error))
            continue
        order = ct_reader.head_to_feet_key(ct.slice_position_mm, ct.instance_number, path)
        dicom[ct.series_instance_uid].append((order, path, ct))

    for members in dicom.values():
        members.sort(key=lambda m: m[0])
        paths = [m[1] for m in members]
        names = [dicom_name(m[2], salt) for m in members]
        hus = [m[2].hu for m in members]
        for i, (_, path, ct) in enumerate(members):
            yield _with_context(names, paths, hus, i, ct.pixel_spacing_mm, _header_notes(ct))
    if pngs:
        paths = [p for p, _ in pngs]
        names = [png_name(p, salt) for p in paths]
        hus = [h for _, h in pngs]
        for i in range(len(paths)):
            yield _with_context(names, paths, hus, i, png_spacing)


def _png_with_neighbours(path: str, png_spacing, salt: str) -> Union[SliceInput, Failure]:
    """A PNG file as the key slice, its folder's previous and next PNG as context."""
    folder = os.path.dirname(path) or "."
    series = sorted(os.path.join(folder, f) for f in os.listdir(folder) if _is_png(f))
    index = series.index(os.path.join(folder, os.path.basename(path)))
    try:
        key = _read_png(path)
    except (ValueError, OSError) as error:
        return Failure(path, _reason(error))
    paths_3, hus_3, notes = [path], [key], []
    for j in (index - 1, index + 1):
        if 0 <= j < len(series):
            try:
                hu = _read_png(series[j])
            except (ValueError, OSError):
                which = "previous" if j < index else "next"
                notes.append(f"the {which} PNG of the folder, {png_name(series[j], salt)}, "
                             "does not read as a slice: the key slice stands in")
                continue
            if j < index:
                paths_3.insert(0, series[j])
                hus_3.insert(0, hu)
            else:
                paths_3.append(series[j])
                hus_3.append(hu)
    return _with_context([png_name(p, salt) for p in paths_3], paths_3, hus_3,
                         paths_3.index(path), png_spacing, notes)


def gather_inputs(paths: Sequence[str], png_spacing: Optional[Tuple[float, float]] = None,
                  salt: Optional[str] = None) -> Iterator[Union[SliceInput, Failure]]:
    """Key slices of the command line's paths (module docstring), or why a path failed.

    Args:
      paths: DICOM files, folders, 16-bit PNGs.
      png_spacing: `(row, column)` mm of PNG slices, which carry none; None: unknown.
      salt: of the output names' pseudonyms; None: `deid.site_salt()`.
    """
    salt = deid.site_salt() if salt is None else salt
    for path in paths:
        if os.path.isdir(path):
            files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names
                     if not f.startswith(".")]
            if not files:
                yield Failure(path, "an empty folder")
                continue
            yield from _series_of_folder(files, png_spacing, salt)
        elif not os.path.exists(path):
            yield Failure(path, "no such file or folder")
        elif _is_png(path):
            yield _png_with_neighbours(path, png_spacing, salt)
        else:
            try:
                ct = ct_reader.read_ct(path)
            except ct_reader.CTReadError as error:
                yield Failure(path, _reason(error))
                continue
            yield _with_context([dicom_name(ct, salt)], [path], [ct.hu], 0, ct.pixel_spacing_mm,
                                _header_notes(ct))


# -- Running the model --------------------------------------------------------------------------

class Detector:
    """An exported detector loaded for `bin/detect`."""

    def __init__(self, saved_model: str):
        self.path = resolve_saved_model(saved_model)
        self._loaded = tf.saved_model.load(self.path)
        self._plain = self._loaded.signatures[detector_module.SERVING_DEFAULT]
        self._with_spacing = self._loaded.signatures[detector_module.HU_WITH_SPACING]

    def __call__(self, hu: np.ndarray, spacing: Optional[np.ndarray] = None
                 ) -> Dict[str, np.ndarray]:
        """Outputs of `[B, H, W, 3]` HU (and `[B, 2]` spacing) as numpy arrays."""
        if spacing is None:
            outputs = self._plain(images=tf.constant(hu, tf.float32))
        else:
            outputs = self._with_spacing(images=tf.constant(hu, tf.float32),
                                         pixel_spacing=tf.constant(spacing, tf.float32))
        return {k: v.numpy() for k, v in outputs.items()}


def _round(values, digits=3):
    return [round(float(v), digits) for v in values]


def result_json(item: SliceInput, outputs: Dict[str, np.ndarray], i: int,
                saved_model: str) -> dict:
    """The JSON document of image `i` of a batch's outputs."""
    detections = []
    has_mm = "detection_boxes_mm" in outputs
    for d in range(int(outputs["num_detections"][i])):
        long_px, short_px = outputs["detection_diameters_px"][i, d]
        detection = {
            "class_name": outputs["detection_class_names"][i, d].decode(),
            "class_id": int(outputs["detection_classes"][i, d]),
            "score": round(float(outputs["detection_scores"][i, d]), 5),
            "box_px": _round(outputs["detection_boxes"][i, d]),
            "box_mm": _round(outputs["detection_boxes_mm"][i, d]) if has_mm else None,
            "long_diameter_px": round(float(long_px), 3),
            "short_diameter_px": round(float(short_px), 3),
            "long_diameter_mm": None, "short_diameter_mm": None,
        }
        if has_mm:
            long_mm, short_mm = outputs["detection_diameters_mm"][i, d]
            detection.update(long_diameter_mm=round(float(long_mm), 3),
                             short_diameter_mm=round(float(short_mm), 3))
        detections.append(detection)
    return {
        # Output names, never input paths (module docstring).
        "source": item.name,
        "context": {"previous": item.context[0], "next": item.context[1], "notes": item.notes},
        "image_shape": list(item.hu.shape[:2]),
        "pixel_spacing_mm": list(item.spacing_mm) if item.spacing_mm else None,
        "saved_model": saved_model,
        "box_convention": BOX_CONVENTION,
        "box_mm_convention": MM_CONVENTION,
        "diameter_estimate": DIAMETER_ESTIMATE,
        "detections": detections,
    }


def draw(item: SliceInput, result: dict, path: str,
         window: Tuple[float, float] = SOFT_TISSUE_WINDOW) -> None:
    """Writes the key slice under `window` with its detections as an RGB PNG."""
    from PIL import Image, ImageDraw

    low, high = window
    gray = np.clip((item.hu[:, :, 1] - low) / (high - low), 0.0, 1.0)
    image = Image.fromarray((gray * 255).round().astype(np.uint8)).convert("RGB")
    canvas = ImageDraw.Draw(image)
    for detection in result["detections"]:
        ymin, xmin, ymax, xmax = detection["box_px"]
        colour = _PALETTE[(detection["class_id"] - 1) % len(_PALETTE)]
        canvas.rectangle([xmin, ymin, xmax, ymax], outline=colour, width=2)
        canvas.text((xmin + 2, max(ymin - 11, 0)),
                    f"{detection['class_name']} {detection['score']:.2f}", fill=colour)
    image.save(path)


@dataclasses.dataclass
class RunSummary:
    written: List[str]
    failures: List[Failure]


def run(detector: Detector, paths: Sequence[str], output_dir: str, *, batch_size: int = 1,
        png_spacing: Optional[Tuple[float, float]] = None, draw_window=None,
        salt: Optional[str] = None) -> RunSummary:
    """Detects lesions on every key slice of `paths`; writes `output_dir/<name>.json` (and PNGs).

    Names are pseudonyms (module docstring), flat in `output_dir`; a name met
    twice (the same slice given twice) gets `_2`, `_3`, ... Slices of one
    shape and with or without spacing go together in batches of up to
    `batch_size`. Failures are collected (and logged with their paths), not
    raised, and written nowhere.

    Args:
      draw_window: `(low, high)` HU to draw annotated PNGs under; None: no PNGs.
      salt: of the names' pseudonyms; None: `deid.site_salt()`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    summary = RunSummary([], [])
    used_names = set()
    pending: Dict[tuple, List[SliceInput]] = collections.defaultdict(list)

    def unique(name):
        candidate, k = name, 1
        while candidate in used_names:
            k += 1
            candidate = f"{name}_{k}"
        used_names.add(candidate)
        return candidate

    def flush(key):
        batch = pending.pop(key, [])
        if not batch:
            return
        hu = np.stack([item.hu for item in batch])
        spacing = None if batch[0].spacing_mm is None else np.array(
            [item.spacing_mm for item in batch], np.float32)
        try:
            outputs = detector(hu, spacing)
        except tf.errors.InvalidArgumentError as error:
            summary.failures.extend(Failure(item.source, f"the model rejected it: {error.message}")
                                    for item in batch)
            return
        for i, item in enumerate(batch):
            result = result_json(item, outputs, i, detector.path)
            json_path = os.path.join(output_dir, item.name + ".json")
            with open(json_path, "w") as f:
                json.dump(result, f, indent=2)
            if draw_window is not None:
                draw(item, result, os.path.join(output_dir, item.name + ".png"), draw_window)
            summary.written.append(json_path)
            logging.info("%s: %d detections -> %s", item.source, len(result["detections"]),
                         json_path)

    os.makedirs(output_dir, exist_ok=True)
    for item in gather_inputs(paths, png_spacing, salt):
        if isinstance(item, Failure):
            logging.error("%s: %s", item.source, item.reason)
            summary.failures.append(item)
            continue
        try:  # Every reader checks the size; this keeps any other path from the model.
            checks.slice_size(item.hu.shape[0], item.hu.shape[1], "slice height x width")
        except checks.InvalidValue as error:
            logging.error("%s: %s", item.source, error)
            summary.failures.append(Failure(item.source, str(error)))
            continue
        item.name = unique(item.name)
        key = (item.hu.shape, item.spacing_mm is None)
        pending[key].append(item)
        if len(pending[key]) >= batch_size:
            flush(key)
    for key in list(pending):
        flush(key)
    return summary
