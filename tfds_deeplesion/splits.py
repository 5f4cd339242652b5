"""Reading a built split of `deeplesion/*`: one way for every reader (binaries, evaluation)."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from tfds_deeplesion.deeplesion import deeplesion_dataset_builder  # noqa: F401 (registers)

SLICE_KEYS = ("image", "previous_slice", "next_slice")


def load_split(dataset: str, split: str, data_dir: Optional[str]) -> tf.data.Dataset:
    """A split in its stored order, slices left as PNG bytes (`SkipDecoding`).

    The order is the one `deeplesion_tf.evaluation.records` numbers images in; the
    pipelines (`make_detector_dataset`, `make_patch_dataset`) decode the bytes
    themselves, so that only the slices an example needs are decoded.

    Raises:
      tfds's error for a dataset that is not built: never `download_and_prepare`
      here, which would start a multi-GB synthetic build in the home folder.
    """
    skip = tfds.decode.SkipDecoding()
    return tfds.load(dataset, split=split, data_dir=data_dir, shuffle_files=False,
                     download=False, decoders={key: skip for key in SLICE_KEYS})
