"""HU display windows in TensorFlow: Hounsfield units -> [0, 1].

A window `[low, high]` (HU) maps `low` to 0, `high` to 1, linearly in between,
and clips outside. Several windows of the same slices are stacked window-major:
for `hu` of shape `[..., C]` and `K` windows the result is `[..., K * C]`, channel
`k * C + c` being slice channel `c` under window `k`.

Windows used by the project:
  * `NIH_WIDE_WINDOW` `[-1024, 3071]`: the single wide window of the NIH
    detectors (the whole 12-bit CT range), the detector's default.
  * `LUNG_WINDOW` `[-1350, 150]`, `SOFT_TISSUE_WINDOW` `[-160, 240]`,
    `BONE_WINDOW` `[-450, 1050]`: the categorizer's three channels
    (`CATEGORIZER_WINDOWS`, in that order).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import tensorflow as tf

from deeplesion_tf.data.release_format import HU_OFFSET

Window = Tuple[float, float]

NIH_WIDE_WINDOW: Window = (-1024.0, 3071.0)
LUNG_WINDOW: Window = (-1350.0, 150.0)
SOFT_TISSUE_WINDOW: Window = (-160.0, 240.0)
BONE_WINDOW: Window = (-450.0, 1050.0)

DETECTOR_WINDOWS: Tuple[Window, ...] = (NIH_WIDE_WINDOW,)
CATEGORIZER_WINDOWS: Tuple[Window, ...] = (LUNG_WINDOW, SOFT_TISSUE_WINDOW, BONE_WINDOW)


def validate_windows(windows: Sequence[Sequence[float]]) -> Tuple[Window, ...]:
    """Checks windows and returns them as a tuple of `(low, high)` floats.

    Raises:
      ValueError: no windows, a window without exactly two values, or one
        whose `low` is not below its `high`.
    """
    result = []
    for window in windows:
        if len(window) != 2:
            raise ValueError(f"a window is [low, high] HU, got {window!r}")
        low, high = float(window[0]), float(window[1])
        if not low < high:
            raise ValueError(f"window [{low:g}, {high:g}] HU: low must be below high")
        result.append((low, high))
    if not result:
        raise ValueError("at least one window is needed")
    return tuple(result)


def hu_from_stored(stored: tf.Tensor) -> tf.Tensor:
    """A slice as the dataset stores it, as float32 HU.

    Args:
      stored: uint16 `[H, W, 1]` of HU + 32768 (a decoded TFDS `Image`), or the
        16-bit PNG bytes of one (a scalar string, read with
        `decoders={...: tfds.decode.SkipDecoding()}`).

    Returns:
      `[H, W, 1]` float32 HU.
    """
    if stored.dtype == tf.string:
        stored = tf.io.decode_png(stored, channels=1, dtype=tf.uint16)
    return tf.cast(stored, tf.float32) - float(HU_OFFSET)


def apply_window(hu: tf.Tensor, window: Sequence[float]) -> tf.Tensor:
    """Maps HU through one window to float32 in [0, 1], same shape as `hu`."""
    (low, high), = validate_windows([window])
    scaled = (tf.cast(hu, tf.float32) - low) * (1.0 / (high - low))
    return tf.clip_by_value(scaled, 0.0, 1.0)


def apply_windows(hu: tf.Tensor, windows: Sequence[Sequence[float]]) -> tf.Tensor:
    """Stacks `hu` `[..., C]` under each of `K` windows: `[..., K * C]` in [0, 1].

    Channel `k * C + c` is input channel `c` under `windows[k]` (window-major).
    """
    windows = validate_windows(windows)
    if len(windows) == 1:
        return apply_window(hu, windows[0])
    return tf.concat([apply_window(hu, w) for w in windows], axis=-1)
