"""Training RoIs for the box head: match proposals to lesions, sample, make targets.

Shape shorthand:
  B: images per batch.
  P: proposals per image.
  M: ground-truth boxes per image (padded rows have `gt_valid` False).
  S: RoIs sampled per image (`num_samples`; the paper: 32).

Boxes are `[ymin, xmin, ymax, xmax]` in absolute pixels of the network input.
As in Faster R-CNN, the ground-truth boxes join the proposals as candidates,
so every lesion has at least one foreground RoI from the first step on. A
candidate is foreground when its best IoU with a lesion is at least
`foreground_iou`, background when it is below `background_iou_high` and at
least `background_iou_low` (py-faster-rcnn: 0.5, 0.5, 0.1), and is otherwise
never sampled. Foreground RoIs are at most `foreground_fraction` of the sample.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from deeplesion_tf.ops import box_coder
from deeplesion_tf.ops import boxes as box_ops
from deeplesion_tf.ops import matcher
from deeplesion_tf.ops import sampler

BACKGROUND_CLASS = 0


class SampledRoIs(NamedTuple):
    """The box head's training RoIs and their targets.

    Attributes:
      boxes: `[B, S, 4]` RoIs (0 on padding rows).
      classes: `[B, S]` int32 target class: the matched lesion's class (>= 1)
        for foreground, `BACKGROUND_CLASS` otherwise.
      box_targets: `[B, S, 4]` deltas of the matched lesion against the RoI
        (`box_coder.RCNN_WEIGHTS`); meaningful on foreground rows only.
      valid: `[B, S]` bool, False on padding rows (not enough candidates).
    """

    boxes: tf.Tensor
    classes: tf.Tensor
    box_targets: tf.Tensor
    valid: tf.Tensor


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class RoISampler(keras.layers.Layer):
    """Samples `num_samples` RoIs per image among proposals and lesions (no weights)."""

    def __init__(self, *, num_samples: int = 32, foreground_fraction: float = 0.25,
                 foreground_iou: float = 0.5, background_iou_high: float = 0.5,
                 background_iou_low: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.num_samples = int(num_samples)
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_iou = float(foreground_iou)
        self.background_iou_high = float(background_iou_high)
        self.background_iou_low = float(background_iou_low)

    def call(self, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid,
             seed: Optional[tf.Tensor] = None):
        """Samples RoIs.

        Args:
          proposals: `[B, P, 4]`.
          proposal_valid: `[B, P]` bool.
          gt_boxes: `[B, M, 4]` lesion boxes.
          gt_classes: `[B, M]` int32 classes >= 1.
          gt_valid: `[B, M]` bool.
          seed: optional stateless seed `[2]` int32 (reproducible samples).

        Returns:
          `SampledRoIs`.
        """
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        candidates = tf.concat([tf.cast(proposals, tf.float32), gt_boxes], axis=1)
        candidate_valid = tf.concat([proposal_valid, gt_valid], axis=1)
        match = matcher.match(
            box_ops.pairwise_iou(candidates, gt_boxes), gt_valid,
            positive_threshold=self.foreground_iou, negative_threshold=self.background_iou_high,
            negative_lower_bound=self.background_iou_low, allow_low_quality_matches=False)
        labels = tf.where(candidate_valid, match.labels, matcher.IGNORE)
        sample = sampler.sample_balanced(labels, num_samples=self.num_samples,
                                         positive_fraction=self.foreground_fraction, seed=seed)
        boxes = tf.gather(candidates, sample.indices, batch_dims=1)
        gt_index = tf.gather(match.gt_index, sample.indices, batch_dims=1)
        matched_boxes = tf.gather(gt_boxes, gt_index, batch_dims=1)
        matched_classes = tf.gather(tf.cast(gt_classes, tf.int32), gt_index, batch_dims=1)
        foreground = tf.logical_and(sample.valid, tf.equal(sample.labels, matcher.POSITIVE))
        boxes = tf.where(sample.valid[..., tf.newaxis], boxes, 0.0)
        targets = box_coder.encode(matched_boxes, boxes, box_coder.RCNN_WEIGHTS)
        targets = tf.where(foreground[..., tf.newaxis], targets, 0.0)
        return SampledRoIs(
            boxes=tf.stop_gradient(boxes),
            classes=tf.where(foreground, matched_classes, BACKGROUND_CLASS),
            box_targets=tf.stop_gradient(targets),
            valid=sample.valid)

    def get_config(self):
        config = super().get_config()
        config.update(num_samples=self.num_samples, foreground_fraction=self.foreground_fraction,
                      foreground_iou=self.foreground_iou,
                      background_iou_high=self.background_iou_high,
                      background_iou_low=self.background_iou_low)
        return config
