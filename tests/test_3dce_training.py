"""The CPU-size 3DCE preset trains, evaluates and exports through the binaries.

On dummy_data's PACS built with 4 slices per side (`pacs_3dce`): the preset's flags,
shrunk to a few steps of a tiny network, then `bin/evaluate_detector` (the FROC by size
and type included) and `bin/export_detector`, whose SavedModel takes 9-slice HU.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests import binaries
from tests import tfds_helpers
from tfds_deeplesion.deeplesion import dummy_data_generation

pytestmark = pytest.mark.slow

SHRINK = ["--image_size=64", "--box_padding_px=4", "--width_multiplier=0.0625", "--fc_units=32",
          "--anchor_sizes=12,24", "--train_pre_nms_top_k=300", "--train_post_nms_top_k=64",
          "--test_pre_nms_top_k=300", "--test_post_nms_top_k=32", "--rpn_num_samples=32",
          "--rois_per_image=16", "--batch_size=2", "--steps=3", "--checkpoint_every=3",
          "--log_every=1", "--score_threshold=0.0"]



def test_the_cpu_3dce_preset_trains_evaluates_and_exports(tmp_path):
    data_dir = tmp_path / "data"
    tfds_helpers.build("pacs_3dce", data_dir, manual_dir=dummy_data_generation.DUMMY_DIR)
    model_dir = tmp_path / "model"
    binaries.run("train_detector", "--flagfile=configs/3dce_quickstart.flags",
                 "--dataset=deeplesion/pacs_3dce", f"--data_dir={data_dir}",
                 f"--model_dir={model_dir}", *SHRINK)
    config = json.loads((model_dir / "model_config.json").read_text())
    assert config["backbone"]["num_context_images"] == 3
    binaries.run("evaluate_detector", f"--model_dir={model_dir}", f"--data_dir={data_dir}",
                 "--dataset=deeplesion/pacs_3dce", "--split=train",
                 f"--output_dir={tmp_path / 'eval'}", "--categories=none", "--num_figures=0",
                 "--bootstrap_resamples=0")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] > 0 and set(metrics["froc_by_group"]["size"]) == {
        "< 10 mm", "10-30 mm", "> 30 mm"}
    binaries.run("export_detector", f"--model_dir={model_dir}",
                 f"--export_dir={tmp_path / 'export'}", "--version=1")
    loaded = tf.saved_model.load(str(tmp_path / "export" / "1"))
    assert int(loaded.input_slices.numpy()) == 9
    out = loaded.signatures["serving_default"](
        images=tf.constant(np.zeros([1, 64, 64, 9], np.float32) - 1000.0))
    assert out["detection_boxes"].shape[0] == 1
