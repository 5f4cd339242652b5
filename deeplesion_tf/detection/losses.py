"""The four losses of Faster R-CNN, optimised jointly (paper Sec. 2.3).

Shape shorthand:
  B: images per batch.
  N: anchors per image.
  S: sampled anchors (RPN) or RoIs (box head) per image.
  K: foreground classes.

RPN: binary cross-entropy of the objectness of the sampled anchors, and a
smooth-L1 loss (beta 1/9, py-faster-rcnn's sigma 3) of the deltas of the
positive ones; box head: softmax cross-entropy over K + 1 classes of the
sampled RoIs, and a smooth-L1 loss (beta 1) of the deltas of the matched class
on foreground RoIs. Both box losses are summed over positives and divided by
the number of sampled rows (torchvision's normalisation), so an image without
lesions still trains the classifiers. Every loss is a mean over the batch's
sampled rows on this replica; dividing by the replicas is the caller's job.
"""

from __future__ import annotations

from typing import Dict

import tensorflow as tf

from deeplesion_tf.ops import box_coder
from deeplesion_tf.ops import boxes as box_ops
from deeplesion_tf.ops import matcher
from deeplesion_tf.ops import sampler

RPN_SMOOTH_L1_BETA = 1.0 / 9.0
RCNN_SMOOTH_L1_BETA = 1.0


def smooth_l1(difference: tf.Tensor, beta: float) -> tf.Tensor:
    """Elementwise smooth L1 (Huber with the quadratic part scaled by 1/beta)."""
    absolute = tf.abs(difference)
    return tf.where(absolute < beta, 0.5 * tf.square(absolute) / beta, absolute - 0.5 * beta)


def _safe_mean(total: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    return total / tf.maximum(tf.cast(count, tf.float32), 1.0)


def rpn_losses(objectness: tf.Tensor, deltas: tf.Tensor, anchors: tf.Tensor,
               gt_boxes: tf.Tensor, gt_valid: tf.Tensor, *, positive_iou: float = 0.7,
               negative_iou: float = 0.3, num_samples: int = 256,
               positive_fraction: float = 0.5, image_size=None,
               seed=None) -> Dict[str, tf.Tensor]:
    """RPN classification and box losses, and the recall of its anchors.

    Args:
      objectness: `[B, N]` logits.
      deltas: `[B, N, 4]` (`box_coder.RPN_WEIGHTS`).
      anchors: `[N, 4]`.
      gt_boxes: `[B, M, 4]`.
      gt_valid: `[B, M]` bool.
      positive_iou, negative_iou: anchor labelling thresholds (Faster R-CNN 0.7, 0.3;
        every lesion's best anchors are positive too).
      num_samples, positive_fraction: anchors sampled per image (256, half positive).
      image_size: `(height, width)`; when given, anchors that cross the image's
        border are ignored (neither positive nor negative), as py-faster-rcnn
        does: their features see the zero padding, and corner anchors would
        otherwise learn the border instead of lesions.
      seed: optional stateless seed `[2]`.

    Returns:
      `rpn_class_loss`, `rpn_box_loss` (scalars).
    """
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    batch = tf.shape(gt_boxes)[0]
    iou = box_ops.pairwise_iou(tf.broadcast_to(anchors, [batch, tf.shape(anchors)[0], 4]),
                               gt_boxes)
    match = matcher.match(iou, gt_valid, positive_threshold=positive_iou,
                          negative_threshold=negative_iou, allow_low_quality_matches=True)
    labels = match.labels
    if image_size is not None:
        height = tf.cast(image_size[0], tf.float32)
        width = tf.cast(image_size[1], tf.float32)
        inside = ((anchors[:, 0] >= -0.5) & (anchors[:, 1] >= -0.5)
                  & (anchors[:, 2] <= height - 0.5) & (anchors[:, 3] <= width - 0.5))
        labels = tf.where(inside[tf.newaxis], labels, matcher.IGNORE)
    sample = sampler.sample_balanced(labels, num_samples=num_samples,
                                     positive_fraction=positive_fraction, seed=seed)
    positive = tf.logical_and(sample.valid, tf.equal(sample.labels, matcher.POSITIVE))
    logits = tf.gather(tf.cast(objectness, tf.float32), sample.indices, batch_dims=1)
    class_loss = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.cast(positive, tf.float32), logits=logits)
    num_sampled = tf.reduce_sum(tf.cast(sample.valid, tf.float32))
    class_loss = _safe_mean(tf.reduce_sum(tf.where(sample.valid, class_loss, 0.0)), num_sampled)

    matched = tf.gather(gt_boxes, tf.gather(match.gt_index, sample.indices, batch_dims=1),
                        batch_dims=1)
    targets = box_coder.encode(matched, tf.gather(anchors, sample.indices), box_coder.RPN_WEIGHTS)
    predicted = tf.gather(tf.cast(deltas, tf.float32), sample.indices, batch_dims=1)
    box_loss = tf.reduce_sum(smooth_l1(predicted - targets, RPN_SMOOTH_L1_BETA), axis=-1)
    box_loss = _safe_mean(tf.reduce_sum(tf.where(positive, box_loss, 0.0)), num_sampled)
    return {"rpn_class_loss": class_loss, "rpn_box_loss": box_loss}


def rcnn_losses(class_logits: tf.Tensor, deltas: tf.Tensor, classes: tf.Tensor,
                box_targets: tf.Tensor, valid: tf.Tensor, *,
                category_weight: float = 1.0) -> Dict[str, tf.Tensor]:
    """Box head classification and box losses.

    The softmax cross-entropy of a RoI of class k splits exactly into a lesion
    term and a category term, -log p(k) = -log p(lesion) - log p(k | lesion),
    with p(lesion) = 1 - p(background); a background RoI has the lesion term
    -log p(background) only. `category_weight` scales the category term (1:
    the plain softmax loss); with one class the category term is 0.

    Args:
      class_logits: `[B, S, K + 1]`.
      deltas: `[B, S, K, 4]` class-specific (`box_coder.RCNN_WEIGHTS`).
      classes: `[B, S]` int32 target classes (0 background).
      box_targets: `[B, S, 4]`.
      valid: `[B, S]` bool, the sampled rows.
      category_weight: weight of the category term (>= 0).

    Returns:
      `rcnn_class_loss`, `rcnn_box_loss` (scalars).
    """
    classes = tf.cast(classes, tf.int32)
    class_logits = tf.cast(class_logits, tf.float32)
    if category_weight == 1.0:
        class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=classes,
                                                                   logits=class_logits)
    else:
        log_p = tf.nn.log_softmax(class_logits, axis=-1)
        log_lesion = tf.reduce_logsumexp(log_p[..., 1:], axis=-1)
        own = tf.gather(log_p, classes, batch_dims=2)
        class_loss = tf.where(classes > 0, -log_lesion - category_weight * (own - log_lesion),
                              -own)
    num_sampled = tf.reduce_sum(tf.cast(valid, tf.float32))
    class_loss = _safe_mean(tf.reduce_sum(tf.where(valid, class_loss, 0.0)), num_sampled)
    foreground = tf.logical_and(valid, classes > 0)
    # The deltas of each RoI's own class (row k - 1 for class k).
    own = tf.gather(tf.cast(deltas, tf.float32), tf.maximum(classes - 1, 0), batch_dims=2)
    box_loss = tf.reduce_sum(smooth_l1(own - box_targets, RCNN_SMOOTH_L1_BETA), axis=-1)
    box_loss = _safe_mean(tf.reduce_sum(tf.where(foreground, box_loss, 0.0)), num_sampled)
    return {"rcnn_class_loss": class_loss, "rcnn_box_loss": box_loss}


def rpn_recall(proposals: tf.Tensor, proposal_valid: tf.Tensor, gt_boxes: tf.Tensor,
               gt_valid: tf.Tensor, iou_threshold: float = 0.5) -> tf.Tensor:
    """Fraction of lesions covered by a proposal with IoU >= `iou_threshold` (scalar).

    Args:
      proposals: `[B, P, 4]`; proposal_valid `[B, P]` bool.
      gt_boxes: `[B, M, 4]`; gt_valid `[B, M]` bool.
    """
    iou = box_ops.pairwise_iou(tf.cast(gt_boxes, tf.float32), tf.cast(proposals, tf.float32))
    iou = tf.where(proposal_valid[:, tf.newaxis, :], iou, 0.0)
    hit = tf.logical_and(gt_valid, tf.reduce_max(iou, axis=-1) >= iou_threshold)
    return _safe_mean(tf.reduce_sum(tf.cast(hit, tf.float32)),
                      tf.reduce_sum(tf.cast(gt_valid, tf.float32)))
