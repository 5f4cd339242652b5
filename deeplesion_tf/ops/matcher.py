"""Matching of anchors (or proposals) to ground truth by IoU.

The semantics of detectron2's and torchvision's `Matcher`: each row (anchor
or proposal) takes the valid ground-truth box it overlaps most; its IoU with
that box decides whether it is a positive, a negative or ignored, and
optionally the best rows of every ground-truth box are made positive however
low their IoU ("low-quality matches", Faster R-CNN's RPN rule (i)).

Shape shorthand:
  B: images per batch.
  N: rows to label (anchors or proposals) per image.
  M: ground-truth boxes per image, padded (padded columns are invalid).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

# The outcomes of a row, the values of `Match.labels`.
POSITIVE = 1
NEGATIVE = 0
IGNORE = -1


class Match(NamedTuple):
    """The outcome of `match`.

    Attributes:
      gt_index: `[B, N]` int32, the valid ground-truth column of the row's
        highest IoU (the first on ties); 0 in an image without valid ground
        truth. Meaningful where `labels == POSITIVE`.
      labels: `[B, N]` int32 `POSITIVE`, `NEGATIVE` or `IGNORE`.
      max_iou: `[B, N]` float32, the row's highest IoU over valid ground
        truth; 0 in an image without valid ground truth.
    """

    gt_index: tf.Tensor
    labels: tf.Tensor
    max_iou: tf.Tensor


def match(iou: tf.Tensor, gt_valid: tf.Tensor, *, positive_threshold: float,
          negative_threshold: float, negative_lower_bound: float = 0.0,
          allow_low_quality_matches: bool) -> Match:
    """Labels each row by its highest IoU with the valid ground truth.

    With `max_iou` a row's highest IoU over the valid columns:
      - `max_iou >= positive_threshold`: `POSITIVE`;
      - `negative_lower_bound <= max_iou < negative_threshold`: `NEGATIVE`;
      - `max_iou < negative_lower_bound`: `IGNORE` (Fast R-CNN's background
        range `[0.1, 0.5)`);
      - otherwise (between the thresholds): `IGNORE`.
    With `allow_low_quality_matches`, for every valid ground-truth box whose
    highest IoU over the rows is > 0, every row reaching that highest IoU
    becomes `POSITIVE` (torchvision's `set_low_quality_matches`, ties
    included). As in torchvision, such a row keeps `gt_index` = its own
    argmax: where a row is the best of a box but overlaps another box more,
    it is matched to the other box.

    An image without valid ground truth has every row `NEGATIVE`, whatever
    `negative_lower_bound`: all of it is background.

    Args:
      iou: `[B, N, M]` IoU of rows with ground truth (`boxes.pairwise_iou`).
      gt_valid: `[B, M]` bool, False on padded ground-truth columns, which
        never match.
      positive_threshold: lowest IoU of a positive.
      negative_threshold: IoUs below it are negatives; at most
        `positive_threshold`.
      negative_lower_bound: IoUs below it are ignored rather than negatives.
      allow_low_quality_matches: whether to add the best rows of each
        ground-truth box as positives.

    Returns:
      A `Match`.

    Raises:
      ValueError: if `negative_threshold > positive_threshold` or
        `negative_lower_bound > negative_threshold`.
    """
    if negative_threshold > positive_threshold:
        raise ValueError(f"negative_threshold {negative_threshold} > positive_threshold "
                         f"{positive_threshold}")
    if negative_lower_bound > negative_threshold:
        raise ValueError(f"negative_lower_bound {negative_lower_bound} > negative_threshold "
                         f"{negative_threshold}")
    iou = tf.convert_to_tensor(iou, tf.float32)
    gt_valid = tf.convert_to_tensor(gt_valid, tf.bool)
    valid = gt_valid[:, tf.newaxis, :]  # [B, 1, M]
    # IoU is >= 0, so -1 never wins a max or argmax over a valid column.
    masked = tf.where(valid, iou, -1.0)  # [B, N, M]
    has_gt = tf.reduce_any(gt_valid, axis=-1, keepdims=True)  # [B, 1]

    gt_index = tf.where(has_gt, tf.argmax(masked, axis=-1, output_type=tf.int32), 0)
    max_iou = tf.maximum(tf.reduce_max(masked, axis=-1), 0.0)

    labels = tf.fill(tf.shape(max_iou), IGNORE)
    labels = tf.where(max_iou < negative_threshold, NEGATIVE, labels)
    labels = tf.where(max_iou < negative_lower_bound, IGNORE, labels)
    labels = tf.where(max_iou >= positive_threshold, POSITIVE, labels)

    if allow_low_quality_matches:
        best_of_gt = tf.reduce_max(masked, axis=1, keepdims=True)  # [B, 1, M]
        is_best = (masked == best_of_gt) & (best_of_gt > 0.0) & valid
        labels = tf.where(tf.reduce_any(is_best, axis=-1), POSITIVE, labels)

    labels = tf.where(has_gt, labels, NEGATIVE)
    return Match(gt_index=gt_index, labels=labels, max_iou=max_iou)
