"""One dataset example: a bookmarked key slice, its neighbours and every lesion on it.

Both the DICOM source (`pacs_source`) and the NIH release source (`release_source`)
build their examples here, so the two write the same features the same way.
The example is a plain dict of Python and numpy values that the TFDS builder's
features encode; nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import skips
from deeplesion_tf.data.release_format import UNKNOWN_COARSE_TYPE


@dataclasses.dataclass(frozen=True)
class LesionRecord:
    """A bookmarked lesion as a source gives it.

    Attributes:
      lesion_id: stable id (the synthetic `truth.csv` id; the release's row index).
      coords: `(x11, y11, x12, y12, x21, y21, x22, y22)`, 0-based pixels.
      coarse_type: the release's coarse lesion type, -1 where unknown.
      noisy: the release's `Possibly_noisy`.
    """

    lesion_id: str
    coords: Tuple[float, ...]
    coarse_type: int = UNKNOWN_COARSE_TYPE
    noisy: bool = False


def lesion_features(
    lesions: Sequence[LesionRecord],
    height: int,
    width: int,
    spacing_mm: Tuple[float, float],
    padding: float,
) -> Tuple[Dict[str, np.ndarray], List[skips.Skip]]:
    """Measures the lesions of one slice; invalid bookmarks become `Skip`s.

    Returns:
      `(features, skipped)`. `features` holds one row per valid lesion:
      `bbox` `[n, 4]` float32 `[ymin, xmin, ymax, xmax]` normalised by the image
      size (times `[H, W, H, W]` gives 0-based pixels), `measurement` `[n, 8]`,
      `diameters_px` `[n, 2]` (long, short), `diameters_mm` `[n, 2]`,
      `coarse_type` `[n]`, `noisy` `[n]`, `lesion_id` `[n]`.
    """
    rows, skipped = [], []
    scale = np.array([height, width, height, width], np.float64)
    for lesion in lesions:
        try:
            geometry = bookmarks.measure(
                bookmarks.Bookmark(lesion.lesion_id, tuple(lesion.coords), height, width,
                                   spacing_mm),
                padding=padding)
        except bookmarks.BookmarkError as e:
            skipped.append(skips.Skip(skips.INVALID_GEOMETRY, 1, str(e)))
            continue
        rows.append((geometry, lesion))
    features = {
        "bbox": np.array([g.box / scale for g, _ in rows], np.float32).reshape(-1, 4),
        "measurement": np.array([l.coords for _, l in rows], np.float32).reshape(-1, 8),
        "diameters_px": np.array([(g.long_diameter_px, g.short_diameter_px) for g, _ in rows],
                                 np.float32).reshape(-1, 2),
        "diameters_mm": np.array([(g.long_diameter_mm, g.short_diameter_mm) for g, _ in rows],
                                 np.float32).reshape(-1, 2),
        "coarse_type": np.array([l.coarse_type for _, l in rows], np.int64),
        "noisy": np.array([l.noisy for _, l in rows], bool),
        "lesion_id": [l.lesion_id for _, l in rows],
    }
    # float32 can round a coordinate of 1.0 up past it; BBoxFeature rejects that.
    features["bbox"] = np.clip(features["bbox"], 0.0, 1.0)
    return features, skipped


def context_steps(slices_per_side: int) -> Tuple[int, ...]:
    """The slice steps of the `context_slices` feature, head to feet: `-k .. -2, 2 .. k`.

    Steps -1 and +1 are `previous_slice` and `next_slice`; with `slices_per_side`
    1 (every built-in config) there is no `context_slices` feature at all.
    """
    k = int(slices_per_side)
    return tuple(range(-k, -1)) + tuple(range(2, k + 1))


def make_example(
    *,
    image: bytes,
    previous_slice: bytes,
    next_slice: bytes,
    context_slices: Optional[Sequence[bytes]] = None,
    lesions: Dict[str, np.ndarray],
    patient_id: str,
    study_id: str,
    series_id: str,
    slice_index: int,
    spacing_mm: Tuple[float, float],
    slice_interval_mm: float,
    window: Tuple[float, float],
) -> Dict[str, object]:
    """Assembles the feature dict of one key slice (see the builder's `_info`).

    `context_slices`: the slices at `context_steps(k)` for a config storing k > 1
    slices on each side; None otherwise (and then no such feature).
    """
    example = {
        "image": image,
        "previous_slice": previous_slice,
        "next_slice": next_slice,
        "lesions": lesions,
        "patient_id": patient_id,
        "study_id": study_id,
        "series_id": series_id,
        "slice_index": int(slice_index),
        "spacing_mm": np.asarray(spacing_mm, np.float32),
        "slice_interval_mm": np.float32(slice_interval_mm),
        "window": np.asarray(window, np.float32),
    }
    if context_slices is not None:
        example["context_slices"] = list(context_slices)
    return example
