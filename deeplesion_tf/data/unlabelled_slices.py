"""Slices no bookmark points at, as the detector reads them: input for self-supervision.

Most slices of every CT series carry no bookmark; the dataset builder keeps only
the key slices and their neighbours. Self-supervised pretraining (issue 25) reads
the whole series instead, straight from the DICOM tree the dataset was built
from, and turns each sampled slice into the detector's own input: the slice
above, the slice and the slice below (`detector_pipeline.SLICE_KEYS`), resized
and windowed by `detector_pipeline.network_input`, the one home of that
transform.

Patients are kept or left out by the dataset's own split rule
(`deid.patient_split` of the salted patient pseudonym, with the same
`DEEPLESION_ID_SALT`), so pretraining on "train" and "validation" never sees a
slice of a test patient. Nothing identifying leaves this module: only counts.

Shapes: `S` the network input side; images are `[N, S, S, 3]` uint8 (the [0, 1]
input quantised to 1/255: a soft-tissue window of 400 HU is then 1.6 HU per step,
below the synthetic and real images' noise) and `sizes` `[N, 2]` int32, the
(rows, columns) of each image's content before its bottom/right zero padding.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tqdm
from absl import logging
from etils import epath

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.data import hu_windows
from deeplesion_tf.data import pacs_source


@dataclasses.dataclass(frozen=True)
class SeriesSlices:
    """One series of a patient in the asked splits, head to feet.

    Attributes:
      patient: the patient's pseudonym (`deid.pseudonym`), never the PatientID.
      split: the patient's split.
      members: its slices (`pacs_source.Instance`), head to feet.
      interval_mm: the slice interval (NaN where positions are unknown).
    """

    patient: str
    split: str
    members: Tuple[pacs_source.Instance, ...]
    interval_mm: float


@dataclasses.dataclass
class Survey:
    """What `find_series` read and why it left files out (counts only)."""

    files: int = 0
    slices_kept: int = 0
    series_kept: int = 0
    patients_kept: int = 0
    left_out: Dict[str, int] = dataclasses.field(default_factory=collections.Counter)


def _directories(root: epath.Path) -> List[str]:
    """Every folder under `root` (itself included) relative to it, sorted; links not followed."""
    found = []
    for folder, subfolders, _ in os.walk(os.fspath(root)):
        subfolders.sort()
        found.append(os.path.relpath(folder, os.fspath(root)).replace(os.sep, "/"))
    return sorted("" if d == "." else d for d in found)


def find_series(root: epath.PathLike, splits: Sequence[str], salt: Optional[str] = None
                ) -> Tuple[List[SeriesSlices], Survey]:
    """The series under `root` whose patients fall in `splits`, and a survey of what was left out.

    Reads every file's header once (`pacs_source.index_directories`: files
    outside `root`, unreadable headers and copies of one instance are not
    indexed). A slice without a PatientID cannot be placed in a split and is
    left out, counted under "no_patient_id".

    Args:
      root: the DICOM tree (the PACS export or the synthetic PACS's `dicom/`).
      splits: of `deid.SPLIT_FRACTIONS`, e.g. ("train", "validation").
      salt: of the pseudonyms; None: `deid.site_salt()`, as the dataset builder.

    Raises:
      ValueError: an unknown split.
    """
    known = [name for name, _ in deid.SPLIT_FRACTIONS]
    if set(splits) - set(known) or not splits:
        raise ValueError(f"splits must be some of {', '.join(known)}, got {list(splits)}")
    root = epath.Path(root)
    salt = salt or deid.site_salt()
    survey = Survey()
    index = pacs_source.index_directories(root, _directories(root))
    survey.files = sum(1 for _ in _files(root))
    survey.left_out["unreadable_or_not_indexed"] = survey.files - len(index)
    by_series: Dict[str, List[pacs_source.Instance]] = collections.defaultdict(list)
    for instance in index.values():
        if not instance.patient_id:
            survey.left_out["no_patient_id"] += 1
        else:
            by_series[instance.series_instance_uid].append(instance)
    found, patients = [], set()
    for series_uid in sorted(by_series):
        members = by_series[series_uid]
        patient = deid.pseudonym(salt, "patient", members[0].patient_id)
        split = deid.patient_split(patient)
        if split not in splits:
            survey.left_out[f"patient_in_{split}"] += len(members)
            continue
        ordered = tuple(pacs_source.series_members(index, series_uid))
        found.append(SeriesSlices(patient, split, ordered,
                                  pacs_source.series_interval(ordered, None)))
        patients.add(patient)
        survey.slices_kept += len(ordered)
    survey.series_kept, survey.patients_kept = len(found), len(patients)
    logging.info("Unlabelled slices under %s: %d files, %d slices of %d series of %d patients "
                 "in %s; left out %s", root, survey.files, survey.slices_kept, survey.series_kept,
                 survey.patients_kept, "+".join(splits), dict(survey.left_out))
    return found, survey


def _files(root: epath.Path):
    for folder, subfolders, files in os.walk(os.fspath(root)):
        subfolders.sort()
        yield from files


def sample_triples(series: Sequence[SeriesSlices], count: int, seed: int
                   ) -> List[Tuple[pacs_source.Instance, ...]]:
    """`count` (above, slice, below) triples drawn uniformly from all slices with both neighbours.

    A slice at either end of its series, or whose neighbour `pacs_source.neighbour_slice`
    refuses (a missing slice in between, an unknown position), is not drawn. Fewer
    than `count` candidates: all of them, in a random order.
    """
    candidates = []
    for s in series:
        for position in range(1, len(s.members) - 1):
            above = pacs_source.neighbour_slice(s.members, position, -1, s.interval_mm)
            below = pacs_source.neighbour_slice(s.members, position, 1, s.interval_mm)
            if not isinstance(above, str) and not isinstance(below, str):
                candidates.append((above, s.members[position], below))
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(candidates))[:count]
    if len(chosen) < count:
        logging.warning("Asked for %d unlabelled slices; the series hold %d with both "
                        "neighbours: using all of them", count, len(candidates))
    return [candidates[i] for i in chosen]


def load_inputs(triples: Sequence[Tuple[pacs_source.Instance, ...]], *, image_size: int,
                windows: Sequence[Sequence[float]]
                ) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
    """The detector's input of each triple: `(images [N, S, S, 3] uint8, sizes [N, 2], left_out)`.

    A triple with a file that does not read as CT (`ct_reader.CTReadError`, or
    slices of different sizes) is left out and counted by reason in `left_out`.
    Neighbouring triples share files: the last 256 files read are kept.

    Raises:
      ValueError: more than one window (pretraining keeps the detector's 3 channels).
    """
    windows = hu_windows.validate_windows(windows)
    if len(windows) != 1:
        raise ValueError(f"pretraining reads three slices under one window, got {len(windows)}")
    cache: "collections.OrderedDict[str, object]" = collections.OrderedDict()

    def read(path: str):
        if path not in cache:
            try:
                with epath.Path(path).open("rb") as f:
                    cache[path] = ct_reader.read_ct(f).hu
            except (ct_reader.CTReadError, OSError) as error:
                cache[path] = getattr(error, "kind", "unreadable")
            if len(cache) > 256:
                cache.popitem(last=False)
        return cache[path]

    images, sizes, left_out = [], [], collections.Counter()
    for triple in tqdm.tqdm(triples, desc="Reading unlabelled slices", unit=" slices",
                            mininterval=2.0):
        hus = [read(instance.path) for instance in triple]
        problems = [h for h in hus if isinstance(h, str)]
        if problems:
            left_out[problems[0]] += 1
            continue
        if len({h.shape for h in hus}) != 1:
            left_out["slices_of_different_sizes"] += 1
            continue
        image, _, size = detector_pipeline.network_input(
            tf.constant(np.stack(hus, axis=-1)), image_size, windows)
        images.append(np.round(image.numpy() * 255.0).astype(np.uint8))
        sizes.append(size.numpy())
    if left_out:
        logging.warning("Left out %d unlabelled slices whose files do not read as one CT "
                        "series: %s", sum(left_out.values()), dict(left_out))
    shape = (0, image_size, image_size, 3)
    return (np.stack(images) if images else np.zeros(shape, np.uint8),
            np.stack(sizes).astype(np.int32) if sizes else np.zeros((0, 2), np.int32),
            dict(left_out))
