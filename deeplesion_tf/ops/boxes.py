"""Box geometry: areas, pairwise IoU, clipping to the image.

Coordinates: boxes are `[ymin, xmin, ymax, xmax]` float32 in absolute pixels
of the network input, pixel centres at integers. Heights and widths are
continuous: `ymax - ymin` and `xmax - xmin` (no `+ 1`).

Shape shorthand:
  N, M: boxes of the two sides of a pairwise comparison.
  ...: any leading (batch) dimensions, broadcast between arguments.
"""

from __future__ import annotations

import tensorflow as tf


def area(boxes: tf.Tensor) -> tf.Tensor:
    """Areas of boxes, `0` for inverted or degenerate ones.

    Args:
      boxes: `[..., 4]` `[ymin, xmin, ymax, xmax]`.

    Returns:
      `[...]` `max(ymax - ymin, 0) * max(xmax - xmin, 0)`.
    """
    boxes = tf.convert_to_tensor(boxes)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def pairwise_iou(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """Intersection over union of every box of `boxes1` with every box of `boxes2`.

    Args:
      boxes1: `[..., N, 4]` `[ymin, xmin, ymax, xmax]`.
      boxes2: `[..., M, 4]`, leading dimensions broadcastable with `boxes1`'s.

    Returns:
      `[..., N, M]` IoU in `[0, 1]`; `0` where the union is `0` (two empty
      boxes). Padding rows (`-1` in all 4 coordinates) have area 0, so their
      IoU with anything is 0.
    """
    boxes1 = tf.convert_to_tensor(boxes1)
    boxes2 = tf.convert_to_tensor(boxes2, dtype=boxes1.dtype)
    b1 = boxes1[..., :, tf.newaxis, :]  # [..., N, 1, 4]
    b2 = boxes2[..., tf.newaxis, :, :]  # [..., 1, M, 4]
    top_left = tf.maximum(b1[..., :2], b2[..., :2])
    bottom_right = tf.minimum(b1[..., 2:], b2[..., 2:])
    extent = tf.maximum(bottom_right - top_left, 0.0)
    intersection = extent[..., 0] * extent[..., 1]
    union = area(b1) + area(b2) - intersection
    return tf.math.divide_no_nan(intersection, union)


def clip_boxes(boxes: tf.Tensor, height, width) -> tf.Tensor:
    """Boxes clipped to an image: y to `[0, height - 1]`, x to `[0, width - 1]`.

    Args:
      boxes: `[..., 4]` `[ymin, xmin, ymax, xmax]`.
      height: rows of the image; a Python number, a scalar tensor, or a tensor
        broadcastable to `boxes[..., 0]` (e.g. `[B, 1]` for `[B, N, 4]`).
      width: columns of the image, as `height`.

    Returns:
      `[..., 4]` the clipped boxes, the broadcast shape of `boxes` and the sizes.
    """
    boxes = tf.convert_to_tensor(boxes)
    y_last = tf.cast(height, boxes.dtype) - 1.0
    x_last = tf.cast(width, boxes.dtype) - 1.0
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    ymin = tf.clip_by_value(ymin, 0.0, y_last)
    ymax = tf.clip_by_value(ymax, 0.0, y_last)
    xmin = tf.clip_by_value(xmin, 0.0, x_last)
    xmax = tf.clip_by_value(xmax, 0.0, x_last)
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)
