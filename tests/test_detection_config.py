"""The detector's one config: nested per stage, serialised as model_config.json, old files read."""

import json

import pytest

from deeplesion_tf.detection import config as config_lib
from tests.conftest import REPO_ROOT


def test_defaults_are_the_papers():
    config = config_lib.DetectorConfig()
    assert config.rpn.anchor_sizes == (48.0, 72.0, 96.0)
    assert config.rpn.anchor_ratios == (0.5, 1.0, 2.0)
    assert (config.rpn.positive_iou, config.rpn.negative_iou, config.rpn.num_samples) == (
        0.7, 0.3, 256)
    assert config.roi_sampler.num_samples == 32 and config.pooler.method == "max"
    assert config.inputs.windows == ((-1024.0, 3071.0),) and config.inputs.box_padding_px == 20
    assert config.training.steps == 60000 and config.training.optimizer == "sgd"


def test_json_round_trip_is_exact():
    config = config_lib.from_flat(num_classes=3, width_multiplier=0.25, backbone_norm="group",
                                  anchor_sizes=[24, 36], windows=[[-160, 240], [-1000, 400]],
                                  score_threshold=0.1, steps=800, seed=4)
    text = json.dumps(config.to_dict())
    assert config_lib.from_dict(json.loads(text)) == config
    assert json.loads(text)["format"] == config_lib.FORMAT
    assert config.backbone.norm == "group" and config.box_head.num_classes == 3
    assert config.rpn.anchor_sizes == (24.0, 36.0)
    assert config.inputs.windows == ((-160.0, 240.0), (-1000.0, 400.0))


def test_every_flat_name_sets_a_field_of_its_section():
    config = config_lib.DetectorConfig()
    for name, (section, field) in config_lib.FLAT_NAMES.items():
        assert hasattr(getattr(config, section), field), name


def test_a_model_config_written_before_the_config_reads_as_the_same_settings():
    old = json.loads((REPO_ROOT / "tests" / "data" / "pinned_detector" / "model" /
                      "model_config.json").read_text())
    assert "format" not in old  # The flat kwargs of the old build_faster_rcnn.
    config = config_lib.from_dict(old)
    assert config.backbone.width_multiplier == 0.125 and config.box_head.fc_units == 32
    assert config.rpn.anchor_sizes == (12.0, 24.0) and config.rpn.num_samples == 32
    assert config.proposals.test_post_nms_top_k == 32 and config.roi_sampler.num_samples == 16
    assert config.detections.max_detections == 4 and config.detections.score_threshold == 0.0
    assert config.inputs.image_size == 96 and config.inputs.box_padding_px == 4.0


def test_unknown_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown detector setting 'anchor_size'"):
        config_lib.from_flat(anchor_size=[12])
    data = config_lib.DetectorConfig().to_dict()
    data["rpn"]["positive_iuo"] = 0.6
    with pytest.raises(ValueError, match=r"unknown rpn settings \['positive_iuo'\]"):
        config_lib.from_dict(data)
    with pytest.raises(ValueError, match="format 3"):
        config_lib.from_dict(dict(data, format=3))
