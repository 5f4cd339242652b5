"""The categorizer's fine-tuned network as the detector's start (nets.trunk_file)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.categorize import loop
from deeplesion_tf.categorize import outputs
from deeplesion_tf.categorize import vgg16_features
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.nets import trunk_file
from deeplesion_tf.nets import vgg16

_WIDTH, _FC_UNITS, _PATCH = 0.125, 16, 32


def _patches(per_kind=8):
    """Two kinds of patch (stripes and a blob), as the categorizer's patch pipeline gives."""
    rng = np.random.default_rng(0)
    kinds = np.tile(np.arange(2), per_kind)
    y, x = np.mgrid[:_PATCH, :_PATCH]
    shapes = np.stack([100.0 * ((y // 4) % 2),
                       100.0 * (((y - 16) ** 2 + (x - 16) ** 2) < 64)]) - 50.0
    patches = shapes[kinds][..., None] + rng.normal(0, 5, (len(kinds), _PATCH, _PATCH, 3))
    return tf.data.Dataset.from_tensor_slices(
        {"patch": patches.astype(np.float32),
         "lesion_id": [f"lesion-{i:02d}" for i in range(len(kinds))]}).cache()


@pytest.fixture(scope="module")
def categorizer(tmp_path_factory):
    """A tiny categorizer run (group normalisation, as the detector preset) and its trunk."""
    tf.keras.utils.set_random_seed(0)
    model = vgg16_features.build_vgg16(input_size=_PATCH, width_multiplier=_WIDTH,
                                       fc_units=_FC_UNITS, num_classes=2, norm="group")
    before = model.get_layer("block3_conv2").get_weights()[0].copy()
    settings = loop.LoopSettings(k_values=(2,), max_iterations=1, epochs=1, batch_size=4)
    result = loop.run(model, _patches(), settings)
    # The loop fine-tuned the network, so what the detector loads is not its initialisation.
    assert not np.allclose(model.get_layer("block3_conv2").get_weights()[0], before)
    out = tmp_path_factory.mktemp("categorize")
    directory = outputs.write_trunk(str(out), model, result, settings, patch_size=_PATCH,
                                    padding_px=20, width_multiplier=_WIDTH, norm="group",
                                    fc_units=_FC_UNITS, provenance={"splits": "train"})
    return model, directory


def _detector(weights, **overrides):
    tf.keras.utils.set_random_seed(1)
    flat = dict(num_classes=2, weights=weights, width_multiplier=_WIDTH, backbone_norm="group",
                fc_units=_FC_UNITS, image_size=64, anchor_sizes=[16.0],
                anchor_ratios=[1.0], train_pre_nms_top_k=50, train_post_nms_top_k=20,
                test_pre_nms_top_k=50, test_post_nms_top_k=10, rois_per_image=8)
    flat.update(overrides)
    return faster_rcnn.build_faster_rcnn(config_lib.from_flat(**flat))


def test_every_backbone_variable_is_the_categorizers(categorizer):
    model, directory = categorizer
    detector = _detector(directory)
    trunk = detector.backbone
    loaded = [layer for layer in trunk.layers if layer.weights]
    # 13 convolutions and their 13 group normalisations: every weighted layer of the trunk.
    assert len(loaded) == 26
    assert {layer.name for layer in loaded} == (
        set(vgg16.conv_layer_names()) | {f"{n}_norm" for n in vgg16.conv_layer_names()})
    for layer in loaded:
        for ours, theirs in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    # FC7 fits (16 -> 16) and is the categorizer's; FC6 reads a 7 x 7 RoI here but a
    # 1 x 1 pool5 there, so it keeps its own (seeded) initialisation.
    fc7 = zip(detector.box_head.fc7.get_weights(), model.get_layer("fc2").get_weights())
    for ours, theirs in fc7:
        np.testing.assert_array_equal(ours, theirs)
    random_start = _detector(None)
    np.testing.assert_array_equal(detector.box_head.fc6.get_weights()[0],
                                  random_start.box_head.fc6.get_weights()[0])
    assert not np.allclose(random_start.backbone.get_layer("block1_conv1").get_weights()[0],
                           trunk.get_layer("block1_conv1").get_weights()[0])
    # The weights file alone names the same trunk as its directory.
    by_file = _detector(f"{directory}/{trunk_file.WEIGHTS_FILE}")
    np.testing.assert_array_equal(by_file.backbone.get_layer("block5_conv3").get_weights()[0],
                                  trunk.get_layer("block5_conv3").get_weights()[0])


def test_the_spec_says_what_trained_it(categorizer):
    _, directory = categorizer
    spec = trunk_file.read_spec(directory)
    assert (spec.width_multiplier, spec.norm, spec.fc_units) == (_WIDTH, "group", _FC_UNITS)
    assert spec.source == "categorizer"
    assert spec.provenance == {"splits": "train", "seed": 0, "iterations": 1, "k": 2,
                               "converged": False, "lesions": 16}
    assert spec.input_description.startswith("the key slice under the HU windows [")
    assert spec.input_description.endswith("32 px patches of each lesion padded by 20 px")
    with open(f"{directory}/{trunk_file.SPEC_FILE}") as f:
        assert json.load(f)["format"] == "deeplesion_tf.trunk/1"


@pytest.mark.parametrize("overrides, message", [
    ({"width_multiplier": 0.25}, "width_multiplier is 0.125 there but 0.25 here"),
    ({"backbone_norm": "none"}, "norm is 'group' there but 'none' here"),
])
def test_a_mismatched_trunk_is_refused_naming_both_settings(categorizer, overrides, message):
    _, directory = categorizer
    with pytest.raises(ValueError, match="does not fit this network") as error:
        _detector(directory, **overrides)
    assert message in str(error.value)
    assert "--backbone_norm" in str(error.value) and directory in str(error.value)


def test_a_folder_without_a_spec_is_no_trunk(tmp_path):
    assert not trunk_file.is_trunk(str(tmp_path))
    assert not trunk_file.is_trunk("imagenet") and not trunk_file.is_trunk(None)
    with pytest.raises(ValueError, match="trunk.json is missing"):
        trunk_file.read_spec(str(tmp_path))


def test_the_categorizer_starts_from_a_saved_trunk(categorizer):
    # bin/categorize_lesions --weights=DIR/trunk (e.g. bin/pretrain_trunk's): the convolutions
    # and their normalisations, and FC6/FC7 where they fit, at another patch size too.
    model, directory = categorizer
    started = vgg16_features.build_vgg16(weights=directory, input_size=2 * _PATCH,
                                         width_multiplier=_WIDTH, fc_units=_FC_UNITS,
                                         num_classes=3, norm="group", name="started")
    for name in vgg16.conv_layer_names():
        for layer in (name, f"{name}_norm"):
            for ours, theirs in zip(started.get_layer(layer).get_weights(),
                                    model.get_layer(layer).get_weights()):
                np.testing.assert_array_equal(ours, theirs)
    # FC6 reads 2 x 2 x C here, 1 x 1 x C there: it starts randomly; FC7 (16 -> 16) fits.
    np.testing.assert_array_equal(started.get_layer("fc2").get_weights()[0],
                                  model.get_layer("fc2").get_weights()[0])
    assert started.get_layer("fc1").get_weights()[0].shape != (
        model.get_layer("fc1").get_weights()[0].shape)
    with pytest.raises(ValueError, match="norm is 'group' there but 'none' here"):
        vgg16_features.build_vgg16(weights=directory, input_size=_PATCH, width_multiplier=_WIDTH,
                                   fc_units=_FC_UNITS, num_classes=3, norm="none")
