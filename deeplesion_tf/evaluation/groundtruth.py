"""Reading a `deeplesion/*` split into `records.ImageTruth` (and a few slices for figures)."""

from __future__ import annotations

import importlib
from typing import Dict, List, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tqdm import tqdm

from deeplesion_tf.data import png16
from deeplesion_tf.evaluation import records

_SLICE_KEYS = ("image", "previous_slice", "next_slice")


def load_split(dataset: str, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    """A split in its stored order, slices left as PNG bytes (`SkipDecoding`).

    The order is the one `records` numbers images in; `make_detector_dataset`
    decodes the bytes itself.
    """
    importlib.import_module("tfds_deeplesion")  # Registers `deeplesion`.

    skip = tfds.decode.SkipDecoding()
    # Never download_and_prepare here: a dataset that is not built is an error of
    # the caller's, not the start of a multi-GB build in the home folder.
    return tfds.load(dataset, split=split, data_dir=data_dir, shuffle_files=False,
                     download=False, decoders={k: skip for k in _SLICE_KEYS})


def file_name(patient_id: str, study_id: str, series_id: str, slice_index: int) -> str:
    return f"{patient_id}_{study_id}_{series_id}_{int(slice_index):03d}"


class GroundTruth(NamedTuple):
    """A split's images, and the HU key slices `[H, W]` of the first few (for figures)."""

    truths: List[records.ImageTruth]
    slices: Dict[int, np.ndarray]


def read_groundtruth(ds: tf.data.Dataset, keep_slices: int = 0) -> GroundTruth:
    """The `ImageTruth` of every example of `ds` (from `load_split`), ids 1, 2, ...

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
            coarse_types=np.asarray(lesions["coarse_type"], np.int64)))
        if image_id <= keep_slices:
            slices[image_id] = png16.decode_hu(example["image"])
    return GroundTruth(truths, slices)
