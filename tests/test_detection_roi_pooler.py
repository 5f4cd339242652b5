"""RoI pooling: against a loop-and-bilinear numpy reference, gradients, serialization."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.detection import roi_pooler


def _bilinear(image, y, x):
    """image [h, w, C] at (y, x), coordinates clamped to the map."""
    h, w, _ = image.shape
    y = min(max(y, 0.0), h - 1.0)
    x = min(max(x, 0.0), w - 1.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * image[y0, x0] + (1 - ly) * lx * image[y0, x1]
            + ly * (1 - lx) * image[y1, x0] + ly * lx * image[y1, x1])


def _reference(features, rois, output_size, stride, sampling_ratio, method):
    batch, _, _, channels = features.shape
    out = np.zeros((batch, rois.shape[1], output_size, output_size, channels), np.float64)
    for b in range(batch):
        for r in range(rois.shape[1]):
            y0, x0, y1, x1 = [(float(v) + 0.5) / stride - 0.5 for v in rois[b, r]]
            bin_h, bin_w = (y1 - y0) / output_size, (x1 - x0) / output_size
            for i in range(output_size):
                for j in range(output_size):
                    samples = []
                    for sy in range(sampling_ratio):
                        y = y0 + i * bin_h + (sy + 0.5) * bin_h / sampling_ratio
                        for sx in range(sampling_ratio):
                            x = x0 + j * bin_w + (sx + 0.5) * bin_w / sampling_ratio
                            samples.append(_bilinear(features[b].astype(np.float64), y, x))
                    samples = np.stack(samples)
                    out[b, r, i, j] = samples.max(0) if method == "max" else samples.mean(0)
    return out


def _random_rois(rng, batch, count, size):
    """Boxes of the input image, some partly or wholly outside it, one of zero area."""
    corners = rng.uniform(-0.3 * size, 1.3 * size, (batch, count, 2, 2))
    low, high = corners.min(2), corners.max(2)  # [B, R, 2] (y, x)
    rois = np.concatenate([low, high], axis=-1)
    rois[:, 0] = [3.0, 5.0, 3.0, 5.0]  # a point
    rois[:, 1] = [-40.0, -40.0, -10.0, -20.0]  # wholly above-left of the image
    return rois.astype(np.float32)


@pytest.mark.parametrize("method", ["max", "align"])
@pytest.mark.parametrize("output_size,sampling_ratio", [(7, 2), (3, 1), (2, 3)])
def test_matches_loop_reference(method, output_size, sampling_ratio):
    rng = np.random.default_rng(output_size * 10 + sampling_ratio)
    features = rng.normal(size=(2, 6, 9, 3)).astype(np.float32)  # an input of 48 x 72
    rois = _random_rois(rng, 2, 6, 64)
    pooler = roi_pooler.RoIPooler(output_size=output_size, stride=8, method=method,
                                  sampling_ratio=sampling_ratio)
    got = pooler(features, rois).numpy()
    expected = _reference(features, rois, output_size, 8, sampling_ratio, method)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_linear_features_by_hand():
    # f(y, x) = 10 y + x is reproduced exactly by bilinear interpolation, so a
    # bin's mean of samples is f at the bin centre and its max f at its last sample.
    y, x = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    features = (10 * y + x).astype(np.float32)[None, :, :, None]
    # Pixels [ymin, xmin, ymax, xmax] = [4, 12, 36, 28] -> feature [0.0625, 1.0625, 4.0625, 3.0625].
    rois = np.array([[[4.0, 12.0, 36.0, 28.0]]], np.float32)
    align = roi_pooler.RoIPooler(output_size=2, method="align")(features, rois).numpy()
    # Bins 2 x 1 feature cells: centres y = 1.0625, 3.0625 and x = 1.5625, 2.5625.
    np.testing.assert_allclose(align[0, 0, :, :, 0],
                               [[12.1875, 13.1875], [32.1875, 33.1875]], atol=1e-5)
    maximum = roi_pooler.RoIPooler(output_size=2, method="max")(features, rois).numpy()
    # Last samples of the bins: y = 1.5625, 3.5625 and x = 1.8125, 2.8125.
    np.testing.assert_allclose(maximum[0, 0, :, :, 0],
                               [[17.4375, 18.4375], [37.4375, 38.4375]], atol=1e-5)
    # Wholly below-right of the map: every sample clamps to the last cell (no zeros).
    outside = roi_pooler.RoIPooler(output_size=2)(features, np.array([[[90.0, 90, 120, 99]]]))
    np.testing.assert_allclose(outside.numpy(), np.full((1, 1, 2, 2, 1), 77.0))


def test_gradient_reaches_the_features():
    rng = np.random.default_rng(1)
    features = tf.Variable(rng.normal(size=(2, 8, 8, 4)).astype(np.float32))
    rois = _random_rois(rng, 2, 5, 64)
    for method in ("max", "align"):
        pooler = roi_pooler.RoIPooler(output_size=3, method=method)
        with tf.GradientTape() as tape:
            pooled = pooler(features, rois)
            loss = tf.reduce_sum(pooled)
        grad = tape.gradient(loss, features).numpy()
        assert np.all(np.isfinite(grad)) and np.any(grad != 0)
        # Each output is a mean of samples ("align") or one sample ("max"), and a
        # sample's bilinear weights sum to 1, clamped or not.
        np.testing.assert_allclose(grad.sum(axis=(0, 1, 2)), np.full(4, 2 * 5 * 3 * 3), rtol=1e-5)


def test_many_rois_in_a_tf_function_with_unknown_shapes():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
    rois = _random_rois(rng, 2, 2000, 128)
    pooler = roi_pooler.RoIPooler()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 4]),
                                  tf.TensorSpec([None, None, 4])])
    def pool(f, r):
        return pooler(f, r)

    got = pool(features, rois).numpy()
    assert got.shape == (2, 2000, 7, 7, 4)
    expected = _reference(features[:, :, :, :1], rois[:, :3], 7, 8, 2, "max")
    np.testing.assert_allclose(got[:, :3, ..., :1], expected, atol=1e-5)
    np.testing.assert_allclose(got, pooler(features, rois).numpy(), atol=1e-6)


def test_runs_under_a_distribution_strategy():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    rois = _random_rois(rng, 2, 4, 48)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        pooler = roi_pooler.RoIPooler(output_size=2, method="align")
        kernel = tf.Variable(tf.ones([3]))

    @tf.function
    def step(f, r):
        def replica_fn(f, r):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(pooler(f * kernel, r))
            return loss, tape.gradient(loss, kernel)
        return strategy.run(replica_fn, args=(f, r))

    loss, grad = step(tf.constant(features), tf.constant(rois))
    expected = _reference(features, rois, 2, 8, 2, "align")
    np.testing.assert_allclose(loss, expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(grad, expected.sum(axis=(0, 1, 2, 3)), rtol=1e-5)


def test_config_round_trip_and_validation():
    pooler = roi_pooler.RoIPooler(output_size=5, stride=4, method="align", sampling_ratio=3,
                                  name="pool")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pooler))
    assert isinstance(restored, roi_pooler.RoIPooler)
    assert restored.get_config() == pooler.get_config()
    features = np.random.default_rng(3).normal(size=(1, 6, 6, 2)).astype(np.float32)
    rois = np.array([[[1.0, 2.0, 17.0, 13.0]]], np.float32)
    np.testing.assert_array_equal(restored(features, rois), pooler(features, rois))
    with pytest.raises(ValueError, match="method"):
        roi_pooler.RoIPooler(method="average")
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_pooler.RoIPooler(sampling_ratio=0)
