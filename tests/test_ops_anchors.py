"""Anchors against coordinates written out by hand."""

import math

import numpy as np
import tensorflow as tf

from deeplesion_tf.ops import anchors

SQRT2 = math.sqrt(2.0)


def test_anchor_shapes_size_major_with_area_size_squared():
    got = anchors.anchor_shapes((16., 32.), (0.5, 1., 2.))
    expected = [[16. / SQRT2, 16. * SQRT2],   # ratio h/w 0.5: wide
                [16., 16.],
                [16. * SQRT2, 16. / SQRT2],   # ratio 2: tall
                [32. / SQRT2, 32. * SQRT2],
                [32., 32.],
                [32. * SQRT2, 32. / SQRT2]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_anchor_grid_hand_computed_stride_8():
    # A 2 x 3 feature map, stride 8: centres at 3.5 + 8 * index.
    grid = anchors.anchor_grid(2, 3, 8, sizes=(16., 32.), ratios=(1., 4.))
    a = 4  # anchors per position: (16, r1), (16, r4), (32, r1), (32, r4)
    assert grid.shape == (2 * 3 * a, 4)
    # Position (0, 0), size 16 ratio 1: centre (3.5, 3.5), 16 x 16.
    np.testing.assert_allclose(grid[0], [-4.5, -4.5, 11.5, 11.5])
    # Position (0, 0), size 16 ratio 4: h = 32, w = 8.
    np.testing.assert_allclose(grid[1], [-12.5, -0.5, 19.5, 7.5])
    # Position (0, 2) (third column), size 32 ratio 1: centre (3.5, 19.5).
    np.testing.assert_allclose(grid[2 * a + 2], [-12.5, 3.5, 19.5, 35.5])
    # Position (1, 0) (second row), size 32 ratio 4: centre (11.5, 3.5), h 64, w 16.
    np.testing.assert_allclose(grid[3 * a + 3], [-20.5, -4.5, 43.5, 11.5])
    # Position (1, 2), the last one, size 16 ratio 1: centre (11.5, 19.5).
    np.testing.assert_allclose(grid[5 * a], [3.5, 11.5, 19.5, 27.5])


def test_anchor_grid_paper_defaults():
    assert anchors.PAPER_ANCHOR_SIZES == (48., 72., 96.)
    assert anchors.PAPER_ANCHOR_RATIOS == (0.5, 1., 2.)
    grid = anchors.anchor_grid(1, 2, 16)
    centre_x = 16. + 7.5  # second column
    h, w = 96. * SQRT2, 96. / SQRT2  # last anchor: size 96, ratio 2
    np.testing.assert_allclose(grid[-1], [7.5 - h / 2, centre_x - w / 2, 7.5 + h / 2, centre_x + w / 2],
                               rtol=1e-6)
    # Areas are size ** 2, for each size over the ratios.
    areas = (grid[:9, 2] - grid[:9, 0]) * (grid[:9, 3] - grid[:9, 1])
    np.testing.assert_allclose(areas, np.repeat([48. ** 2, 72. ** 2, 96. ** 2], 3), rtol=1e-5)


def test_anchor_grid_tensor_sizes_in_tf_function():
    grid = tf.function(lambda h, w: anchors.anchor_grid(h, w, 8, sizes=(16., 32.), ratios=(1., 4.)))
    got = grid(tf.constant(2), tf.constant(3))
    np.testing.assert_allclose(got, anchors.anchor_grid(2, 3, 8, sizes=(16., 32.), ratios=(1., 4.)))
