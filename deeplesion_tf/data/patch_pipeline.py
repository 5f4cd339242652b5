"""The categorizer's input pipeline: one windowed patch per lesion (paper Sec. 2.2).

Shape shorthand:
  P: `patch_size` (224 for VGG-16).
  K: windows, the patch's channels (3).
  n: lesions of one key slice.

Each lesion's patch is cropped from its key slice with the dilated box of
paper Sec. 2.1: the extent of its measurement widened by `padding_px` on each
side and clipped to the slice (`detector_pipeline.measurement_boxes`, the rule
of `bookmarks.measure`), `[ymin, xmin, ymax, xmax]` in absolute pixels, pixel
centres at integers. `tf.image.crop_and_resize` takes it normalised as
`y / (H - 1)`, `x / (W - 1)`: output row `i` samples the slice bilinearly at
row `ymin + i * (ymax - ymin) / (P - 1)`, so the first and last rows (and
columns) of the patch fall exactly on the box's edges, and an integer box with
`ymax - ymin + 1 == P` is cropped without resampling.

The crop is taken on HU and then windowed: channel `k` is the patch under
`windows[k]`, scaled to [0, 255] (lung, soft tissue, bone by default). With
`vgg_preprocess`, `keras.applications.vgg16.preprocess_input` follows, which
reads the channels as RGB: it reverses them (to bone, soft tissue, lung) and
subtracts the ImageNet BGR means.
"""

from __future__ import annotations

from typing import Dict, Sequence

import keras
import tensorflow as tf
from absl import logging

from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.data import hu_windows


def make_patch_dataset(ds: tf.data.Dataset, *, padding_px: float = 20.0, patch_size: int = 224,
                       windows: Sequence[Sequence[float]] = hu_windows.CATEGORIZER_WINDOWS,
                       vgg_preprocess: bool = True) -> tf.data.Dataset:
    """One patch per lesion of every key slice of `ds`, in `ds`'s order.

    Args:
      ds: a split of `deeplesion/*` (dict examples as `tfds.load` gives them;
        `image` decoded or left as PNG bytes with `tfds.decode.SkipDecoding()`).
      padding_px: pixels around the measurement's extent (paper: 20).
      patch_size: `P`.
      windows: `[low, high]` HU windows, one channel each.
      vgg_preprocess: apply VGG-16's ImageNet preprocessing (needs 3 windows);
        otherwise the patch is the windows in [0, 255].

    Returns:
      A dataset of one dict per lesion, key slices in `ds`'s order and lesions
      in their order on the slice (no shuffling), prefetched:
        `patch`: `[P, P, K]` float32.
        `lesion_id`: scalar string.
        `patient_id`: scalar string.

    Raises:
      ValueError: bad windows or patch size, or `vgg_preprocess` without 3 windows.
    """
    windows = hu_windows.validate_windows(windows)
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if vgg_preprocess and len(windows) != 3:
        raise ValueError(f"VGG preprocessing needs 3 channels, got {len(windows)} windows")
    logging.info("Patch pipeline: %dx%d patches, windows %s, padding %g px, vgg_preprocess=%s",
                 patch_size, patch_size, windows, padding_px, vgg_preprocess)

    def patches(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        hu = hu_windows.hu_from_stored(example["image"])  # [H, W, 1]
        size = tf.shape(hu)[:2]
        boxes = detector_pipeline.measurement_boxes(
            example["lesions"]["measurement"], size[0], size[1], padding_px)  # [n, 4]
        last = tf.cast(tf.maximum(size - 1, 1), tf.float32)
        normalized = boxes / tf.stack([last[0], last[1], last[0], last[1]])
        count = tf.shape(boxes)[0]
        crops = tf.image.crop_and_resize(
            hu[tf.newaxis], normalized, tf.zeros([count], tf.int32), [patch_size, patch_size],
            method="bilinear")  # [n, P, P, 1]
        patch = hu_windows.apply_windows(crops, windows) * 255.0  # [n, P, P, K]
        if vgg_preprocess:
            patch = keras.applications.vgg16.preprocess_input(patch)
        return {
            "patch": tf.ensure_shape(patch, [None, patch_size, patch_size, len(windows)]),
            "lesion_id": example["lesions"]["lesion_id"],
            "patient_id": tf.fill([count], example["patient_id"]),
        }

    ds = ds.map(patches, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.unbatch().prefetch(tf.data.AUTOTUNE)
