"""VGG16 for the categorizer: topology, weight loading, feature extraction."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from deeplesion_tf.categorize import vgg16_features

_SMALL = dict(input_size=32, width_multiplier=1 / 16, fc_units=16)


def test_full_size_topology_equals_keras_vgg16():
    ours = vgg16_features.build_vgg16()
    reference = keras.applications.VGG16(weights=None, include_top=True)
    assert ours.count_params() == reference.count_params() == 138_357_544
    ours_layers = [(l.name, [tuple(w.shape) for w in l.weights]) for l in ours.layers[1:]]
    reference_layers = [(l.name, [tuple(w.shape) for w in l.weights])
                        for l in reference.layers[1:]]
    assert ours_layers == reference_layers


@pytest.mark.slow
def test_local_weights_file_is_loaded_by_layer_name(tmp_path):
    source = keras.applications.VGG16(weights=None, include_top=True)
    path = tmp_path / "vgg16.weights.h5"
    source.save_weights(path)
    model = vgg16_features.build_vgg16(weights=path, num_classes=5)
    for name in ("block1_conv1", "block5_conv3", "fc1", "fc2"):
        for ours, theirs in zip(model.get_layer(name).get_weights(),
                                source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert model.get_layer("predictions").get_weights()[0].shape == (4096, 5)


def test_pretrained_weights_need_the_full_size_network():
    with pytest.raises(ValueError, match="pretrained VGG16 weights fit only"):
        vgg16_features.build_vgg16(weights="imagenet", **_SMALL)
    with pytest.raises(ValueError, match="multiple of 32"):
        vgg16_features.build_vgg16(input_size=48)


def test_width_multiplier_scales_every_convolution():
    model = vgg16_features.build_vgg16(num_classes=3, **_SMALL)
    filters = [model.get_layer(f"block{b}_conv1").filters for b in range(1, 6)]
    assert filters == [4, 8, 16, 32, 32]
    assert model.get_layer("fc2").units == 16
    assert model.output_shape == (None, 3)


def test_features_are_the_fc_activations_in_dataset_order():
    keras.utils.set_random_seed(0)
    model = vgg16_features.build_vgg16(num_classes=3, **_SMALL)
    patches = np.random.default_rng(0).normal(0, 50, (5, 32, 32, 3)).astype(np.float32)
    ids = [f"lesion-{i}" for i in range(5)]
    dataset = tf.data.Dataset.from_tensor_slices({"patch": patches, "lesion_id": ids})
    for layer, keras_name in (("fc6", "fc1"), ("fc7", "fc2")):
        extractor = vgg16_features.feature_extractor(model, layer)
        features, lesion_ids = vgg16_features.extract_features(extractor, dataset, batch_size=2)
        assert lesion_ids == ids
        # By hand: the flattened block5 output through the Dense layers, ReLU each.
        flat = keras.Model(model.input, model.get_layer("flatten").output)(patches).numpy()
        w1, b1 = model.get_layer("fc1").get_weights()
        expected = np.maximum(flat @ w1 + b1, 0)
        if keras_name == "fc2":
            w2, b2 = model.get_layer("fc2").get_weights()
            expected = np.maximum(expected @ w2 + b2, 0)
        np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="feature layer"):
        vgg16_features.feature_extractor(model, "fc8")


def test_new_classifier_shares_the_trunk():
    model = vgg16_features.build_vgg16(num_classes=3, **_SMALL)
    clustered = vgg16_features.with_new_classifier(model, 7)
    assert clustered.output_shape == (None, 7)
    assert clustered.get_layer("fc2") is model.get_layer("fc2")


def test_pooled_block_features_average_centred_crops():
    keras.utils.set_random_seed(0)
    model = vgg16_features.build_vgg16(num_classes=3, **_SMALL)
    patches = np.random.default_rng(1).normal(0, 50, (4, 32, 32, 3)).astype(np.float32)
    extractor = vgg16_features.feature_extractor(model, "block1")
    features = extractor(patches).numpy()
    # By hand: block1's 16 x 16 map averaged over all of it, the middle 8 x 8
    # (margin round(16 * 0.25) = 4) and the middle 4 x 4 (margin 6).
    block = keras.Model(model.input, model.get_layer("block1_pool").output)(patches).numpy()
    channels = block.shape[-1]
    expected = np.concatenate([block.mean((1, 2)), block[:, 4:12, 4:12].mean((1, 2)),
                               block[:, 6:10, 6:10].mean((1, 2))], axis=1)
    assert features.shape == (4, 3 * channels)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    # A 1 x 1 block5 map: every crop keeps its single cell.
    deep = vgg16_features.pooled_block_extractor(model, "block5", (1.0, 0.1))(patches).numpy()
    cell = keras.Model(model.input, model.get_layer("block5_pool").output)(patches).numpy()
    np.testing.assert_allclose(deep, np.concatenate([cell[:, 0, 0]] * 2, axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="block must be"):
        vgg16_features.pooled_block_extractor(model, "block6")
    with pytest.raises(ValueError, match="crop fractions"):
        vgg16_features.pooled_block_extractor(model, "block1", (1.0, 0.0))
