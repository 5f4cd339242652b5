"""IoU of boxes in the two conventions the field uses (numpy).

Boxes are `[ymin, xmin, ymax, xmax]` in pixels (see `records`).

  * `CONTINUOUS` (the default): heights and widths are `ymax - ymin` and
    `xmax - xmin`, as in `deeplesion_tf.ops.boxes`, torchvision and pycocotools.
  * `INCLUSIVE_PIXELS`: `ymax - ymin + 1`, the pixels a box covers when its
    corners are pixel indices: the NIH DeepLesion evaluation script (and
    py-faster-rcnn's VOC code). It gives small boxes a higher IoU.
"""

from __future__ import annotations

import numpy as np

CONTINUOUS = "continuous"
INCLUSIVE_PIXELS = "inclusive_pixels"
IOU_CONVENTIONS = (CONTINUOUS, INCLUSIVE_PIXELS)


def extent_offset(convention: str) -> float:
    """What the convention adds to `max - min` for a side: 0 or 1 pixel.

    Raises:
      ValueError: an unknown convention.
    """
    if convention == CONTINUOUS:
        return 0.0
    if convention == INCLUSIVE_PIXELS:
        return 1.0
    raise ValueError(f"unknown IoU convention {convention!r}; expected one of {IOU_CONVENTIONS}")


def pairwise_iou(boxes1: np.ndarray, boxes2: np.ndarray, convention: str = CONTINUOUS
                 ) -> np.ndarray:
    """IoU of every box of `boxes1` `[N, 4]` with every box of `boxes2` `[M, 4]`: `[N, M]`.

    0 where the union is empty.
    """
    offset = extent_offset(convention)
    b1 = np.asarray(boxes1, np.float64).reshape([-1, 4])[:, np.newaxis]  # [N, 1, 4]
    b2 = np.asarray(boxes2, np.float64).reshape([-1, 4])[np.newaxis]  # [1, M, 4]
    extent = np.maximum(np.minimum(b1[..., 2:], b2[..., 2:]) -
                        np.maximum(b1[..., :2], b2[..., :2]) + offset, 0.0)
    intersection = extent[..., 0] * extent[..., 1]

    def area(b):
        sides = np.maximum(b[..., 2:] - b[..., :2] + offset, 0.0)
        return sides[..., 0] * sides[..., 1]

    union = area(b1) + area(b2) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
