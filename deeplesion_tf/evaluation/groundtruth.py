"""Reading a `deeplesion/*` split into `records.ImageTruth` (and a few slices for figures)."""

from __future__ import annotations

from typing import Dict, List, NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tqdm import tqdm

from deeplesion_tf.data import png16
from deeplesion_tf.evaluation import records


def file_name(patient_id: str, study_id: str, series_id: str, slice_index: int) -> str:
    return f"{patient_id}_{study_id}_{series_id}_{int(slice_index):03d}"


class GroundTruth(NamedTuple):
    """A split's images, and the HU key slices `[H, W]` of the first few (for figures)."""

    truths: List[records.ImageTruth]
    slices: Dict[int, np.ndarray]


def read_groundtruth(ds: tf.data.Dataset, keep_slices: int = 0) -> GroundTruth:
    """The `ImageTruth` of every example of `ds` (`tfds_deeplesion.splits.load_split`), ids 1, 2, ...

    Args:
      ds: a split of `deeplesion/*` with the slices as PNG bytes.
      keep_slices: decode and keep the HU key slice of the first this many images.
    """
    truths, slices = [], {}
    for image_id, example in enumerate(tqdm(tfds.as_numpy(ds), desc="Ground truth",
                                            unit=" images"), start=1):
        header = png16.read_header(example["image"])
        lesions = example["lesions"]
        truths.append(records.ImageTruth(
            image_id=image_id,
            file_name=file_name(example["patient_id"].decode(), example["study_id"].decode(),
                                example["series_id"].decode(), example["slice_index"]),
            height=header.height, width=header.width,
            lesion_ids=tuple(i.decode() for i in lesions["lesion_id"]),
            measurements=np.asarray(lesions["measurement"], np.float64).reshape([-1, 8]),
            noisy=np.asarray(lesions["noisy"], bool),
            coarse_types=np.asarray(lesions["coarse_type"], np.int64),
            diameters_mm=np.asarray(lesions["diameters_mm"], np.float64).reshape([-1, 2])))
        if image_id <= keep_slices:
            slices[image_id] = png16.decode_hu(example["image"])
    return GroundTruth(truths, slices)
