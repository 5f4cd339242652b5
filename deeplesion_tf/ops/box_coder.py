"""Box regression deltas: boxes <-> `(ty, tx, th, tw)` relative to anchors.

The parametrisation of Faster R-CNN (Ren et al. 2015, eq. 2), as in
detectron2's `Box2BoxTransform` and torchvision's `BoxCoder`:

    ty = wy * (cy - cya) / ha      tx = wx * (cx - cxa) / wa
    th = wh * log(h / ha)          tw = ww * log(w / wa)

Coordinates: boxes and anchors are `[ymin, xmin, ymax, xmax]` in absolute
pixels of the network input; centres and sizes come from the continuous
coordinates (`h = ymax - ymin`, `cy = ymin + h / 2`, no `+ 1`).

Shape shorthand:
  ...: any leading dimensions; boxes (or deltas) and anchors broadcast.
"""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

# (wy, wx, wh, ww) of the region proposal network.
RPN_WEIGHTS = (1., 1., 1., 1.)
# (wy, wx, wh, ww) of the Fast R-CNN box head (detectron2, torchvision).
RCNN_WEIGHTS = (10., 10., 5., 5.)
# Largest `th`, `tw` that `decode` exponentiates (after dividing by the
# weights), so a box grows at most 1000 / 16 times its anchor: torchvision's
# and detectron2's guard against overflow early in training.
BBOX_SCALE_CLAMP = math.log(1000. / 16)


def _centres_sizes(boxes: tf.Tensor):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    h = ymax - ymin
    w = xmax - xmin
    return ymin + 0.5 * h, xmin + 0.5 * w, h, w


def encode(boxes: tf.Tensor, anchors: tf.Tensor,
           weights: Sequence[float] = RPN_WEIGHTS) -> tf.Tensor:
    """Deltas that take `anchors` to `boxes`.

    Args:
      boxes: `[..., 4]` targets `[ymin, xmin, ymax, xmax]`, positive sizes.
      anchors: `[..., 4]` anchors (or proposals), broadcastable with `boxes`,
        positive sizes.
      weights: `(wy, wx, wh, ww)` multiplying the four deltas.

    Returns:
      `[..., 4]` float32 `(ty, tx, th, tw)`, the broadcast shape.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    wy, wx, wh, ww = (float(w) for w in weights)
    cy, cx, h, w = _centres_sizes(boxes)
    cya, cxa, ha, wa = _centres_sizes(anchors)
    return tf.stack([wy * (cy - cya) / ha,
                     wx * (cx - cxa) / wa,
                     wh * tf.math.log(h / ha),
                     ww * tf.math.log(w / wa)], axis=-1)


def decode(deltas: tf.Tensor, anchors: tf.Tensor,
           weights: Sequence[float] = RPN_WEIGHTS) -> tf.Tensor:
    """Boxes from deltas relative to `anchors`; the inverse of `encode`.

    `th / wh` and `tw / ww` are clamped at `BBOX_SCALE_CLAMP` before the exp.

    Args:
      deltas: `[..., 4]` `(ty, tx, th, tw)`.
      anchors: `[..., 4]` `[ymin, xmin, ymax, xmax]`, broadcastable with
        `deltas`.
      weights: `(wy, wx, wh, ww)` that `encode` used.

    Returns:
      `[..., 4]` float32 `[ymin, xmin, ymax, xmax]`, not clipped.
    """
    deltas = tf.convert_to_tensor(deltas, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    wy, wx, wh, ww = (float(w) for w in weights)
    ty, tx, th, tw = tf.unstack(deltas, 4, axis=-1)
    cya, cxa, ha, wa = _centres_sizes(anchors)
    cy = ty / wy * ha + cya
    cx = tx / wx * wa + cxa
    h = tf.exp(tf.minimum(th / wh, BBOX_SCALE_CLAMP)) * ha
    w = tf.exp(tf.minimum(tw / ww, BBOX_SCALE_CLAMP)) * wa
    return tf.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)
