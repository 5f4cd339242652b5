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
  backbone -> rpn_head (+ rpn_targets: anchors, training targets) ->
  proposal_generator -> (training: roi_sampler) -> roi_pooler -> box_head ->
  (inference: detection_generator).
`build_faster_rcnn(config)` builds it from a `config.DetectorConfig`.
`call` runs inference; `compute_losses` runs the training graph and returns
the four losses, optimised jointly.
"""

from __future__ import annotations

from typing import Dict, Optional

import keras
import tensorflow as tf
from absl import logging

from deeplesion_tf.detection import backbone as backbone_lib
from deeplesion_tf.detection import context_fusion as context_fusion_lib
from deeplesion_tf.detection import box_head as box_head_lib
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import detection_generator as detection_generator_lib
from deeplesion_tf.detection import losses
from deeplesion_tf.detection import proposal_generator as proposal_generator_lib
from deeplesion_tf.detection import roi_pooler as roi_pooler_lib
from deeplesion_tf.detection import roi_sampler as roi_sampler_lib
from deeplesion_tf.detection import rpn_head as rpn_head_lib
from deeplesion_tf.detection import rpn_targets as rpn_targets_lib
from deeplesion_tf.nets import trunk_file
from deeplesion_tf.nets import vgg16

LOSS_NAMES = ("rpn_class_loss", "rpn_box_loss", "rcnn_class_loss", "rcnn_box_loss")
# The stages that handle box coordinates run in float32 under a mixed precision
# policy too: float16 resolves a 512-pixel coordinate to 0.25 px only.
_BOX_DTYPE = "float32"


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class FasterRCNN(keras.Model):
    """Faster R-CNN composed of its stages.

    Args:
      backbone: images `[B, H, W, 3]` in [0, 1] -> features `[B, h, w, C]`.
      rpn_head: `RPNHead` with `rpn_targets.num_anchors` anchors per position.
      rpn_targets: `RPNTargets`: the anchors and the RPN's training targets.
      proposal_generator: `ProposalGenerator`.
      roi_sampler: `RoISampler` (training only).
      roi_pooler: `RoIPooler` with the backbone's stride.
      box_head: `BoxHead` (with its loss's category weight).
      detection_generator: `DetectionGenerator`.
      context_fusion: None (3-slice images), or a `ContextFusion` of M images (3DCE):
        the images are then `[B, H, W, 3M]`, the RPN runs on the central image's
        features and RoI pooling on the fused map (`context_fusion`).
    """

    def __init__(self, backbone, rpn_head, rpn_targets, proposal_generator, roi_sampler,
                 roi_pooler, box_head, detection_generator, context_fusion=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.context_fusion = context_fusion
        self.rpn_head = rpn_head
        self.rpn_targets = rpn_targets
        self.proposal_generator = proposal_generator
        self.roi_sampler = roi_sampler
        self.roi_pooler = roi_pooler
        self.box_head = box_head
        self.detection_generator = detection_generator

    @property
    def num_classes(self) -> int:
        return self.box_head.num_classes

    def build(self, input_shape):
        # The stages' shapes follow from the image's; one pass creates every variable.
        shape = [d if d is not None else 64 for d in input_shape]
        self.call(tf.zeros([1] + shape[1:]))
        self.built = True

    @property
    def num_context_images(self) -> int:
        return 1 if self.context_fusion is None else self.context_fusion.num_images

    def _features(self, images, training):
        """`(features for the RPN, features for RoI pooling)`, both `[B, h, w, C]`."""
        if self.context_fusion is None:
            features = self.backbone(images, training=training)
            return features, features
        maps = self.context_fusion(self.backbone(context_fusion_lib.split_context_images(
            images, self.context_fusion.num_images), training=training))
        return maps["central"], maps["fused"]

    def call(self, images, training=False) -> Dict[str, tf.Tensor]:
        """Detections of `images` `[B, H, W, 3]` (windowed slices in [0, 1]; `3M` with
        a context fusion).

        Returns:
          dict of `nms.Detections`: `boxes` `[B, D, 4]`, `scores` `[B, D]`,
          `classes` `[B, D]` (1..K, 0 on padding), `num_detections` `[B]`.
        """
        image_size = (tf.shape(images)[1], tf.shape(images)[2])
        features, pooled = self._features(images, training)
        rpn = self.rpn_head(features)
        proposals = self.proposal_generator(rpn["objectness"], rpn["deltas"],
                                            self.rpn_targets.anchors(features),
                                            image_size=image_size, training=False)
        head = self.box_head(self.roi_pooler(pooled, proposals.boxes), training=training)
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
        features, pooled = self._features(images, training)
        rpn = self.rpn_head(features)
        anchors = self.rpn_targets.anchors(features)
        result = self.rpn_targets.losses(rpn["objectness"], rpn["deltas"], anchors, gt_boxes,
                                         gt_valid, image_size, seed=rpn_seed)
        # Proposals are inputs of the second stage, not a path for its gradients.
        proposals = self.proposal_generator(
            tf.stop_gradient(rpn["objectness"]), tf.stop_gradient(rpn["deltas"]), anchors,
            image_size=image_size, training=True)
        rois = self.roi_sampler(proposals.boxes, proposals.valid, gt_boxes, gt_classes,
                                gt_valid, seed=roi_seed)
        head = self.box_head(self.roi_pooler(pooled, rois.boxes), training=training)
        result.update(losses.rcnn_losses(head["class_logits"], head["deltas"], rois.classes,
                                         rois.box_targets, rois.valid,
                                         category_weight=self.box_head.category_loss_weight))
        result["total_loss"] = tf.add_n([result[name] for name in LOSS_NAMES])
        result["rpn_recall"] = losses.rpn_recall(proposals.boxes, proposals.valid, gt_boxes,
                                                 gt_valid)
        return result

    def get_config(self):
        config = super().get_config()
        for name in _STAGES:
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        if self.context_fusion is not None:
            config["context_fusion"] = keras.saving.serialize_keras_object(self.context_fusion)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in _STAGES + ("context_fusion",):
            if name in config:
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)


_STAGES = ("backbone", "rpn_head", "rpn_targets", "proposal_generator", "roi_sampler",
           "roi_pooler", "box_head", "detection_generator")


def _load_fitting_fc(box_head, weights: str) -> None:
    """FC6/FC7 of a saved trunk into the box head, each where its shapes fit.

    The categorizer's FC6 reads pool5 of its patches (2 x 2 cells at 64 px), the
    box head's the 7 x 7 pooled RoI, so at CPU sizes only FC7 usually fits; a
    layer that does not fit keeps its random initialisation, and the log says so.
    """
    saved = trunk_file.fc_arrays(weights)
    shapes = box_head.fc_shapes()
    fitting = [k for k in ("fc6", "fc7")
               if k in saved and [a.shape for a in saved[k]] == shapes[k]]
    box_head.load_fc_weights(saved, layers=fitting)
    for key in ("fc6", "fc7"):
        if key not in fitting:
            logging.info("The box head's %s starts randomly: the trunk's %s (%s) does not fit %s",
                         key, key, [a.shape for a in saved[key]] if key in saved else "absent",
                         shapes[key])
    if fitting:
        logging.info("The box head's %s start from the trunk %s", ", ".join(fitting), weights)


def build_faster_rcnn(config: config_lib.DetectorConfig, *,
                      name: str = "faster_rcnn") -> FasterRCNN:
    """A `FasterRCNN` from a `config.DetectorConfig` (the paper's by default).

    Args:
      config: every stage's settings; `config.backbone.weights` (None,
        "imagenet" or a local Keras VGG16 weights file) initialise the trunk and,
        with `config.box_head.fc_from_vgg16`, FC6/FC7 of the box head.
      name: the model's name.

    The model is built on `[1, S, S, 3]` (`S = config.inputs.image_size`).

    Raises:
      ValueError: FC6/FC7 from VGG16 asked for a box head of another shape, or
        a weights file without the classifier.
    """
    backbone_config, rpn, head = config.backbone, config.rpn, config.box_head
    proposals, sampler, detections = config.proposals, config.roi_sampler, config.detections
    # The RPN head's conv is as wide as conv5_3 unless the config says otherwise.
    channels = vgg16.channels(vgg16.BLOCKS[-1][0], backbone_config.width_multiplier)
    weights = backbone_config.weights
    own_trunk = trunk_file.is_trunk(weights)
    fc_from_vgg16 = head.fc_from_vgg16 and weights is not None
    if fc_from_vgg16 and not own_trunk and (head.fc_units, config.pooler.output_size) != (4096, 7):
        raise ValueError(f"VGG16's FC6/FC7 fit fc_units=4096 and pool_size=7, not {head.fc_units} "
                         f"and {config.pooler.output_size}; pass fc_from_vgg16=False to "
                         "initialise them randomly")
    rpn_targets = rpn_targets_lib.RPNTargets(
        anchor_sizes=rpn.anchor_sizes, anchor_ratios=rpn.anchor_ratios,
        stride=backbone_lib.STRIDE, positive_iou=rpn.positive_iou,
        negative_iou=rpn.negative_iou, num_samples=rpn.num_samples,
        positive_fraction=rpn.positive_fraction,
        ignore_cross_boundary=rpn.ignore_cross_boundary, name="rpn_targets")
    model = FasterRCNN(
        backbone=backbone_lib.build_backbone(
            weights=weights, width_multiplier=backbone_config.width_multiplier,
            frozen_blocks=backbone_config.frozen_blocks, norm=backbone_config.norm),
        rpn_head=rpn_head_lib.RPNHead(num_anchors=rpn_targets.num_anchors,
                                      channels=rpn.channels or channels, name="rpn_head"),
        rpn_targets=rpn_targets,
        proposal_generator=proposal_generator_lib.ProposalGenerator(
            train_pre_nms_top_k=proposals.train_pre_nms_top_k,
            train_post_nms_top_k=proposals.train_post_nms_top_k,
            test_pre_nms_top_k=proposals.test_pre_nms_top_k,
            test_post_nms_top_k=proposals.test_post_nms_top_k,
            nms_iou_threshold=proposals.nms_iou, name="proposal_generator", dtype=_BOX_DTYPE),
        roi_sampler=roi_sampler_lib.RoISampler(
            num_samples=sampler.num_samples, foreground_fraction=sampler.foreground_fraction,
            foreground_iou=sampler.foreground_iou, background_iou_high=sampler.background_iou_high,
            background_iou_low=sampler.background_iou_low, name="roi_sampler", dtype=_BOX_DTYPE),
        roi_pooler=roi_pooler_lib.RoIPooler(output_size=config.pooler.output_size,
                                            stride=backbone_lib.STRIDE,
                                            method=config.pooler.method, name="roi_pooler",
                                            dtype=_BOX_DTYPE),
        box_head=box_head_lib.BoxHead(num_classes=head.num_classes, fc_units=head.fc_units,
                                      category_loss_weight=head.category_loss_weight,
                                      name="box_head"),
        detection_generator=detection_generator_lib.DetectionGenerator(
            score_threshold=detections.score_threshold, nms_iou_threshold=detections.nms_iou,
            max_detections=detections.max_detections, score=detections.score,
            name="detection_generator", dtype=_BOX_DTYPE),
        context_fusion=None if backbone_config.num_context_images == 1 else
        context_fusion_lib.ContextFusion(num_images=backbone_config.num_context_images,
                                         channels=channels, name="context_fusion"),
        name=name)
    # One pass on zeros creates the variables (`FasterRCNN.build`).
    size = config.inputs.image_size
    model.build((1, size, size, 3 * backbone_config.num_context_images))
    if fc_from_vgg16 and own_trunk:
        _load_fitting_fc(model.box_head, weights)
    elif fc_from_vgg16:
        try:
            fc = vgg16.fc_weights(weights)
        except ValueError as error:
            raise ValueError(f"{error}; the box head's FC6/FC7 start from VGG16's classifier "
                             "(paper), so give a weights file with it, or pass "
                             "fc_from_vgg16=False") from error
        model.box_head.load_fc_weights(fc)
    return model
