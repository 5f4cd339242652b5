"""What a model directory holds besides checkpoints, and rebuilding the model from it.

`bin/train_detector` writes, next to the checkpoints:
  * `model_config.json`: the keyword arguments of `faster_rcnn.build_faster_rcnn`
    (without `weights`: the checkpoint holds every trained value) and the input
    settings (`image_size`, `windows`, `box_padding_px`);
  * `classes.json` (`deeplesion_tf.detection.classes`);
  * `flags.txt`: the resolved flags, a flagfile that repeats the run.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, NamedTuple, Optional

from deeplesion_tf.detection import classes as classes_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.detection import training

MODEL_CONFIG_FILE = "model_config.json"


class InputSettings(NamedTuple):
    """How images were prepared for the model (`detector_pipeline.make_detector_dataset`)."""

    image_size: int
    windows: tuple
    box_padding_px: float


def write_model_config(model_dir: str, model_kwargs: Dict[str, Any],
                       inputs: InputSettings) -> None:
    config = {"model": {k: v for k, v in model_kwargs.items() if k != "weights"},
              "inputs": {"image_size": inputs.image_size,
                         "windows": [list(w) for w in inputs.windows],
                         "box_padding_px": inputs.box_padding_px}}
    with open(os.path.join(model_dir, MODEL_CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def read_model_config(model_dir: str) -> Dict[str, Any]:
    """The parsed `model_config.json`.

    Raises:
      FileNotFoundError: `model_dir` is not a model directory of `bin/train_detector`.
    """
    path = os.path.join(model_dir, MODEL_CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: not a model directory written by "
                                "bin/train_detector")
    with open(path) as f:
        return json.load(f)


class LoadedModel(NamedTuple):
    model: faster_rcnn.FasterRCNN
    class_names: list
    inputs: InputSettings
    checkpoint: str


def load_model(model_dir: str, checkpoint: Optional[str] = None,
               **overrides: Any) -> LoadedModel:
    """Rebuilds the trained detector of `model_dir` and restores its latest checkpoint.

    Args:
      model_dir: written by `bin/train_detector`.
      checkpoint: a checkpoint path instead of the latest.
      **overrides: `build_faster_rcnn` arguments to change (e.g. `score_threshold`
        or `max_detections` for an evaluation that needs more detections).
    """
    config = read_model_config(model_dir)
    inputs = InputSettings(image_size=int(config["inputs"]["image_size"]),
                           windows=tuple(tuple(w) for w in config["inputs"]["windows"]),
                           box_padding_px=float(config["inputs"]["box_padding_px"]))
    kwargs = dict(config["model"], **overrides)
    kwargs["image_size"] = inputs.image_size
    model = faster_rcnn.build_faster_rcnn(**kwargs)
    path = training.restore_model(model, model_dir, checkpoint)
    return LoadedModel(model, classes_lib.read_names(model_dir), inputs, path)
