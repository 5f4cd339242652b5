"""Anchors of the region proposal network (paper Sec. 2.3: 3 sizes x 3 ratios).

Coordinates: anchors are `[ymin, xmin, ymax, xmax]` float32 in absolute
pixels of the network input, pixel centres at integers; heights and widths are
continuous (`ymax - ymin`). Anchors are not clipped to the image.

Shape shorthand:
  A: anchors per feature-map position, `len(sizes) * len(ratios)`.
  Hf, Wf: rows and columns of the feature map.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

# Anchor sides of the paper (pixels of the 512 x 512 network input), the
# sqrt of each anchor's area.
PAPER_ANCHOR_SIZES = (48., 72., 96.)
# Anchor aspect ratios of the paper, height / width.
PAPER_ANCHOR_RATIOS = (0.5, 1., 2.)


def anchor_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> tf.Tensor:
    """Heights and widths of the anchors of one feature-map position.

    Args:
      sizes: anchor sides; an anchor of size `s` has area `s ** 2`.
      ratios: aspect ratios, height / width.

    Returns:
      `[A, 2]` float32 `(height, width)`, size-major: anchor
      `a = size_index * len(ratios) + ratio_index` has
      `height = size * sqrt(ratio)`, `width = size / sqrt(ratio)`.
    """
    sizes = tf.constant(sizes, tf.float32)
    root_ratios = tf.sqrt(tf.constant(ratios, tf.float32))
    heights = sizes[:, tf.newaxis] * root_ratios[tf.newaxis, :]  # [sizes, ratios]
    widths = sizes[:, tf.newaxis] / root_ratios[tf.newaxis, :]
    return tf.stack([tf.reshape(heights, [-1]), tf.reshape(widths, [-1])], axis=-1)


def anchor_grid(feature_height, feature_width, stride: int,
                sizes: Sequence[float] = PAPER_ANCHOR_SIZES,
                ratios: Sequence[float] = PAPER_ANCHOR_RATIOS) -> tf.Tensor:
    """The anchors of every position of a feature map.

    Position `(i, j)` sees the `stride x stride` block of input pixels starting
    at `(i * stride, j * stride)`; its anchors are centred on that block,
    at `(i * stride + (stride - 1) / 2, j * stride + (stride - 1) / 2)`.

    Args:
      feature_height: `Hf`, a Python int or a scalar int tensor.
      feature_width: `Wf`, as `feature_height`.
      stride: input pixels per feature-map position.
      sizes: anchor sides (see `anchor_shapes`).
      ratios: aspect ratios height / width (see `anchor_shapes`).

    Returns:
      `[Hf * Wf * A, 4]` float32 `[cy - h/2, cx - w/2, cy + h/2, cx + w/2]`;
      positions row-major (y, then x), then the `A` anchors of the position in
      the order of `anchor_shapes`. Row `(i * Wf + j) * A + a`.
    """
    stride = tf.cast(stride, tf.float32)
    offset = (stride - 1.0) / 2.0
    ys = tf.cast(tf.range(feature_height), tf.float32) * stride + offset  # [Hf]
    xs = tf.cast(tf.range(feature_width), tf.float32) * stride + offset  # [Wf]
    cy, cx = tf.meshgrid(ys, xs, indexing="ij")  # [Hf, Wf]
    centres = tf.reshape(tf.stack([cy, cx, cy, cx], axis=-1), [-1, 1, 4])  # [Hf*Wf, 1, 4]
    half = anchor_shapes(sizes, ratios) / 2.0  # [A, 2]
    extents = tf.concat([-half, half], axis=-1)[tf.newaxis]  # [1, A, 4]
    return tf.reshape(centres + extents, [-1, 4])
