"""The box coder: one encode by hand, round trips, the clamp of decode."""

import math

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.ops import box_coder


def _random_boxes(rng, shape):
    centre = rng.uniform(0., 512., shape + (2,))
    size = rng.uniform(4., 200., shape + (2,))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1).astype(np.float32)


def test_encode_hand_computed():
    anchor = [0., 0., 10., 20.]   # centre (5, 10), 10 x 20
    box = [2., 4., 22., 14.]      # centre (12, 9), 20 x 10
    np.testing.assert_allclose(box_coder.encode(box, anchor),
                               [0.7, -0.05, math.log(2.), math.log(0.5)], rtol=1e-6)
    np.testing.assert_allclose(box_coder.encode(box, anchor, box_coder.RCNN_WEIGHTS),
                               [7., -0.5, 5. * math.log(2.), 5. * math.log(0.5)], rtol=1e-6)


def test_encode_of_anchor_itself_is_zero():
    anchor = tf.constant([[3., 7., 40., 19.]])
    np.testing.assert_allclose(box_coder.encode(anchor, anchor), [[0., 0., 0., 0.]], atol=1e-7)


@pytest.mark.parametrize("weights", [box_coder.RPN_WEIGHTS, box_coder.RCNN_WEIGHTS])
def test_round_trip_on_random_boxes(weights):
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, (2, 50))
    anchors = _random_boxes(rng, (50,))  # broadcast over the batch
    deltas = box_coder.encode(boxes, anchors, weights)
    np.testing.assert_allclose(box_coder.decode(deltas, anchors, weights), boxes, atol=2e-3)
    np.testing.assert_allclose(box_coder.encode(box_coder.decode(deltas, anchors, weights), anchors,
                                                weights), deltas, atol=1e-4)


def test_decode_broadcasts_anchors_and_works_in_tf_function():
    anchors = tf.constant([[0., 0., 10., 10.], [10., 10., 30., 50.]])  # [2, 4]
    deltas = tf.zeros([3, 2, 4])
    got = tf.function(box_coder.decode)(deltas, anchors)
    np.testing.assert_allclose(got, np.broadcast_to(anchors, (3, 2, 4)))


def test_decode_clamps_scale_after_dividing_by_weights():
    anchor = [0., 0., 16., 16.]   # centre (8, 8)
    limit = 1000.  # 16 * exp(BBOX_SCALE_CLAMP)
    huge = box_coder.decode([0., 0., 50., 50.], anchor)
    np.testing.assert_allclose(huge, [8. - limit / 2, 8. - limit / 2, 8. + limit / 2, 8. + limit / 2],
                               rtol=1e-5)
    # With weights 5, th = 5 * 4 = 20 is exp(4) (below the clamp, log(62.5) = 4.135).
    below = box_coder.decode([0., 0., 20., 0.], anchor, box_coder.RCNN_WEIGHTS)
    h = 16. * math.exp(4.)
    np.testing.assert_allclose(below, [8. - h / 2, 0., 8. + h / 2, 16.], rtol=1e-5)
    # th = 5 * 4.2 is clamped to exp(log(62.5)) = 62.5 times the anchor.
    above = box_coder.decode([0., 0., 21., 0.], anchor, box_coder.RCNN_WEIGHTS)
    np.testing.assert_allclose(above, [8. - limit / 2, 0., 8. + limit / 2, 16.], rtol=1e-5)
    # Shrinking is not clamped.
    tiny = box_coder.decode([0., 0., -5., 0.], anchor)
    np.testing.assert_allclose(tiny[2] - tiny[0], 16. * math.exp(-5.), rtol=1e-4)
