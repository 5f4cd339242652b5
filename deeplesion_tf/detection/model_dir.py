"""What a model directory holds besides checkpoints, and rebuilding the model from it.

`bin/train_detector` writes, next to the checkpoints:
  * `model_config.json`: the `config.DetectorConfig` serialised (`to_dict`), without
    the backbone's `weights` (the checkpoint holds every trained value); model
    directories written before the config (flat `build_faster_rcnn` arguments)
    still load (`config.from_dict`);
  * `classes.json` (`deeplesion_tf.detection.classes`);
  * `flags.txt`: the resolved flags, a flagfile that repeats the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple, Optional

from deeplesion_tf.detection import classes as classes_lib
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.detection import training

MODEL_CONFIG_FILE = "model_config.json"


def write_model_config(model_dir: str, config: config_lib.DetectorConfig) -> None:
    """Writes `model_config.json`: `config` without the backbone's initial weights."""
    stored = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone,
                                                                      weights=None))
    with open(os.path.join(model_dir, MODEL_CONFIG_FILE), "w") as f:
        json.dump(stored.to_dict(), f, indent=2, sort_keys=True)


def read_model_config(model_dir: str) -> config_lib.DetectorConfig:
    """The `DetectorConfig` of `model_config.json` (either format).

    Raises:
      FileNotFoundError: `model_dir` is not a model directory of `bin/train_detector`.
    """
    path = os.path.join(model_dir, MODEL_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: not a model directory written by "
                                "bin/train_detector")
    with open(path) as f:
        return config_lib.from_dict(json.load(f))


class LoadedModel(NamedTuple):
    model: faster_rcnn.FasterRCNN
    class_names: list
    config: config_lib.DetectorConfig
    checkpoint: str

    @property
    def inputs(self) -> config_lib.InputConfig:
        """How images were prepared for the model (image size, windows, box padding)."""
        return self.config.inputs


def load_model(model_dir: str, checkpoint: Optional[str] = None,
               **overrides: Any) -> LoadedModel:
    """Rebuilds the trained detector of `model_dir` and restores its latest checkpoint.

    Args:
      model_dir: written by `bin/train_detector`.
      checkpoint: a checkpoint path instead of the latest.
      **overrides: settings to change, named as `config.FLAT_NAMES` names them
        (e.g. `score_threshold` or `max_detections` for an evaluation that needs
        more detections).
    """
    config = read_model_config(model_dir).replace(**overrides)
    model = faster_rcnn.build_faster_rcnn(config)
    path = training.restore_model(model, model_dir, checkpoint)
    return LoadedModel(model, classes_lib.read_names(model_dir), config, path)
