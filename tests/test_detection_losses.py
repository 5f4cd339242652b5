"""Values of the four Faster R-CNN losses and the RPN recall on hand-made cases."""

import math

import numpy as np
import tensorflow as tf

from deeplesion_tf.detection import losses
from deeplesion_tf.ops import box_coder


def _bce(logit, label):
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_smooth_l1_both_sides_of_beta():
    values = losses.smooth_l1(tf.constant([0.5, -2.0, 0.05, 1.0]), 1.0).numpy()
    np.testing.assert_allclose(values[:2], [0.125, 1.5], rtol=1e-6)
    small = losses.smooth_l1(tf.constant([0.05, -1.0]), 1.0 / 9.0).numpy()
    np.testing.assert_allclose(small, [0.5 * 0.0025 * 9.0, 1.0 - 0.5 / 9.0], rtol=1e-5)


def test_rpn_losses_hand_case():
    # Anchor 0 is the lesion (positive), anchor 1 is far (negative), anchor 2
    # overlaps with IoU 0.4 (ignored: between 0.3 and 0.7). The lesion's other
    # slot is padding.
    anchors = tf.constant([[0., 0., 10., 10.], [50., 50., 60., 60.], [0., 0., 10., 4.]])
    gt = tf.constant([[[0., 0., 10., 10.], [-1., -1., -1., -1.]]])
    gt_valid = tf.constant([[True, False]])
    objectness = tf.constant([[2.0, -1.0, 0.3]])
    deltas = tf.constant([[[0.1, -0.2, 0.05, 0.0], [9., 9., 9., 9.], [9., 9., 9., 9.]]])
    result = losses.rpn_losses(objectness, deltas, anchors, gt, gt_valid, num_samples=4,
                               positive_fraction=0.5)
    expected_class = (_bce(2.0, 1) + _bce(-1.0, 0)) / 2
    np.testing.assert_allclose(result["rpn_class_loss"].numpy(), expected_class, rtol=1e-5)
    # Target of anchor 0 is 0; smooth L1 with beta 1/9 of its deltas, over 2 sampled anchors.
    beta = losses.RPN_SMOOTH_L1_BETA
    per = [0.5 * 0.01 / beta, 0.2 - 0.5 * beta, 0.5 * 0.0025 / beta, 0.0]
    np.testing.assert_allclose(result["rpn_box_loss"].numpy(), sum(per) / 2, rtol=1e-5)


def test_rpn_losses_image_without_lesions_trains_only_background():
    anchors = tf.constant([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    gt = -tf.ones([1, 1, 4])
    result = losses.rpn_losses(tf.constant([[0.5, -0.5]]), tf.ones([1, 2, 4]), anchors, gt,
                               tf.constant([[False]]), num_samples=2, positive_fraction=0.5)
    np.testing.assert_allclose(result["rpn_class_loss"].numpy(),
                               (_bce(0.5, 0) + _bce(-0.5, 0)) / 2, rtol=1e-5)
    assert result["rpn_box_loss"].numpy() == 0.0


def test_rcnn_losses_hand_case():
    logits = tf.constant([[[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    classes = tf.constant([[2, 0, 1]])
    valid = tf.constant([[True, True, False]])
    deltas = np.zeros([1, 3, 2, 4], np.float32)
    deltas[0, 0, 1] = [0.5, 0.0, 0.0, 3.0]   # row 0 is class 2: its deltas are [.., 1, :]
    deltas[0, 0, 0] = [100.] * 4              # class 1's deltas: not this row's class
    targets = np.zeros([1, 3, 4], np.float32)
    result = losses.rcnn_losses(logits, deltas, classes, targets, valid)

    def ce(row, label):
        return -(row[label] - math.log(sum(math.exp(v) for v in row)))

    np.testing.assert_allclose(result["rcnn_class_loss"].numpy(),
                               (ce([0.0, 1.0, -1.0], 2) + ce([2.0, 0.0, 0.0], 0)) / 2, rtol=1e-5)
    np.testing.assert_allclose(result["rcnn_box_loss"].numpy(), (0.125 + 2.5) / 2, rtol=1e-5)


def test_rcnn_category_weight_scales_the_category_term_only():
    # Row 0: class 2 of [0, 1, -1]; row 1: background of [2, 0, 0]; row 2: padding.
    logits = tf.constant([[[0.0, 1.0, -1.0], [2.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    classes = tf.constant([[2, 0, 1]])
    valid = tf.constant([[True, True, False]])
    deltas = np.zeros([1, 3, 2, 4], np.float32)
    targets = np.zeros([1, 3, 4], np.float32)
    e = math.exp
    z0 = 1 + e(1) + e(-1)
    lesion = -math.log((e(1) + e(-1)) / z0)         # -log(1 - p(background)) of row 0
    category = -math.log(e(-1) / (e(1) + e(-1)))    # -log p(class 2 | lesion) of row 0
    background = -math.log(e(2) / (e(2) + 2))       # row 1 is background: no category term
    for weight in (0.0, 0.25, 1.0, 2.0):
        result = losses.rcnn_losses(logits, deltas, classes, targets, valid,
                                    category_weight=weight)
        np.testing.assert_allclose(result["rcnn_class_loss"].numpy(),
                                   (lesion + weight * category + background) / 2, rtol=1e-5)
    # One class: the category term is 0, so the weight changes nothing.
    one = tf.constant([[[0.3, -0.2], [1.0, 0.5]]])
    expected = losses.rcnn_losses(one, np.zeros([1, 2, 1, 4], np.float32), tf.constant([[1, 0]]),
                                  np.zeros([1, 2, 4], np.float32), tf.constant([[True, True]]))
    got = losses.rcnn_losses(one, np.zeros([1, 2, 1, 4], np.float32), tf.constant([[1, 0]]),
                             np.zeros([1, 2, 4], np.float32), tf.constant([[True, True]]),
                             category_weight=0.1)
    np.testing.assert_allclose(got["rcnn_class_loss"], expected["rcnn_class_loss"], rtol=1e-6)


def test_rpn_recall_counts_lesions_with_a_good_proposal():
    gt = tf.constant([[[0., 0., 10., 10.], [20., 20., 30., 30.], [-1., -1., -1., -1.]]])
    proposals = tf.constant([[[0., 0., 10., 11.], [20., 20., 30., 30.]]])
    # The second proposal is padding, so only the first lesion is found.
    recall = losses.rpn_recall(proposals, tf.constant([[True, False]]), gt,
                               tf.constant([[True, True, False]]))
    np.testing.assert_allclose(recall.numpy(), 0.5)


def test_rpn_box_targets_use_the_rpn_coder():
    anchors = tf.constant([[0., 0., 10., 10.]])
    gt = tf.constant([[[1., 1., 11., 11.]]])
    target = box_coder.encode(gt[0], anchors, box_coder.RPN_WEIGHTS)
    result = losses.rpn_losses(tf.constant([[0.0]]), target[tf.newaxis], anchors, gt,
                               tf.constant([[True]]), num_samples=1, positive_fraction=1.0)
    np.testing.assert_allclose(result["rpn_box_loss"].numpy(), 0.0, atol=1e-7)


def test_rpn_ignores_anchors_crossing_the_border():
    # Anchor 0 is the lesion but sticks out of the 32x32 image; anchor 1 is inside.
    anchors = tf.constant([[-4., 0., 12., 10.], [16., 16., 26., 26.]])
    gt = tf.constant([[[-4., 0., 12., 10.]]])
    objectness = tf.constant([[3.0, -2.0]])
    inside_only = losses.rpn_losses(objectness, tf.zeros([1, 2, 4]), anchors, gt,
                                    tf.constant([[True]]), num_samples=2,
                                    positive_fraction=0.5, image_size=(32, 32))
    # Only anchor 1 is sampled, as a negative.
    np.testing.assert_allclose(inside_only["rpn_class_loss"].numpy(), _bce(-2.0, 0), rtol=1e-5)
    everything = losses.rpn_losses(objectness, tf.zeros([1, 2, 4]), anchors, gt,
                                   tf.constant([[True]]), num_samples=2, positive_fraction=0.5)
    np.testing.assert_allclose(everything["rpn_class_loss"].numpy(),
                               (_bce(3.0, 1) + _bce(-2.0, 0)) / 2, rtol=1e-5)
