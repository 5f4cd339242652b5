"""Final detections from the box head: per-class decode, per-class NMS, top scores.

Shape shorthand:
  B: images per batch.
  R: RoIs per image.
  K: foreground classes.
  D: detections per image (`max_detections`).

Boxes are `[ymin, xmin, ymax, xmax]` in absolute pixels of the network input.

Scores (`score`):
  "class" (Faster R-CNN, the paper): each RoI gives one box per class
    (class-specific regression) scored by the softmax probability of that
    class. Per class, boxes above `score_threshold` go through NMS at
    `nms_iou_threshold`; the best `max_detections` over all classes are kept
    (the paper: score > 0.5, at most 5 per image).
  "lesion": each RoI gives one box, that of its most probable class, scored by
    the probability that it is a lesion at all, `1 - p(background)`; boxes
    above `score_threshold` go through one class-agnostic NMS. With several
    classes a lesion whose category is uncertain (split between two
    clusters) keeps its full lesion score instead of the larger share, and
    one lesion gives one detection, not one per likely class. With one
    class, both modes give the same detections.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from deeplesion_tf.ops import box_coder
from deeplesion_tf.ops import boxes as box_ops
from deeplesion_tf.ops import nms

# `DetectionGenerator(score=...)`, see the module docstring.
SCORES = ("class", "lesion")


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class DetectionGenerator(keras.layers.Layer):
    """Box head outputs -> `nms.Detections` (no weights)."""

    def __init__(self, *, score_threshold: float = 0.5, nms_iou_threshold: float = 0.3,
                 max_detections: int = 5, score: str = "class", **kwargs):
        super().__init__(**kwargs)
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        self.score = score
        self.score_threshold = float(score_threshold)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.max_detections = int(max_detections)

    def call(self, class_logits, deltas, rois, roi_valid, *, image_size):
        """Detections of a batch.

        Args:
          class_logits: `[B, R, K + 1]`, column 0 the background.
          deltas: `[B, R, K, 4]` class-specific deltas (`box_coder.RCNN_WEIGHTS`).
          rois: `[B, R, 4]`.
          roi_valid: `[B, R]` bool.
          image_size: `(height, width)` of the network input.

        Returns:
          `nms.Detections` with `D = max_detections` rows, best first; classes
          1..K, 0 on padding rows.
        """
        probabilities = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., 1:]
        scores = tf.where(roi_valid[..., tf.newaxis], probabilities, 0.0)  # [B, R, K]
        boxes = box_coder.decode(tf.cast(deltas, tf.float32),
                                 tf.cast(rois, tf.float32)[:, :, tf.newaxis, :],
                                 box_coder.RCNN_WEIGHTS)  # [B, R, K, 4]
        height, width = image_size
        boxes = box_ops.clip_boxes(boxes, height, width)
        if self.score == "lesion":
            return self._lesion_detections(boxes, scores)
        return nms.multiclass_nms(boxes, scores, max_per_class=self.max_detections,
                                  max_total=self.max_detections,
                                  iou_threshold=self.nms_iou_threshold,
                                  score_threshold=self.score_threshold)

    def _lesion_detections(self, boxes, scores):
        """`score="lesion"`: `boxes` `[B, R, K, 4]`, `scores` `[B, R, K]` -> `nms.Detections`."""
        best = tf.argmax(scores, axis=-1, output_type=tf.int32)  # [B, R]
        lesion_scores = tf.reduce_sum(scores, axis=-1)  # 1 - p(background); 0 if invalid
        best_boxes = tf.gather(boxes, best, batch_dims=2)  # [B, R, 4]
        kept = nms.batched_nms(best_boxes, lesion_scores, max_output_size=self.max_detections,
                               iou_threshold=self.nms_iou_threshold,
                               score_threshold=self.score_threshold)
        is_valid = kept.indices >= 0
        classes = tf.gather(best, tf.maximum(kept.indices, 0), batch_dims=1) + 1
        return nms.Detections(boxes=kept.boxes, scores=kept.scores,
                              classes=tf.where(is_valid, classes, 0),
                              num_detections=kept.num_valid)

    def get_config(self):
        config = super().get_config()
        config.update(score=self.score, score_threshold=self.score_threshold,
                      nms_iou_threshold=self.nms_iou_threshold,
                      max_detections=self.max_detections)
        return config
