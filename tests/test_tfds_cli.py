"""`tfds build deeplesion ...` from the command line, as the README documents it."""

import json

import pytest
import tensorflow_datasets as tfds

from tests import tfds_helpers
from tfds_deeplesion.deeplesion import dummy_data_generation as dummy

# Slow tier (the tfds command in subprocesses): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow


def _build(tmp_path, *args):
    result = tfds_helpers.run_tfds_cli(
        ["build", "deeplesion", "--imports", "tfds_deeplesion", "--data_dir", str(tmp_path),
         *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_pacs_and_release_configs_build_and_load(tmp_path):
    _build(tmp_path, "--config", "pacs", "--manual_dir", str(dummy.DUMMY_DIR), "--overwrite")
    # The release config as a Beam pipeline, on Beam's local runner.
    _build(tmp_path, "--config", "release", "--manual_dir", str(dummy.DUMMY_DIR),
           "--beam_pipeline_options=runner=FnApiRunner")
    import tfds_deeplesion  # noqa: F401 (registers deeplesion)

    counts = {config: {split: len(list(tfds.load(f"deeplesion/{config}", split=split,
                                                  data_dir=str(tmp_path))))
                       for split in ("train", "validation", "test")}
              for config in ("pacs", "release")}
    assert counts == {"pacs": {"train": 14, "validation": 2, "test": 3},
                      "release": {"train": 12, "validation": 3, "test": 4}}


def test_a_small_synthetic_config_given_as_json(tmp_path):
    config = {"name": "synthetic_cli", "source": "synthetic", "synthetic_seed": dummy.DUMMY_SEED,
              "synthetic_num_patients": dummy.DUMMY_PATIENTS,
              "synthetic_image_size": dummy.DUMMY_IMAGE_SIZE}
    result = _build(tmp_path, "--config", json.dumps(config))
    # The same generator and parameters as dummy_data: the same key slices.
    info = json.loads((tmp_path / "deeplesion" / "synthetic_cli" / "1.0.0" /
                       "dataset_info.json").read_text())
    splits = {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in info["splits"]}
    assert splits == {"train": 14, "validation": 2, "test": 3}, result.stderr[-2000:]
