"""Running an exported detector on DICOM files, DICOM series folders and PNGs (`bin/detect`).

Inputs (`slice_inputs`): DICOM files, DICOM series folders (ordered head to feet) and
16-bit PNGs, each key slice with its neighbours as context. A file that cannot be read
fails alone, as a `Failure` naming the file and why, before the model runs; the others
still run.

Results (`detection_files`): one JSON file per key slice, and with `draw` one PNG of
the key slice under a display window with the boxes coloured by class and labelled, all
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

With `sr_dir`, each DICOM key slice's detections are also a DICOM SR
(`detection_sr`), `<sr_dir>/<name>.dcm`, and with `store` sent to a DICOMweb
server (STOW-RS). These carry the source study's patient and study identifiers:
that is their purpose, to be filed with the study in the PACS. Nothing else
written here does.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pydicom
import tensorflow as tf
from absl import logging

from deeplesion_tf.data import checks
from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import dicomweb
from deeplesion_tf.serving import detection_sr
from deeplesion_tf.serving import detector_module
from deeplesion_tf.serving.detection_files import draw, result_json
from deeplesion_tf.serving.slice_inputs import Failure, SliceInput, gather_inputs


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


# -- Running the model --------------------------------------------------------------------------

class Detector:
    """An exported detector loaded for `bin/detect`."""

    def __init__(self, saved_model: str):
        self.path = resolve_saved_model(saved_model)
        self._loaded = tf.saved_model.load(self.path)
        self._plain = self._loaded.signatures[detector_module.SERVING_DEFAULT]
        self._with_spacing = self._loaded.signatures[detector_module.HU_WITH_SPACING]
        # Slices per key slice: 3, or 3M for a 3DCE export (older exports lack the variable).
        slices = getattr(self._loaded, "input_slices", None)
        self.num_slices = 3 if slices is None else int(slices.numpy())
        interval = getattr(self._loaded, "slice_interval_mm", None)
        self.slice_interval_mm = (float(interval.numpy()) or None) if interval is not None \
            else None

    def __call__(self, hu: np.ndarray, spacing: Optional[np.ndarray] = None
                 ) -> Dict[str, np.ndarray]:
        """Outputs of `[B, H, W, 3]` HU (and `[B, 2]` spacing) as numpy arrays."""
        if spacing is None:
            outputs = self._plain(images=tf.constant(hu, tf.float32))
        else:
            outputs = self._with_spacing(images=tf.constant(hu, tf.float32),
                                         pixel_spacing=tf.constant(spacing, tf.float32))
        return {k: v.numpy() for k, v in outputs.items()}


@dataclasses.dataclass
class RunSummary:
    written: List[str]
    failures: List[Failure]


def run(detector: Detector, paths: Sequence[str], output_dir: str, *, batch_size: int = 1,
        png_spacing: Optional[Tuple[float, float]] = None, draw_window=None,
        salt: Optional[str] = None, sr_dir: Optional[str] = None,
        store: Optional[dicomweb.Connection] = None) -> RunSummary:
    """Detects lesions on every key slice of `paths`; writes `output_dir/<name>.json` (and PNGs).

    Names are pseudonyms (module docstring), flat in `output_dir`; a name met
    twice (the same slice given twice) gets `_2`, `_3`, ... Slices of one
    shape and with or without spacing go together in batches of up to
    `batch_size`. Failures are collected (and logged with their paths), not
    raised, and written nowhere.

    Args:
      draw_window: `(low, high)` HU to draw annotated PNGs under; None: no PNGs.
      salt: of the names' pseudonyms; None: `deid.site_salt()`.
      sr_dir: where to write each DICOM key slice's report (module docstring); a PNG
        input has no DICOM header to reference and a slice without detections
        nothing to report: they get none (logged).
      store: a server to store the reports to (needs `sr_dir`); a report it refuses
        is a `Failure` of its slice (its JSON and report file stay written).
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
            if sr_dir is not None:
                _report(item, result, detector.path, sr_dir, store, summary)

    if store is not None and sr_dir is None:
        raise ValueError("storing reports needs sr_dir")
    os.makedirs(output_dir, exist_ok=True)
    if sr_dir is not None:
        os.makedirs(sr_dir, exist_ok=True)
    for item in gather_inputs(paths, png_spacing, salt, num_slices=detector.num_slices,
                              slice_interval_mm=detector.slice_interval_mm):
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


def _report(item: SliceInput, result: dict, model: str, sr_dir: str,
            store: Optional[dicomweb.Connection], summary: RunSummary) -> None:
    """Writes (and stores) the DICOM SR of one key slice's detections."""
    if not item.is_dicom:
        logging.info("%s: a PNG, no DICOM header to reference: no report", item.name)
        return
    if not result["detections"]:
        logging.info("%s: no detections: no report", item.name)
        return
    header = pydicom.dcmread(item.source, stop_before_pixels=True)
    report = detection_sr.detection_report(header, result["detections"], model=model)
    path = os.path.join(sr_dir, item.name + ".dcm")
    with open(path, "wb") as f:
        f.write(ct_reader.dicom_bytes(report))
    if store is None:
        return
    try:
        response = store.call(f"storing the report of {item.name}",
                              lambda: store.client.store_instances([report]))
    except dicomweb.ServerError as error:
        summary.failures.append(Failure(item.source, f"report not stored: {error}"))
        return
    # STOW-RS answers 200 or 202 and lists in FailedSOPSequence what it did not keep.
    failed = response.get("FailedSOPSequence", []) if response is not None else []
    if failed:
        reason = failed[0].get("FailureReason", "unknown")
        summary.failures.append(Failure(item.source, f"report not stored: {store.name} "
                                        f"refused it (failure reason {reason})"))
        return
    logging.info("%s: report stored to %s", item.name, store.name)
