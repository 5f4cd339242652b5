"""The box head: values for hand-set weights, VGG16 FC loading, training, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.detection import box_head


def _set_random_weights(head, rng):
    for layer in (head.fc6, head.fc7, head.classifier, head.regressor):
        layer.set_weights([rng.normal(size=w.shape) for w in layer.weights])


def test_values_for_hand_set_weights():
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(2, 3, 2, 2, 2)).astype(np.float32)  # B=2, R=3, P=2, C=2
    head = box_head.BoxHead(num_classes=2, fc_units=5)
    head.build(pooled.shape)
    _set_random_weights(head, rng)
    got = head(pooled)
    w6, b6 = head.fc6.get_weights()
    w7, b7 = head.fc7.get_weights()
    wc, bc = head.classifier.get_weights()
    wd, bd = head.regressor.get_weights()
    assert w6.shape == (8, 5) and wc.shape == (5, 3) and wd.shape == (5, 8)
    for b in range(2):
        for r in range(3):
            flat = pooled[b, r].reshape(-1)  # row-major (y, x, c)
            hidden = np.maximum(np.maximum(flat @ w6 + b6, 0) @ w7 + b7, 0)
            np.testing.assert_allclose(got["class_logits"][b, r], hidden @ wc + bc,
                                       rtol=1e-5, atol=1e-5)
            for k in (1, 2):  # class k's deltas are columns 4(k - 1) .. 4(k - 1) + 3
                columns = slice(4 * (k - 1), 4 * k)
                np.testing.assert_allclose(got["deltas"][b, r, k - 1],
                                           hidden @ wd[:, columns] + bd[columns],
                                           rtol=1e-5, atol=1e-5)


def test_initialisation_of_the_predictors():
    keras.utils.set_random_seed(0)
    head = box_head.BoxHead(num_classes=4, fc_units=1024)
    head.build((None, None, 2, 2, 4))
    for layer, std in ((head.classifier, 0.01), (head.regressor, 0.001)):
        kernel, bias = layer.get_weights()
        assert 0.93 * std < kernel.std() < 1.07 * std
        np.testing.assert_array_equal(bias, 0.0)


def test_load_fc_weights_copies_values_and_checks_shapes():
    rng = np.random.default_rng(1)
    head = box_head.BoxHead(num_classes=1, fc_units=6)
    head.build((None, None, 3, 3, 2))
    fc = {"fc6": [rng.normal(size=(18, 6)).astype(np.float32), rng.normal(size=6).astype(np.float32)],
          "fc7": [rng.normal(size=(6, 6)).astype(np.float32), rng.normal(size=6).astype(np.float32)]}
    head.load_fc_weights(fc)
    for key, layer in (("fc6", head.fc6), ("fc7", head.fc7)):
        for ours, given in zip(layer.get_weights(), fc[key]):
            np.testing.assert_array_equal(ours, given)

    fresh = box_head.BoxHead(num_classes=1, fc_units=6)
    fresh.build((None, None, 2, 2, 2))  # FC6 expects 8 inputs, not 18
    before = fresh.fc7.get_weights()[0].copy()
    with pytest.raises(ValueError, match=r"fc6 weights of shapes \[\(18, 6\), \(6,\)\] do not fit "
                                         r"the layer's \[kernel, bias\] shapes \[\(8, 6\), \(6,\)\]"):
        fresh.load_fc_weights(fc)
    np.testing.assert_array_equal(fresh.fc7.get_weights()[0], before)  # nothing half-loaded
    with pytest.raises(ValueError, match="before loading"):
        box_head.BoxHead(num_classes=1).load_fc_weights(fc)
    with pytest.raises(ValueError, match="lacks"):
        head.load_fc_weights({"fc6": fc["fc6"]})


def test_every_weight_changes_after_a_training_step():
    keras.utils.set_random_seed(2)
    head = box_head.BoxHead(num_classes=2, fc_units=8, dropout_rate=0.5)
    pooled = np.random.default_rng(2).uniform(size=(2, 4, 2, 2, 3)).astype(np.float32)
    head(pooled)
    before = [w.numpy().copy() for w in head.trainable_weights]
    assert len(before) == 8
    optimizer = keras.optimizers.SGD(1.0)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            out = head(x, training=True)
            loss = tf.reduce_sum(out["class_logits"][..., 1:]) + tf.reduce_sum(out["deltas"])
            loss += tf.reduce_sum(out["class_logits"][..., 0])
        optimizer.apply_gradients(zip(tape.gradient(loss, head.trainable_weights),
                                      head.trainable_weights))

    step(tf.constant(pooled))
    for old, new in zip(before, head.trainable_weights):
        assert not np.array_equal(old, new.numpy()), new.path
    # Dropout only when training.
    np.testing.assert_array_equal(head(pooled)["class_logits"], head(pooled)["class_logits"])


def test_config_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    head = box_head.BoxHead(num_classes=3, fc_units=4, dropout_rate=0.25, name="box")
    pooled = rng.normal(size=(1, 2, 2, 2, 1)).astype(np.float32)
    inputs = keras.Input((None, 2, 2, 1))
    model = keras.Model(inputs, head(inputs))
    _set_random_weights(head, rng)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, box_head.BoxHead)
    assert restored.get_config() == head.get_config()
    model.save(tmp_path / "head.keras")
    loaded = keras.saving.load_model(tmp_path / "head.keras")
    for key in ("class_logits", "deltas"):
        np.testing.assert_allclose(loaded(pooled)[key], model(pooled)[key], atol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        box_head.BoxHead(num_classes=0)
