"""Non-maximum suppression of a batch: class-agnostic (proposals) and per class.

Coordinates: boxes are `[ymin, xmin, ymax, xmax]` float32 in absolute pixels
of the network input, `ymin <= ymax` and `xmin <= xmax`.

Shape shorthand:
  B: images per batch.
  N: candidate boxes per image.
  K: `max_output_size` (`batched_nms`) or classes (`multiclass_nms`).
  D: `max_total`, detections per image.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

# `non_max_suppression_padded` takes a box as selected only if one of its
# coordinates is > 0 (suppressed and below-threshold boxes are zeroed), so the
# boxes are shifted until their smallest coordinate is this.
_SMALLEST_SHIFTED_COORDINATE = 1.0


class NmsResult(NamedTuple):
    """The outcome of `batched_nms`, by score descending.

    Attributes:
      boxes: `[B, K, 4]` kept boxes; 0 on padding.
      scores: `[B, K]` their scores; 0 on padding.
      indices: `[B, K]` int32 their rows in the input; -1 on padding.
      num_valid: `[B]` int32 kept boxes per image (the rest is padding).
    """

    boxes: tf.Tensor
    scores: tf.Tensor
    indices: tf.Tensor
    num_valid: tf.Tensor


class Detections(NamedTuple):
    """The outcome of `multiclass_nms`, by score descending.

    Attributes:
      boxes: `[B, D, 4]` detected boxes; 0 on padding.
      scores: `[B, D]` their class scores; 0 on padding.
      classes: `[B, D]` int32 classes `1..K`; 0 on padding.
      num_detections: `[B]` int32 detections per image.
    """

    boxes: tf.Tensor
    scores: tf.Tensor
    classes: tf.Tensor
    num_detections: tf.Tensor


def batched_nms(boxes: tf.Tensor, scores: tf.Tensor, *, max_output_size: int,
                iou_threshold: float, score_threshold: float = float("-inf")) -> NmsResult:
    """Greedy class-agnostic NMS of every image of a batch, at once.

    Boxes with `score > score_threshold` are visited by score descending; a
    box is kept unless its IoU with a kept box is `> iou_threshold`, until
    `max_output_size` are kept (the rule of `tf.image.non_max_suppression`,
    `multiclass_nms` and torchvision).

    Runs `tf.image.non_max_suppression_padded` (tiled, all images together),
    with its quirks handled: it counts a box as kept only if some coordinate
    is > 0, so boxes are shifted to positive coordinates first (IoU is
    translation invariant); its coordinate canonicalisation looks at the first
    box of the batch only, so it is turned off (boxes must be
    `[ymin, xmin, ymax, xmax]` already); and it suppresses on
    `IoU >= threshold`, so it gets the next float32 above `iou_threshold`.

    Args:
      boxes: `[B, N, 4]` `[ymin, xmin, ymax, xmax]`.
      scores: `[B, N]`.
      max_output_size: `K`, the most boxes kept per image.
      iou_threshold: IoU with a kept box from which a box is suppressed.
      score_threshold: only boxes scoring above it are candidates.

    Returns:
      An `NmsResult`.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    candidate = scores > score_threshold  # [B, N]
    smallest = tf.reduce_min(
        tf.where(candidate, tf.minimum(boxes[..., 0], boxes[..., 1]), 0.0), axis=-1)  # [B]
    shift = tf.maximum(_SMALLEST_SHIFTED_COORDINATE - smallest, 0.0)[:, tf.newaxis, tf.newaxis]
    # A zero box is never counted as kept and overlaps nothing.
    shifted = tf.where(candidate[..., tf.newaxis], boxes + shift, 0.0)
    # IoU is float32: `>= nextafter(t)` is `> t`.
    strict_threshold = tf.math.nextafter(tf.cast(iou_threshold, tf.float32), tf.float32.max)
    indices, num_valid = tf.image.non_max_suppression_padded(
        shifted, scores, max_output_size, iou_threshold=strict_threshold,
        pad_to_max_output_size=True, canonicalized_coordinates=True)
    is_valid = tf.range(max_output_size)[tf.newaxis, :] < num_valid[:, tf.newaxis]  # [B, K]
    kept_boxes = tf.gather(boxes, indices, batch_dims=1)
    kept_scores = tf.gather(scores, indices, batch_dims=1)
    return NmsResult(
        boxes=tf.where(is_valid[..., tf.newaxis], kept_boxes, 0.0),
        scores=tf.where(is_valid, kept_scores, 0.0),
        indices=tf.where(is_valid, indices, -1),
        num_valid=num_valid)


def multiclass_nms(boxes: tf.Tensor, scores: tf.Tensor, *, max_per_class: int, max_total: int,
                   iou_threshold: float, score_threshold: float) -> Detections:
    """Per-class NMS, then the best `max_total` detections of all classes.

    `tf.image.combined_non_max_suppression` without clipping (boxes are in
    pixels) and without per-class padding: in each class, boxes scoring above
    `score_threshold` are kept greedily unless their IoU with a kept box of the
    same class exceeds `iou_threshold`, at most `max_per_class`; boxes of
    different classes never suppress each other.

    Args:
      boxes: `[B, N, K, 4]` `[ymin, xmin, ymax, xmax]`, column `k` the box
        of class `k + 1`.
      scores: `[B, N, K]`, column `k` the score of class `k + 1`
        (background excluded).
      max_per_class: the most detections of one class per image.
      max_total: `D`, the most detections per image.
      iou_threshold: IoU above which a box of the same class is suppressed.
      score_threshold: only boxes scoring above it are detections.

    Returns:
      `Detections`.
    """
    nmsed = tf.image.combined_non_max_suppression(
        tf.convert_to_tensor(boxes, tf.float32), tf.convert_to_tensor(scores, tf.float32),
        max_output_size_per_class=max_per_class, max_total_size=max_total,
        iou_threshold=iou_threshold, score_threshold=score_threshold,
        pad_per_class=False, clip_boxes=False)
    num_detections = tf.cast(nmsed.valid_detections, tf.int32)
    is_valid = tf.range(max_total)[tf.newaxis, :] < num_detections[:, tf.newaxis]
    # The op numbers classes from 0 (the first score column).
    classes = tf.where(is_valid, tf.cast(nmsed.nmsed_classes, tf.int32) + 1, 0)
    return Detections(
        boxes=tf.where(is_valid[..., tf.newaxis], nmsed.nmsed_boxes, 0.0),
        scores=tf.where(is_valid, nmsed.nmsed_scores, 0.0),
        classes=classes,
        num_detections=num_detections)
