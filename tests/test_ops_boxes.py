"""Values of box areas, pairwise IoU and clipping, computed by hand."""

import numpy as np
import tensorflow as tf

from deeplesion_tf.ops import boxes

PADDING = [-1.0, -1.0, -1.0, -1.0]


def test_area_is_continuous_and_clamped_at_zero():
    got = boxes.area(tf.constant([[0., 0., 10., 4.],     # 10 x 4
                                  [2., 3., 2., 9.],      # zero height
                                  [5., 5., 3., 9.],      # inverted
                                  PADDING]))
    np.testing.assert_allclose(got, [40., 0., 0., 0.])


def test_pairwise_iou_hand_computed():
    a = tf.constant([[0., 0., 10., 10.],
                     [0., 0., 4., 4.]])
    b = tf.constant([[5., 5., 15., 15.],    # overlaps a[0] on 5 x 5
                     [0., 0., 10., 10.],    # equal to a[0], contains a[1]
                     [20., 20., 30., 30.],  # disjoint
                     PADDING])
    got = boxes.pairwise_iou(a, b)
    np.testing.assert_allclose(got, [[25. / 175., 1., 0., 0.],
                                     [0., 16. / 100., 0., 0.]], rtol=1e-6)


def test_pairwise_iou_of_empty_boxes_is_zero():
    point = tf.constant([[3., 3., 3., 3.]])
    np.testing.assert_array_equal(boxes.pairwise_iou(point, point), [[0.]])
    np.testing.assert_array_equal(boxes.pairwise_iou(tf.constant([PADDING]), tf.constant([PADDING])),
                                  [[0.]])


def test_pairwise_iou_batched_and_broadcast():
    a = tf.constant([[[0., 0., 2., 2.]],
                     [[0., 0., 4., 4.]]])          # [2, 1, 4]
    b = tf.constant([[[0., 0., 2., 4.], [1., 1., 3., 3.]]])  # [1, 2, 4]
    got = boxes.pairwise_iou(a, b)
    np.testing.assert_allclose(got, [[[4. / 8., 1. / 7.]],
                                     [[8. / 16., 4. / 16.]]], rtol=1e-6)


def test_pairwise_iou_matches_numpy_on_random_boxes():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, (2, 7, 2, 2)).astype(np.float32)
    low, high = corners.min(axis=2), corners.max(axis=2)  # [2, 7, 2] (y, x)
    b = np.concatenate([low, high], axis=-1)
    a, c = b[:, :3], b[:, 3:]
    top_left = np.maximum(a[:, :, None, :2], c[:, None, :, :2])
    bottom_right = np.minimum(a[:, :, None, 2:], c[:, None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(a[..., 2:] - a[..., :2], axis=-1)[:, :, None]
    area_c = np.prod(c[..., 2:] - c[..., :2], axis=-1)[:, None, :]
    np.testing.assert_allclose(boxes.pairwise_iou(a, c), inter / (area_a + area_c - inter),
                               rtol=1e-5, atol=1e-7)


def test_clip_boxes_to_last_pixel():
    got = boxes.clip_boxes(tf.constant([[-5., 3., 600., 700.],
                                        [10., -2., 20., 30.]]), 512, 256)
    np.testing.assert_allclose(got, [[0., 3., 511., 255.],
                                     [10., 0., 20., 30.]])


def test_clip_boxes_per_image_sizes_in_tf_function():
    clip = tf.function(boxes.clip_boxes)
    got = clip(tf.constant([[[-5., 3., 600., 700.]], [[-5., 3., 600., 700.]]]),
               tf.constant([[512.], [100.]]), tf.constant(50))
    np.testing.assert_allclose(got, [[[0., 3., 511., 49.]],
                                     [[0., 3., 99., 49.]]])
