"""What a reviewer judges: each sampled lesion's key slice, cropped with the lesion centred.

The review page (`review_server`) shows one lesion per screen as a radiologist would
look at it: grey scale, under a window of the reviewer's choice, with the bookmark
(the long and the short axis) drawn over it. The views are cut once from the dataset
the categorizer ran on and kept in the run directory (`review_views.npz`), so the page
needs neither TensorFlow nor the dataset to start again after it was closed.

A view is a square of the slice in HU around the centre of the measurement's extent,
`CONTEXT` times its larger side and at least `MIN_SIDE_PX` (a 5 mm nodule alone on a
screen is hard to judge), with air beyond the slice's edge so the lesion stays
centred. The bookmark is kept in the view's pixels (0-based, pixel centres at
integers, x the column), `x11, y11, x12, y12, x21, y21, x22, y22` as in the dataset.
Only HU and geometry are kept: no patient data, and the page never shows a lesion id.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Dict, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from deeplesion_tf.data import atomic_file
from deeplesion_tf.data import png16

VIEWS_FILE = "review_views.npz"
MIN_SIDE_PX = 96
CONTEXT = 2.5
AIR_HU = -1024


@dataclasses.dataclass(frozen=True)
class LesionView:
    """One lesion's view.

    Attributes:
      hu: `[S, S]` int16 HU, `AIR_HU` beyond the slice.
      bookmark: `[8]` float32, the measurement in the view's pixels.
    """

    hu: np.ndarray
    bookmark: np.ndarray


def crop_view(hu: np.ndarray, measurement: Sequence[float], min_side: int = MIN_SIDE_PX,
              context: float = CONTEXT) -> LesionView:
    """The view of one lesion on its key slice.

    Args:
      hu: `[H, W]` HU of the key slice.
      measurement: `[8]` `x11, y11, x12, y12, x21, y21, x22, y22`, pixels of the slice.
      min_side, context: the view's side is `max(min_side, ceil(context * extent))`,
        `extent` the larger side of the measurement's bounding box.
    """
    points = np.asarray(measurement, np.float64).reshape(4, 2)  # (x, y)
    low, high = points.min(axis=0), points.max(axis=0)
    side = int(max(min_side, np.ceil(context * float((high - low).max()))))
    origin = np.round((low + high) / 2 - (side - 1) / 2).astype(int)  # (x, y) of view pixel 0
    view = np.full((side, side), AIR_HU, np.int16)
    rows, columns = hu.shape
    x0, y0 = max(origin[0], 0), max(origin[1], 0)
    x1, y1 = min(origin[0] + side, columns), min(origin[1] + side, rows)
    if x1 > x0 and y1 > y0:
        view[y0 - origin[1]:y1 - origin[1], x0 - origin[0]:x1 - origin[0]] = np.round(np.clip(
            hu[y0:y1, x0:x1], np.iinfo(np.int16).min, np.iinfo(np.int16).max))
    bookmark = (points - origin).reshape(8).astype(np.float32)
    return LesionView(view, bookmark)


def collect_views(examples: Iterable[Mapping], wanted: Iterable[str],
                  min_side: int = MIN_SIDE_PX) -> Dict[str, LesionView]:
    """The views of the `wanted` lesions, from a dataset's examples.

    Args:
      examples: numpy examples of `deeplesion/*` as `splits.load_split` reads them
        (`tfds.as_numpy`): `image` the key slice's 16-bit PNG bytes, `lesions` with
        `lesion_id` and `measurement` `[n, 8]`. Only slices with a wanted lesion are
        decoded.
      wanted: lesion ids.

    Raises:
      ValueError: a wanted lesion the examples lack, naming how many and the first few
        (the run directory and the dataset do not belong together).
    """
    wanted = set(wanted)
    views = {}
    for example in examples:
        ids = [i.decode() if isinstance(i, bytes) else str(i)
               for i in example["lesions"]["lesion_id"]]
        hits = [(n, i) for n, i in enumerate(ids) if i in wanted and i not in views]
        if not hits:
            continue
        hu = png16.decode_hu(example["image"])
        for n, lesion in hits:
            views[lesion] = crop_view(hu, example["lesions"]["measurement"][n], min_side)
    missing = sorted(wanted - set(views))
    if missing:
        raise ValueError(f"{len(missing)} lesions of the review sample are not in the dataset "
                         f"(first: {', '.join(missing[:5])}): is it the dataset the categorizer "
                         "ran on?")
    return views


def save_views(path: str, views: Mapping[str, LesionView]) -> None:
    """Writes the views to one `.npz`, atomically (a killed process leaves no half file)."""
    ids = sorted(views)
    arrays = {
        "lesion_ids": np.array(ids, dtype=str),
        "sides": np.array([views[i].hu.shape[0] for i in ids], np.int32),
        "hu": (np.concatenate([views[i].hu.reshape(-1) for i in ids]) if ids
               else np.zeros([0], np.int16)),
        "bookmarks": np.array([views[i].bookmark for i in ids], np.float32).reshape(-1, 8),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_file.write_atomically(path, buffer.getvalue())


def load_views(path: str) -> Dict[str, LesionView]:
    with np.load(path) as data:
        sides, flat = data["sides"], data["hu"]
        ends = np.cumsum(sides.astype(np.int64) ** 2)
        return {str(lesion): LesionView(flat[end - side * side:end].reshape(side, side),
                                        bookmark)
                for lesion, side, end, bookmark in zip(data["lesion_ids"], sides, ends,
                                                       data["bookmarks"])}


def render_png(view: LesionView, window: Sequence[float], display_px: int) -> bytes:
    """The view under an HU `window` `[low, high]`, grey scale, `display_px` square, as PNG."""
    low, high = float(window[0]), float(window[1])
    grey = np.clip((view.hu.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    image = Image.fromarray(np.round(grey * 255.0).astype(np.uint8), mode="L")
    if image.size[0] != display_px:
        image = image.resize((display_px, display_px), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
