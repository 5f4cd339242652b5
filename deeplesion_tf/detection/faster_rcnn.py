"""The two-stage detector of the paper (Sec. 2.3): Faster R-CNN on a VGG16 trunk.

Shape shorthand:
  B: images per batch; H, W: the network input's rows and columns.
  h, w: the feature map (`H / 8`, `W / 8`: VGG16 without pool4).
  N: anchors per image (`h * w * A`, A = sizes x ratios = 9 in the paper).
  P: proposals per image; S: sampled RoIs per image; M: lesions per image.
  K: foreground classes; D: detections per image.

Boxes are `[ymin, xmin, ymax, xmax]` in absolute pixels of the network input
throughout (`deeplesion_tf.data.detector_pipeline` makes them so).

The model is a composition, each stage its own layer:
  backbone -> rpn_head -> proposal_generator -> (training: roi_sampler) ->
  roi_pooler -> box_head -> (inference: detection_generator).
`call` runs inference; `compute_losses` runs the training graph and returns
the four losses, optimised jointly.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import keras
import tensorflow as tf

from deeplesion_tf.detection import backbone as backbone_lib
from deeplesion_tf.detection import box_head as box_head_lib
from deeplesion_tf.detection import detection_generator as detection_generator_lib
from deeplesion_tf.detection import losses
from deeplesion_tf.detection import proposal_generator as proposal_generator_lib
from deeplesion_tf.detection import roi_pooler as roi_pooler_lib
from deeplesion_tf.detection import roi_sampler as roi_sampler_lib
from deeplesion_tf.detection import rpn_head as rpn_head_lib
from deeplesion_tf.nets import vgg16
from deeplesion_tf.ops import anchors as anchors_lib

LOSS_NAMES = ("rpn_class_loss", "rpn_box_loss", "rcnn_class_loss", "rcnn_box_loss")
# The stages that handle box coordinates run in float32 under a mixed precision
# policy too: float16 resolves a 512-pixel coordinate to 0.25 px only.
_BOX_DTYPE = "float32"


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class FasterRCNN(keras.Model):
    """Faster R-CNN composed of its stages.

    Args:
      backbone: images `[B, H, W, 3]` in [0, 1] -> features `[B, h, w, C]`.
      rpn_head: `RPNHead` with `len(anchor_sizes) * len(anchor_ratios)` anchors.
      proposal_generator: `ProposalGenerator`.
      roi_sampler: `RoISampler` (training only).
      roi_pooler: `RoIPooler` with the backbone's stride.
      box_head: `BoxHead`.
      detection_generator: `DetectionGenerator`.
      anchor_sizes: anchor sides in input pixels (paper: 48, 72, 96).
      anchor_ratios: height / width ratios (paper: 0.5, 1, 2).
      stride: input pixels per feature position (8).
      rpn_positive_iou, rpn_negative_iou, rpn_num_samples, rpn_positive_fraction:
        RPN training targets (Faster R-CNN: 0.7, 0.3, 256, 0.5).
      rpn_ignore_cross_boundary: anchors crossing the image border take no part
        in the RPN's training (py-faster-rcnn), see `losses.rpn_losses`.
      category_loss_weight: weight of the box head's category term
        (`losses.rcnn_losses`' `category_weight`; 1 is the plain softmax loss).
    """

    def __init__(self, backbone, rpn_head, proposal_generator, roi_sampler, roi_pooler,
                 box_head, detection_generator, *,
                 anchor_sizes: Sequence[float] = anchors_lib.PAPER_ANCHOR_SIZES,
                 anchor_ratios: Sequence[float] = anchors_lib.PAPER_ANCHOR_RATIOS,
                 stride: int = backbone_lib.STRIDE, rpn_positive_iou: float = 0.7,
                 rpn_negative_iou: float = 0.3, rpn_num_samples: int = 256,
                 rpn_positive_fraction: float = 0.5, rpn_ignore_cross_boundary: bool = True,
                 category_loss_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.rpn_head = rpn_head
        self.proposal_generator = proposal_generator
        self.roi_sampler = roi_sampler
        self.roi_pooler = roi_pooler
        self.box_head = box_head
        self.detection_generator = detection_generator
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.stride = int(stride)
        self.rpn_positive_iou = float(rpn_positive_iou)
        self.rpn_negative_iou = float(rpn_negative_iou)
        self.rpn_num_samples = int(rpn_num_samples)
        self.rpn_positive_fraction = float(rpn_positive_fraction)
        self.rpn_ignore_cross_boundary = bool(rpn_ignore_cross_boundary)
        if category_loss_weight < 0:
            raise ValueError(f"category_loss_weight must be >= 0, got {category_loss_weight}")
        self.category_loss_weight = float(category_loss_weight)

    @property
    def num_classes(self) -> int:
        return self.box_head.num_classes

    def build(self, input_shape):
        # The stages' shapes follow from the image's; one pass creates every variable.
        shape = [d if d is not None else 64 for d in input_shape]
        self.call(tf.zeros([1] + shape[1:]))
        self.built = True

    def _anchors(self, features: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(features)
        return anchors_lib.anchor_grid(shape[1], shape[2], self.stride, self.anchor_sizes,
                                       self.anchor_ratios)  # [N, 4]

    def call(self, images, training=False) -> Dict[str, tf.Tensor]:
        """Detections of `images` `[B, H, W, 3]` (windowed slices in [0, 1]).

        Returns:
          dict of `nms.Detections`: `boxes` `[B, D, 4]`, `scores` `[B, D]`,
          `classes` `[B, D]` (1..K, 0 on padding), `num_detections` `[B]`.
        """
        image_size = (tf.shape(images)[1], tf.shape(images)[2])
        features = self.backbone(images, training=training)
        rpn = self.rpn_head(features)
        proposals = self.proposal_generator(rpn["objectness"], rpn["deltas"],
                                            self._anchors(features), image_size=image_size,
                                            training=False)
        head = self.box_head(self.roi_pooler(features, proposals.boxes), training=training)
        detections = self.detection_generator(head["class_logits"], head["deltas"],
                                              proposals.boxes, proposals.valid,
                                              image_size=image_size)
        return detections._asdict()

    def compute_losses(self, images, gt_boxes, gt_classes, num_lesions,
                       training: bool = True, seed: Optional[tf.Tensor] = None
                       ) -> Dict[str, tf.Tensor]:
        """The four losses of a batch (means over this replica's sampled rows).

        Args:
          images: `[B, H, W, 3]`.
          gt_boxes: `[B, M, 4]` lesion boxes, padded rows -1.
          gt_classes: `[B, M]` int32 classes >= 1, padded rows -1.
          num_lesions: `[B]` int32, the real rows of `gt_boxes`.
          training: the mode of the backbone and head layers.
          seed: optional stateless seed `[2]` int32 for the anchor and RoI samples.

        Returns:
          `rpn_class_loss`, `rpn_box_loss`, `rcnn_class_loss`, `rcnn_box_loss`,
          `total_loss` (their sum) and `rpn_recall` (lesions with a proposal
          of IoU >= 0.5; not a loss).
        """
        rpn_seed = roi_seed = None
        if seed is not None:
            rpn_seed, roi_seed = seed, seed + tf.constant([0, 1], seed.dtype)
        image_size = (tf.shape(images)[1], tf.shape(images)[2])
        gt_valid = tf.sequence_mask(num_lesions, tf.shape(gt_boxes)[1])
        features = self.backbone(images, training=training)
        rpn = self.rpn_head(features)
        anchors = self._anchors(features)
        result = losses.rpn_losses(
            rpn["objectness"], rpn["deltas"], anchors, gt_boxes, gt_valid,
            positive_iou=self.rpn_positive_iou, negative_iou=self.rpn_negative_iou,
            num_samples=self.rpn_num_samples, positive_fraction=self.rpn_positive_fraction,
            image_size=image_size if self.rpn_ignore_cross_boundary else None, seed=rpn_seed)
        # Proposals are inputs of the second stage, not a path for its gradients.
        proposals = self.proposal_generator(
            tf.stop_gradient(rpn["objectness"]), tf.stop_gradient(rpn["deltas"]), anchors,
            image_size=image_size, training=True)
        rois = self.roi_sampler(proposals.boxes, proposals.valid, gt_boxes, gt_classes,
                                gt_valid, seed=roi_seed)
        head = self.box_head(self.roi_pooler(features, rois.boxes), training=training)
        result.update(losses.rcnn_losses(head["class_logits"], head["deltas"], rois.classes,
                                         rois.box_targets, rois.valid,
                                         category_weight=self.category_loss_weight))
        result["total_loss"] = tf.add_n([result[name] for name in LOSS_NAMES])
        result["rpn_recall"] = losses.rpn_recall(proposals.boxes, proposals.valid, gt_boxes,
                                                 gt_valid)
        return result

    def get_config(self):
        config = super().get_config()
        for name in ("backbone", "rpn_head", "proposal_generator", "roi_sampler", "roi_pooler",
                     "box_head", "detection_generator"):
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        config.update(anchor_sizes=list(self.anchor_sizes), anchor_ratios=list(self.anchor_ratios),
                      stride=self.stride, rpn_positive_iou=self.rpn_positive_iou,
                      rpn_negative_iou=self.rpn_negative_iou,
                      rpn_num_samples=self.rpn_num_samples,
                      rpn_positive_fraction=self.rpn_positive_fraction,
                      rpn_ignore_cross_boundary=self.rpn_ignore_cross_boundary,
                      category_loss_weight=self.category_loss_weight)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("backbone", "rpn_head", "proposal_generator", "roi_sampler", "roi_pooler",
                     "box_head", "detection_generator"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)


def build_faster_rcnn(*, num_classes: int, weights=None, width_multiplier: float = 1.0,
                      frozen_blocks: int = 0, backbone_norm: str = "none",
                      fc_units: int = 4096,
                      anchor_sizes: Sequence[float] = anchors_lib.PAPER_ANCHOR_SIZES,
                      anchor_ratios: Sequence[float] = anchors_lib.PAPER_ANCHOR_RATIOS,
                      rpn_channels: Optional[int] = None,
                      train_pre_nms_top_k: int = 12000, train_post_nms_top_k: int = 2000,
                      test_pre_nms_top_k: int = 6000, test_post_nms_top_k: int = 300,
                      rpn_nms_iou: float = 0.7, rpn_positive_iou: float = 0.7,
                      rpn_negative_iou: float = 0.3, rpn_num_samples: int = 256,
                      rpn_positive_fraction: float = 0.5, rpn_ignore_cross_boundary: bool = True,
                      category_loss_weight: float = 1.0, rois_per_image: int = 32,
                      foreground_fraction: float = 0.25, foreground_iou: float = 0.5,
                      background_iou_high: float = 0.5, background_iou_low: float = 0.1,
                      roi_pooling: str = "max", pool_size: int = 7,
                      score_threshold: float = 0.5, detection_nms_iou: float = 0.3,
                      max_detections: int = 5, detection_score: str = "class",
                      fc_from_vgg16: bool = True,
                      image_size: Optional[int] = None,
                      name: str = "faster_rcnn") -> FasterRCNN:
    """A `FasterRCNN` from plain settings (the paper's by default).

    Args:
      num_classes: K foreground classes (1 for single-class detection).
      weights: None, "imagenet" or a local Keras VGG16 weights file.
      width_multiplier: scales every convolution (1 for the paper; pretrained
        weights need 1).
      frozen_blocks: VGG16 blocks kept fixed (with pretrained weights).
      backbone_norm: "none" (the paper) or "group" (`backbone.build_backbone`'s `norm`).
      fc_units: units of the box head's FC6 and FC7 (4096 as VGG16).
      rpn_channels: the RPN's 3x3 conv; by default the trunk's width.
      fc_from_vgg16: with `weights`, FC6/FC7 of the box head start from
        VGG16's classifier (`fc1`, `fc2`), as in the paper; the file must have it.
      detection_score: "class" (the paper) or "lesion"
        (`detection_generator.DetectionGenerator`'s `score`).
      image_size: when given, the model is built on `[1, image_size, image_size, 3]`.
      The rest: see the stages' docstrings.
    """
    num_anchors = len(anchor_sizes) * len(anchor_ratios)
    channels = max(1, int(round(512 * width_multiplier)))
    model = FasterRCNN(
        backbone=backbone_lib.build_backbone(weights=weights, width_multiplier=width_multiplier,
                                             frozen_blocks=frozen_blocks, norm=backbone_norm),
        rpn_head=rpn_head_lib.RPNHead(num_anchors=num_anchors,
                                      channels=rpn_channels or channels, name="rpn_head"),
        proposal_generator=proposal_generator_lib.ProposalGenerator(
            train_pre_nms_top_k=train_pre_nms_top_k, train_post_nms_top_k=train_post_nms_top_k,
            test_pre_nms_top_k=test_pre_nms_top_k, test_post_nms_top_k=test_post_nms_top_k,
            nms_iou_threshold=rpn_nms_iou, name="proposal_generator", dtype=_BOX_DTYPE),
        roi_sampler=roi_sampler_lib.RoISampler(
            num_samples=rois_per_image, foreground_fraction=foreground_fraction,
            foreground_iou=foreground_iou, background_iou_high=background_iou_high,
            background_iou_low=background_iou_low, name="roi_sampler", dtype=_BOX_DTYPE),
        roi_pooler=roi_pooler_lib.RoIPooler(output_size=pool_size, stride=backbone_lib.STRIDE,
                                            method=roi_pooling, name="roi_pooler",
                                            dtype=_BOX_DTYPE),
        box_head=box_head_lib.BoxHead(num_classes=num_classes, fc_units=fc_units,
                                      name="box_head"),
        detection_generator=detection_generator_lib.DetectionGenerator(
            score_threshold=score_threshold, nms_iou_threshold=detection_nms_iou,
            max_detections=max_detections, score=detection_score,
            name="detection_generator", dtype=_BOX_DTYPE),
        anchor_sizes=anchor_sizes, anchor_ratios=anchor_ratios, stride=backbone_lib.STRIDE,
        rpn_positive_iou=rpn_positive_iou, rpn_negative_iou=rpn_negative_iou,
        rpn_num_samples=rpn_num_samples, rpn_positive_fraction=rpn_positive_fraction,
        rpn_ignore_cross_boundary=rpn_ignore_cross_boundary,
        category_loss_weight=category_loss_weight, name=name)
    if fc_from_vgg16 and weights is not None and (fc_units, pool_size) != (4096, 7):
        raise ValueError(f"VGG16's FC6/FC7 fit fc_units=4096 and pool_size=7, not {fc_units} "
                         f"and {pool_size}; pass fc_from_vgg16=False to initialise them randomly")
    if image_size is not None or weights is not None:
        # One pass on zeros creates the variables (`FasterRCNN.build`).
        model.build((1, image_size or 224, image_size or 224, 3))
    if fc_from_vgg16 and weights is not None:
        try:
            fc = vgg16.fc_weights(weights)
        except ValueError as error:
            raise ValueError(f"{error}; the box head's FC6/FC7 start from VGG16's classifier "
                             "(paper), so give a weights file with it, or pass "
                             "fc_from_vgg16=False") from error
        model.box_head.load_fc_weights(fc)
    return model
