"""What evaluation compares: the lesions of each image and the detections on it.

Coordinates: boxes are `[ymin, xmin, ymax, xmax]` float64 in absolute pixels
of the *original* slice, pixel centres at integers (`deeplesion_tf.data.bookmarks`:
a box `[y1, x1, y2, x2]` covers the pixels
`image[y1:y2 + 1, x1:x2 + 1]`). The network-input boxes of the detector are
mapped back with `detector_pipeline.boxes_to_original` before they get here.

Shape shorthand:
  n: lesions of one image; D: detections of one image.

Image ids: `image_id` is the 1-based position of the example in the split as
`tfds.load(..., shuffle_files=False)` reads it. TFDS fixes that order when it
builds the dataset, so the ids are stable between runs, and `test[:k]` gives
the first k ids of `test`. `file_name` (`patient_study_series_slice`) names
the slice as well, for cross-checks.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np


class ImageTruth(NamedTuple):
    """The bookmarked lesions of one key slice.

    Attributes:
      image_id: see the module docstring.
      file_name: `<patient_id>_<study_id>_<series_id>_<slice_index:03d>`.
      height, width: pixels of the original slice.
      lesion_ids: `n` dataset lesion ids.
      measurements: `[n, 8]` `x11, y11, x12, y12, x21, y21, x22, y22` (0-based
        pixels, x the column), the bookmark's two diameters.
      noisy: `[n]` bool, the release's `Possibly_noisy`.
      coarse_types: `[n]` int, the release's coarse lesion type (-1 unknown).
      diameters_mm: `[n, 2]` long and short diameter in mm (the dataset's
        `lesions/diameters_mm`), or None where not read.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    lesion_ids: Tuple[str, ...]
    measurements: np.ndarray
    noisy: np.ndarray
    coarse_types: np.ndarray
    diameters_mm: Optional[np.ndarray] = None


class ImageDetections(NamedTuple):
    """The detections of one image, in original pixels.

    Attributes:
      image_id: the `ImageTruth.image_id` they belong to.
      boxes: `[D, 4]` `[ymin, xmin, ymax, xmax]`.
      scores: `[D]`.
      classes: `[D]` int, the detector's classes 1..K.
    """

    image_id: int
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def patient_id(truth: ImageTruth) -> str:
    """The patient pseudonym of `truth.file_name` (its first `_`-separated field)."""
    return truth.file_name.rsplit("_", 3)[0]


def empty_detections(image_id: int) -> ImageDetections:
    return ImageDetections(image_id, np.zeros([0, 4]), np.zeros([0]), np.zeros([0], np.int64))


def truth_boxes(truth: ImageTruth, padding: float) -> np.ndarray:
    """Lesion boxes `[n, 4]`: the measurement's extent widened by `padding` px.

    The rule of `bookmarks.measure` and `detector_pipeline.measurement_boxes`:
    the extent of the 4 endpoints, `padding` pixels added on each side,
    clipped to `[0, height - 1]` x `[0, width - 1]`.
    """
    points = np.asarray(truth.measurements, np.float64).reshape([-1, 4, 2])  # (x, y)
    low = points.min(axis=1) - padding
    high = points.max(axis=1) + padding
    boxes = np.stack([low[:, 1], low[:, 0], high[:, 1], high[:, 0]], axis=-1)
    limits = np.array([truth.height - 1, truth.width - 1] * 2, np.float64)
    return np.clip(boxes, 0.0, limits)


def change_padding(boxes: np.ndarray, from_padding: float, to_padding: float) -> np.ndarray:
    """Detections `[D, 4]` trained on boxes padded by `from_padding`, re-padded to `to_padding`.

    Each side moves inwards by `from_padding - to_padding` pixels (outwards when
    negative). A box too small to shrink that much collapses to its centre
    line rather than inverting.
    """
    boxes = np.asarray(boxes, np.float64).reshape([-1, 4])
    delta = float(from_padding) - float(to_padding)
    if delta == 0.0:
        return boxes.copy()
    low, high = boxes[:, :2] + delta, boxes[:, 2:] - delta
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    inverted = low > high
    low = np.where(inverted, centre, low)
    high = np.where(inverted, centre, high)
    return np.concatenate([low, high], axis=-1)
