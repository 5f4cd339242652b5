"""Region proposals from the RPN's outputs (Faster R-CNN's proposal layer).

Shape shorthand:
  B: images per batch.
  N: anchors of one image (`Hf * Wf * A`).
  P: proposals kept per image (`post_nms_top_k`).

Boxes are `[ymin, xmin, ymax, xmax]` in absolute pixels of the network input.
Per image: the `pre_nms_top_k` anchors with the highest objectness -> decode
their deltas -> clip to the image -> drop boxes smaller than `min_size` ->
NMS at `nms_iou_threshold` -> the best `post_nms_top_k`. Training and
inference keep different numbers (py-faster-rcnn: 12000/2000 and 6000/300).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import tensorflow as tf

from deeplesion_tf.ops import box_coder
from deeplesion_tf.ops import boxes as box_ops
from deeplesion_tf.ops import nms


class Proposals(NamedTuple):
    """Proposals of a batch, best first.

    Attributes:
      boxes: `[B, P, 4]` float32, clipped to the image; 0 on padding rows.
      scores: `[B, P]` float32 objectness logits; 0 on padding rows.
      valid: `[B, P]` bool, False on padding rows.
    """

    boxes: tf.Tensor
    scores: tf.Tensor
    valid: tf.Tensor


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class ProposalGenerator(keras.layers.Layer):
    """Top-k, decode, clip, size filter and NMS of the RPN's anchors (no weights)."""

    def __init__(self, *, train_pre_nms_top_k: int = 12000, train_post_nms_top_k: int = 2000,
                 test_pre_nms_top_k: int = 6000, test_post_nms_top_k: int = 300,
                 nms_iou_threshold: float = 0.7, min_size: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.train_pre_nms_top_k = int(train_pre_nms_top_k)
        self.train_post_nms_top_k = int(train_post_nms_top_k)
        self.test_pre_nms_top_k = int(test_pre_nms_top_k)
        self.test_post_nms_top_k = int(test_post_nms_top_k)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.min_size = float(min_size)

    def call(self, objectness, deltas, anchors, *, image_size, training=False):
        """Proposals of a batch.

        Args:
          objectness: `[B, N]` logits.
          deltas: `[B, N, 4]` RPN box deltas (`box_coder.RPN_WEIGHTS`).
          anchors: `[N, 4]` anchors, the order of `objectness`.
          image_size: `(height, width)` of the network input (ints or scalar tensors).
          training: selects the training or the test top-k.

        Returns:
          `Proposals` with `P = min(post_nms_top_k, pre_nms_top_k, N)` rows.
        """
        pre = self.train_pre_nms_top_k if training else self.test_pre_nms_top_k
        post = self.train_post_nms_top_k if training else self.test_post_nms_top_k
        objectness = tf.cast(objectness, tf.float32)
        deltas = tf.cast(deltas, tf.float32)
        num_anchors = anchors.shape[0]
        if num_anchors is not None:
            pre = min(pre, num_anchors)
            post = min(post, pre)
        else:
            pre = tf.minimum(pre, tf.shape(anchors)[0])
        scores, top = tf.math.top_k(objectness, k=pre, sorted=True)  # [B, pre]
        boxes = box_coder.decode(tf.gather(deltas, top, batch_dims=1), tf.gather(anchors, top),
                                 box_coder.RPN_WEIGHTS)
        height, width = image_size
        boxes = box_ops.clip_boxes(boxes, height, width)
        large = tf.logical_and(boxes[..., 2] - boxes[..., 0] >= self.min_size,
                               boxes[..., 3] - boxes[..., 1] >= self.min_size)
        # NMS keeps only scores above the threshold; small boxes fall below it.
        lowest = tf.float32.min
        scores = tf.where(large, scores, lowest)
        kept = nms.batched_nms(boxes, scores, max_output_size=post,
                               iou_threshold=self.nms_iou_threshold,
                               score_threshold=lowest / 2)
        valid = tf.sequence_mask(kept.num_valid, tf.shape(kept.scores)[1])
        return Proposals(
            boxes=tf.where(valid[..., tf.newaxis], kept.boxes, 0.0),
            scores=tf.where(valid, kept.scores, 0.0),
            valid=valid)

    def get_config(self):
        config = super().get_config()
        config.update(train_pre_nms_top_k=self.train_pre_nms_top_k,
                      train_post_nms_top_k=self.train_post_nms_top_k,
                      test_pre_nms_top_k=self.test_pre_nms_top_k,
                      test_post_nms_top_k=self.test_post_nms_top_k,
                      nms_iou_threshold=self.nms_iou_threshold, min_size=self.min_size)
        return config
