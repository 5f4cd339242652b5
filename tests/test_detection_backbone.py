"""The detector's VGG16 trunk: stride, preprocessing, pool4 removed, freezing, weight loading."""

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.categorize import vgg16_features
from deeplesion_tf.detection import backbone
from deeplesion_tf.nets import vgg16

_NARROW = dict(width_multiplier=1 / 16)
_CONVOLUTIONS = [f"block{b}_conv{i}" for b, (_, n) in enumerate(vgg16.BLOCKS, 1)
                 for i in range(1, n + 1)]


def test_output_stride_is_8_for_any_input_size():
    model = backbone.build_backbone(**_NARROW)
    assert backbone.STRIDE == 8
    for (height, width), expected in (((64, 64), (8, 8)), ((60, 52), (8, 7)),
                                      ((8, 9), (1, 2)), ((17, 23), (3, 3))):
        features = model(np.zeros((2, height, width, 3), np.float32))
        assert features.shape == (2, *expected, 32)


def test_pool4_and_pool5_are_removed():
    model = backbone.build_backbone(**_NARROW)
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pools == ["block1_pool", "block2_pool", "block3_pool"]
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
            ] == _CONVOLUTIONS
    assert model.layers[-1].name == "block5_conv3"
    # conv4_1 sees the stride-8 map of pool3, conv5_1 the same resolution.
    for name in ("block3_pool", "block4_conv3", "block5_conv3"):
        assert model.get_layer(name).output.shape[1:3] == (None, None)
    probe = keras.Model(model.input, [model.get_layer("block3_pool").output, model.output])
    pool3, conv5_3 = probe(np.zeros((1, 32, 40, 3), np.float32))
    assert pool3.shape[1:3] == conv5_3.shape[1:3] == (4, 5)


def test_preprocessing_of_a_hand_made_pixel():
    # R, G, B = 1.0, 0.5, 0.0 -> 255 * BGR - ImageNet BGR means.
    pixel = np.array([[[[1.0, 0.5, 0.0]]]], np.float32)
    got = vgg16.VGG16Preprocessing()(pixel).numpy()
    np.testing.assert_allclose(got[0, 0, 0], [0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68],
                               rtol=1e-6)
    images = np.random.default_rng(0).uniform(size=(2, 5, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(vgg16.VGG16Preprocessing()(images),
                               keras.applications.vgg16.preprocess_input(images * 255.0),
                               atol=1e-4)
    model = backbone.build_backbone(**_NARROW)
    assert isinstance(model.layers[1], vgg16.VGG16Preprocessing)


def test_width_multiplier_scales_the_channels():
    for multiplier, filters in ((1 / 16, [4, 8, 16, 32, 32]), (0.25, [16, 32, 64, 128, 128])):
        model = backbone.build_backbone(width_multiplier=multiplier)
        assert [model.get_layer(f"block{b}_conv1").filters for b in range(1, 6)] == filters
        assert model.output_shape == (None, None, None, filters[-1])
    with pytest.raises(ValueError, match="fit only width_multiplier=1.0"):
        backbone.build_backbone(weights="imagenet", width_multiplier=0.5)


def test_group_norm_between_each_convolution_and_its_relu():
    model = backbone.build_backbone(width_multiplier=0.25, norm="group")
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.GroupNormalization)]
    assert [layer.name for layer in norms] == [f"{name}_norm" for name in _CONVOLUTIONS]
    # Up to 32 groups of at least 4 channels: 16 -> 4, 32 -> 8, 64 -> 16, 128 -> 32.
    assert [model.get_layer(f"block{b}_conv1_norm").groups for b in range(1, 6)] == [
        4, 8, 16, 32, 32]
    assert model.get_layer("block1_conv1").activation is keras.activations.linear
    assert vgg16._num_groups(24) == 6 and vgg16._num_groups(3) == 1
    assert vgg16._num_groups(512) == 32 and vgg16._num_groups(20) == 5
    # Each image is normalised on its own: one image's output does not depend on the batch.
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(3, 32, 32, 3)).astype(np.float32)
    together = model(images).numpy()
    alone = model(images[1:2]).numpy()
    np.testing.assert_allclose(together[1:2], alone, rtol=1e-4, atol=1e-5)
    plain = backbone.build_backbone(width_multiplier=0.25)
    assert not any(isinstance(layer, keras.layers.GroupNormalization) for layer in plain.layers)
    with pytest.raises(ValueError, match="norm must be one of none, group"):
        backbone.build_backbone(norm="batch")


def test_frozen_blocks_do_not_train():
    keras.utils.set_random_seed(0)
    model = backbone.build_backbone(frozen_blocks=2, **_NARROW)
    frozen = {f"block{b}_conv{i}" for b in (1, 2) for i in (1, 2)}
    for name in _CONVOLUTIONS:
        assert model.get_layer(name).trainable == (name not in frozen)
    before = {name: model.get_layer(name).get_weights()[0].copy() for name in _CONVOLUTIONS}
    images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(images, training=True) - 1.0))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights),
                                  model.trainable_weights))
    for name in _CONVOLUTIONS:
        changed = not np.array_equal(before[name], model.get_layer(name).get_weights()[0])
        assert changed == (name not in frozen), name
    with pytest.raises(ValueError, match="frozen_blocks"):
        backbone.build_backbone(frozen_blocks=6)


def _save_legacy_h5(model, path):
    """The format of Keras's ImageNet downloads: `layer_names` and one group per layer."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0".encode() for w in layer.weights]
            group.attrs["weight_names"] = names
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=value)


@pytest.mark.parametrize("filename", ["vgg16_notop.weights.h5", "vgg16_notop.h5"])
def test_local_weights_file_is_loaded_by_layer_name(tmp_path, filename):
    keras.utils.set_random_seed(1)
    source = keras.applications.VGG16(weights=None, include_top=False)
    path = tmp_path / filename
    if filename.endswith(".weights.h5"):
        source.save_weights(path)
    else:
        _save_legacy_h5(source, path)
    model = backbone.build_backbone(weights=path, frozen_blocks=2)
    for name in _CONVOLUTIONS:
        for ours, theirs in zip(model.get_layer(name).get_weights(),
                                source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)


def test_legacy_file_with_the_classifier_is_recognised(tmp_path):
    # A full VGG16 file is 528 MB; the decision only reads `layer_names`.
    with_top, no_top = tmp_path / "top.h5", tmp_path / "notop.h5"
    with h5py.File(with_top, "w") as f:
        f.attrs["layer_names"] = [b"block5_conv3", b"block5_pool", b"flatten", b"fc1", b"fc2"]
    with h5py.File(no_top, "w") as f:
        f.attrs["layer_names"] = [b"block5_conv3", b"block5_pool"]
    assert vgg16._legacy_file_has_classifier(with_top)
    assert not vgg16._legacy_file_has_classifier(no_top)
    with pytest.raises(ValueError, match="has no classifier"):
        vgg16.fc_weights(no_top)


def test_vgg16_fc_weights_are_fc1_and_fc2(monkeypatch, tmp_path):
    keras.utils.set_random_seed(2)
    path = tmp_path / "vgg16.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"block5_conv3", b"flatten", b"fc1", b"fc2", b"predictions"]
    small = vgg16_features.build_vgg16(input_size=32, width_multiplier=1 / 16, fc_units=8)
    requests = []

    def fake_keras_vgg16(weights, *, include_top=True):
        requests.append((weights, include_top))
        return small

    monkeypatch.setattr(vgg16, "keras_vgg16", fake_keras_vgg16)
    fc = vgg16.fc_weights(path)
    assert requests == [(path, True)]
    assert sorted(fc) == ["fc6", "fc7"]
    for paper_name, keras_name in (("fc6", "fc1"), ("fc7", "fc2")):
        for ours, theirs in zip(fc[paper_name], small.get_layer(keras_name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(ValueError, match="need pretrained weights"):
        vgg16.fc_weights(None)


def test_saved_model_round_trip(tmp_path):
    keras.utils.set_random_seed(3)
    model = backbone.build_backbone(frozen_blocks=1, **_NARROW)
    images = np.random.default_rng(3).uniform(size=(1, 24, 16, 3)).astype(np.float32)
    model.save(tmp_path / "trunk.keras")
    restored = keras.saving.load_model(tmp_path / "trunk.keras")
    np.testing.assert_allclose(restored(images), model(images), atol=1e-6)
    assert not restored.get_layer("block1_conv2").trainable
