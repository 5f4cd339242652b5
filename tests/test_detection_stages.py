"""Values of the weightless stages: proposals, RoI sampling, final detections."""

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.detection import detection_generator
from deeplesion_tf.detection import proposal_generator
from deeplesion_tf.detection import roi_sampler
from deeplesion_tf.ops import box_coder


def test_proposals_are_decoded_clipped_and_suppressed():
    anchors = tf.constant([[0., 0., 20., 20.], [1., 1., 21., 21.], [40., 40., 60., 60.],
                           [-10., 50., 10., 70.]])
    # Anchor 1 scores highest; anchor 0 overlaps it (IoU 0.82) and is suppressed.
    objectness = tf.constant([[1.0, 3.0, 2.0, 0.5]])
    deltas = np.zeros([1, 4, 4], np.float32)
    deltas[0, 2] = [0.5, 0.0, 0.0, 0.0]  # down by half its height: [50, 40, 70, 60], clipped
    layer = proposal_generator.ProposalGenerator(test_pre_nms_top_k=4, test_post_nms_top_k=3,
                                                 nms_iou_threshold=0.7)
    result = layer(objectness, deltas, anchors, image_size=(64, 64))
    np.testing.assert_allclose(result.boxes.numpy()[0], [[1., 1., 21., 21.], [50., 40., 63., 60.],
                                                         [0., 50., 10., 63.]], atol=1e-4)
    np.testing.assert_allclose(result.scores.numpy()[0], [3.0, 2.0, 0.5])
    assert result.valid.numpy().tolist() == [[True, True, True]]


def test_proposals_pad_when_nms_leaves_too_few():
    anchors = tf.constant([[0., 0., 20., 20.], [0., 0., 20., 20.]])
    layer = proposal_generator.ProposalGenerator(train_pre_nms_top_k=2, train_post_nms_top_k=2)
    result = layer(tf.constant([[1.0, 0.0]]), tf.zeros([1, 2, 4]), anchors,
                   image_size=(32, 32), training=True)
    assert result.valid.numpy().tolist() == [[True, False]]
    np.testing.assert_allclose(result.boxes.numpy()[0, 1], [0., 0., 0., 0.])


def test_roi_sampler_labels_and_targets():
    gt = tf.constant([[[10., 10., 30., 30.], [-1., -1., -1., -1.]]])
    gt_classes = tf.constant([[3, -1]])
    proposals = tf.constant([[[10., 10., 30., 32.],    # IoU 0.91: foreground
                              [20., 20., 40., 40.],    # IoU 0.14: background
                              [60., 60., 80., 80.],    # IoU 0: below 0.1, never sampled
                              [10., 10., 30., 30.]]])  # invalid proposal
    layer = roi_sampler.RoISampler(num_samples=4, foreground_fraction=0.5)
    rois = layer(proposals, tf.constant([[True, True, True, False]]), gt, gt_classes,
                 tf.constant([[True, False]]), seed=tf.constant([1, 2]))
    valid = rois.valid.numpy()[0]
    boxes = rois.boxes.numpy()[0][valid]
    classes = rois.classes.numpy()[0][valid]
    # Foreground: the good proposal and the lesion itself; background: one proposal.
    assert sorted(classes.tolist()) == [0, 3, 3]
    assert valid.sum() == 3
    found = {tuple(b) for b in boxes.tolist()}
    assert found == {(10., 10., 30., 32.), (10., 10., 30., 30.), (20., 20., 40., 40.)}
    targets = rois.box_targets.numpy()[0][valid]
    for box, cls, target in zip(boxes, classes, targets):
        if cls == 3:
            expected = box_coder.encode(gt[0, 0], tf.constant(box), box_coder.RCNN_WEIGHTS)
            np.testing.assert_allclose(target, expected.numpy(), atol=1e-5)
        else:
            np.testing.assert_allclose(target, 0.0)


def test_detections_decode_per_class_and_threshold():
    rois = tf.constant([[[10., 10., 30., 30.], [50., 50., 70., 70.], [0., 0., 8., 8.]]])
    # RoI 0: class 2 (p ~0.88); RoI 1: class 1 (p ~0.67); RoI 2: background.
    logits = tf.constant([[[0.0, 0.0, 3.0], [0.0, 1.5, 0.0], [4.0, 0.0, 0.0]]])
    deltas = np.zeros([1, 3, 2, 4], np.float32)
    deltas[0, 0, 1] = [1.0, 0.0, 0.0, 0.0]  # class 2 of RoI 0: down by 20 / 10 = 2 px
    layer = detection_generator.DetectionGenerator(score_threshold=0.5, max_detections=5)
    result = layer(logits, deltas, rois, tf.constant([[True, True, True]]),
                   image_size=(100, 100))
    assert result.num_detections.numpy().tolist() == [2]
    np.testing.assert_allclose(result.boxes.numpy()[0, :2],
                               [[12., 10., 32., 30.], [50., 50., 70., 70.]], atol=1e-4)
    assert result.classes.numpy()[0, :2].tolist() == [2, 1]
    expected = [np.exp(3) / (2 + np.exp(3)), np.exp(1.5) / (2 + np.exp(1.5))]
    np.testing.assert_allclose(result.scores.numpy()[0, :2], expected, rtol=1e-5)


def test_lesion_scores_rank_by_lesion_probability_with_one_nms():
    """`score="lesion"`: 1 - p(background), the most probable class's box, class-agnostic NMS."""
    rois = tf.constant([[[10., 10., 30., 30.], [12., 10., 32., 30.], [50., 50., 70., 70.]]])
    # RoI 0: p = (0.2, 0.42, 0.38): uncertain class, likely a lesion (0.8).
    # RoI 1 overlaps RoI 0 (IoU 0.82): p = (0.3, 0.05, 0.65).
    # RoI 2: p = (0.45, 0.0, 0.55): a confident class, a weaker lesion (0.55).
    probabilities = np.array([[[0.2, 0.42, 0.38], [0.3, 0.05, 0.65], [0.45, 1e-9, 0.55]]])
    logits = tf.constant(np.log(probabilities), tf.float32)
    deltas = tf.zeros([1, 3, 2, 4])
    valid = tf.constant([[True, True, True]])
    lesion = detection_generator.DetectionGenerator(score_threshold=0.5, score="lesion")(
        logits, deltas, rois, valid, image_size=(100, 100))
    assert lesion.num_detections.numpy().tolist() == [2]  # RoI 1 suppressed by RoI 0
    np.testing.assert_allclose(lesion.scores.numpy()[0, :2], [0.8, 0.55], rtol=1e-5)
    assert lesion.classes.numpy()[0].tolist() == [1, 2, 0, 0, 0]
    np.testing.assert_allclose(lesion.boxes.numpy()[0, :2], [[10., 10., 30., 30.],
                                                             [50., 50., 70., 70.]], atol=1e-4)
    # By class, the top is RoI 1's class 2 (0.65), and RoI 0 scores no class above 0.5.
    by_class = detection_generator.DetectionGenerator(score_threshold=0.5)(
        logits, deltas, rois, valid, image_size=(100, 100))
    np.testing.assert_allclose(by_class.scores.numpy()[0, :2], [0.65, 0.55], rtol=1e-5)
    with pytest.raises(ValueError, match="score must be one of class, lesion"):
        detection_generator.DetectionGenerator(score="objectness")


def test_lesion_and_class_scores_agree_for_one_class():
    rng = np.random.default_rng(0)
    centres = rng.uniform(10, 90, [2, 40, 2])
    rois = tf.constant(np.concatenate([centres - 6, centres + 6], -1), tf.float32)
    logits = tf.constant(rng.normal(0, 2, [2, 40, 2]), tf.float32)
    deltas = tf.constant(rng.normal(0, 0.5, [2, 40, 1, 4]), tf.float32)
    valid = tf.constant(rng.uniform(size=[2, 40]) < 0.9)
    results = [detection_generator.DetectionGenerator(score_threshold=0.3, max_detections=10,
                                                      score=score)(
        logits, deltas, rois, valid, image_size=(100, 100)) for score in ("class", "lesion")]
    assert results[0].num_detections.numpy().tolist() == results[1].num_detections.numpy().tolist()
    assert min(results[0].num_detections.numpy()) > 2
    for name in ("boxes", "scores", "classes"):
        np.testing.assert_allclose(getattr(results[0], name).numpy(),
                                   getattr(results[1], name).numpy(), atol=1e-5)


def test_stage_configs_round_trip():
    for layer in (proposal_generator.ProposalGenerator(test_post_nms_top_k=7, min_size=2.0),
                  roi_sampler.RoISampler(num_samples=8, background_iou_low=0.0),
                  detection_generator.DetectionGenerator(max_detections=3),
                  detection_generator.DetectionGenerator(score="lesion")):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
