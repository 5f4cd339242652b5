"""The RPN's anchors and training targets: the stage that owns them (as torchvision's RPN).

`RPNTargets` lays the anchors over a feature map (`anchors`) and turns the RPN head's
outputs and the lesion boxes into the RPN's two losses (`losses`, via
`losses.rpn_losses`). It has no weights; the settings are Faster R-CNN's by default
(anchors at IoU >= 0.7 positive, < 0.3 negative, 256 sampled per image, half positive,
anchors crossing the border left out as in py-faster-rcnn).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import tensorflow as tf

from deeplesion_tf.detection import losses
from deeplesion_tf.ops import anchors as anchors_lib


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class RPNTargets(keras.layers.Layer):
    """Anchors and the RPN's training targets.

    Args:
      anchor_sizes: anchor sides in input pixels (paper: 48, 72, 96).
      anchor_ratios: height / width ratios (paper: 0.5, 1, 2).
      stride: input pixels per feature position (8).
      positive_iou, negative_iou, num_samples, positive_fraction: the anchors'
        labels and samples (`losses.rpn_losses`).
      ignore_cross_boundary: anchors crossing the image border take no part in
        the RPN's training.
    """

    def __init__(self, *, anchor_sizes: Sequence[float] = anchors_lib.PAPER_ANCHOR_SIZES,
                 anchor_ratios: Sequence[float] = anchors_lib.PAPER_ANCHOR_RATIOS,
                 stride: int = 8, positive_iou: float = 0.7, negative_iou: float = 0.3,
                 num_samples: int = 256, positive_fraction: float = 0.5,
                 ignore_cross_boundary: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.stride = int(stride)
        self.positive_iou = float(positive_iou)
        self.negative_iou = float(negative_iou)
        self.num_samples = int(num_samples)
        self.positive_fraction = float(positive_fraction)
        self.ignore_cross_boundary = bool(ignore_cross_boundary)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature position."""
        return len(self.anchor_sizes) * len(self.anchor_ratios)

    def anchors(self, features: tf.Tensor) -> tf.Tensor:
        """`[N, 4]` anchors of a feature map `[B, h, w, C]`, N = h * w * A."""
        shape = tf.shape(features)
        return anchors_lib.anchor_grid(shape[1], shape[2], self.stride, self.anchor_sizes,
                                       self.anchor_ratios)

    def losses(self, objectness: tf.Tensor, deltas: tf.Tensor, anchors: tf.Tensor,
               gt_boxes: tf.Tensor, gt_valid: tf.Tensor, image_size,
               seed: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
        """`rpn_class_loss`, `rpn_box_loss` (`losses.rpn_losses`) of one batch."""
        return losses.rpn_losses(
            objectness, deltas, anchors, gt_boxes, gt_valid, positive_iou=self.positive_iou,
            negative_iou=self.negative_iou, num_samples=self.num_samples,
            positive_fraction=self.positive_fraction,
            image_size=image_size if self.ignore_cross_boundary else None, seed=seed)

    def get_config(self):
        config = super().get_config()
        config.update(anchor_sizes=list(self.anchor_sizes), anchor_ratios=list(self.anchor_ratios),
                      stride=self.stride, positive_iou=self.positive_iou,
                      negative_iou=self.negative_iou, num_samples=self.num_samples,
                      positive_fraction=self.positive_fraction,
                      ignore_cross_boundary=self.ignore_cross_boundary)
        return config
