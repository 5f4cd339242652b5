"""The RPN head: values and row order for hand-set weights, initialisation, training, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.detection import rpn_head


def _conv3x3_same(features, kernel, bias):
    """[B, h, w, C] (*) [3, 3, C, F], zero padding, by loops."""
    batch, height, width, _ = features.shape
    padded = np.pad(features, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((batch, height, width, kernel.shape[-1]))
    for y in range(height):
        for x in range(width):
            window = padded[:, y:y + 3, x:x + 3, :]  # [B, 3, 3, C]
            out[:, y, x] = np.einsum("bijc,ijcf->bf", window, kernel) + bias
    return out


def test_values_and_order_for_hand_set_weights():
    rng = np.random.default_rng(0)
    num_anchors, channels = 2, 3
    features = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # h = 3, w = 4
    head = rpn_head.RPNHead(num_anchors=num_anchors, channels=channels)
    head.build(features.shape)
    conv = [rng.normal(size=(3, 3, 5, 3)), rng.normal(size=3)]
    objectness = [rng.normal(size=(1, 1, 3, 2)), np.array([0.5, -0.5])]
    deltas = [rng.normal(size=(1, 1, 3, 8)), np.arange(8) / 10.0]
    head.conv.set_weights(conv)
    head.objectness_conv.set_weights(objectness)
    head.deltas_conv.set_weights(deltas)
    got = head(features)

    hidden = np.maximum(_conv3x3_same(features, *conv), 0)  # [B, 3, 4, 3]
    expected_objectness = np.zeros((2, 3 * 4 * num_anchors))
    expected_deltas = np.zeros((2, 3 * 4 * num_anchors, 4))
    for y in range(3):
        for x in range(4):
            for a in range(num_anchors):
                row = (y * 4 + x) * num_anchors + a
                expected_objectness[:, row] = hidden[:, y, x] @ objectness[0][0, 0, :, a] + objectness[1][a]
                for j in range(4):  # ty, tx, th, tw of anchor a: channel 4a + j
                    expected_deltas[:, row, j] = (hidden[:, y, x] @ deltas[0][0, 0, :, 4 * a + j]
                                                  + deltas[1][4 * a + j])
    np.testing.assert_allclose(got["objectness"], expected_objectness, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["deltas"], expected_deltas, rtol=1e-5, atol=1e-5)


def test_initialisation_is_normal_001_and_zero_bias():
    keras.utils.set_random_seed(0)
    head = rpn_head.RPNHead(num_anchors=9, channels=256)
    head.build((None, None, None, 128))
    for conv in (head.conv, head.objectness_conv, head.deltas_conv):
        kernel, bias = conv.get_weights()
        assert 0.0095 < kernel.std() < 0.0105 and abs(kernel.mean()) < 0.001
        np.testing.assert_array_equal(bias, 0.0)
    assert head.objectness_conv.get_weights()[0].shape == (1, 1, 256, 9)
    assert head.deltas_conv.get_weights()[0].shape == (1, 1, 256, 36)


def test_every_weight_changes_after_a_training_step():
    keras.utils.set_random_seed(1)
    head = rpn_head.RPNHead(num_anchors=3, channels=4)
    features = np.random.default_rng(1).uniform(size=(2, 4, 4, 6)).astype(np.float32)
    head(features)
    before = [w.numpy().copy() for w in head.trainable_weights]
    assert len(before) == 6
    optimizer = keras.optimizers.SGD(1.0)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            out = head(x)
            loss = tf.reduce_sum(out["objectness"]) + tf.reduce_sum(out["deltas"])
        optimizer.apply_gradients(zip(tape.gradient(loss, head.trainable_weights),
                                      head.trainable_weights))

    step(tf.constant(features))
    for old, new in zip(before, head.trainable_weights):
        assert not np.array_equal(old, new.numpy()), new.path


def test_unknown_spatial_size_in_a_tf_function():
    head = rpn_head.RPNHead(num_anchors=2, channels=3)
    fn = tf.function(head, input_signature=[tf.TensorSpec([None, None, None, 5])])
    features = np.random.default_rng(2).normal(size=(1, 5, 3, 5)).astype(np.float32)
    got = fn(features)
    np.testing.assert_allclose(got["objectness"], head(features)["objectness"], atol=1e-6)
    assert got["deltas"].shape == (1, 5 * 3 * 2, 4)


def test_config_round_trip():
    head = rpn_head.RPNHead(num_anchors=3, channels=7, name="rpn")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, rpn_head.RPNHead)
    assert (restored.num_anchors, restored.channels, restored.name) == (3, 7, "rpn")
    assert restored.get_config() == head.get_config()
    with pytest.raises(ValueError, match="num_anchors"):
        rpn_head.RPNHead(num_anchors=0)
