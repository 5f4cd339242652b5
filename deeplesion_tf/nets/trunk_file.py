"""A VGG16 trained on this project's own data, saved for the detector to start from.

Without ImageNet weights the detector starts from random ones; the categorizer
meanwhile fine-tunes a VGG16 on every bookmarked lesion with its pseudo labels
(paper Sec. 2.2). This file format carries that network to the detector:

    DIR/trunk.json          what the network is (`TrunkSpec`) and where it came from
    DIR/trunk.weights.h5    one HDF5 group per layer, named as Keras's VGG16 names it
                            (`block1_conv1` ... `block5_conv3`, their `_norm`
                            layers, `fc1`, `fc2`), datasets "0", "1", ... in the
                            layer's `weights` order

Why not a Keras weights file: `Model.load_weights` needs the same architecture,
and the two networks differ (the categorizer's has pool4, pool5 and a classifier
on fixed-size patches; the detector's trunk has none of them, a preprocessing
layer and any input size). Layer names are what they share, so weights go by name,
as `vgg16.load_convolutions` does for Keras's own VGG16.

The trunk settings that decide whether the weights fit (`width_multiplier`,
`norm`) are checked against the detector's, and a mismatch is an error that names
both; FC6/FC7 load only where their shapes fit (`fc_arrays`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

import h5py
import keras
import numpy as np
from absl import logging

from deeplesion_tf.nets import vgg16

SPEC_FILE = "trunk.json"
WEIGHTS_FILE = "trunk.weights.h5"
_FORMAT = "deeplesion_tf.trunk/1"


@dataclasses.dataclass(frozen=True)
class TrunkSpec:
    """What a saved trunk is and where it came from.

    Attributes:
      width_multiplier: of every convolution's filters (`vgg16.channels`).
      norm: "none" or "group" (`vgg16.NORMS`), after each convolution.
      fc_units: units of FC6 and FC7 (0 when the file has none).
      input_description: what the three input channels held in training, e.g.
        "the key slice under three HU windows"; compared only to warn.
      source: what trained it, e.g. "categorizer".
      provenance: free-form facts about the training (dataset, splits, seed,
        iterations), for the reader; never identifiers.
    """

    width_multiplier: float
    norm: str
    fc_units: int = 0
    input_description: str = ""
    source: str = ""
    provenance: Dict[str, object] = dataclasses.field(default_factory=dict)


def is_trunk(path: Optional[str]) -> bool:
    """Whether `path` is a saved trunk: its directory or its weights file."""
    if not path or path == "imagenet":
        return False
    return os.path.isfile(os.path.join(_directory(path), SPEC_FILE))


def _directory(path: str) -> str:
    path = os.fspath(path)
    return os.path.dirname(path) if os.path.basename(path) == WEIGHTS_FILE else path


def _layers_to_save(model: keras.Model) -> List[keras.layers.Layer]:
    names = set(vgg16.conv_layer_names())
    names |= {f"{n}_norm" for n in names} | set(vgg16.FC_LAYERS.values())
    return [layer for layer in model.layers if layer.name in names and layer.weights]


def save(model: keras.Model, directory: str, spec: TrunkSpec) -> str:
    """Writes `model`'s VGG16 layers and `spec` into `directory`; returns the weights path.

    The weights are written first and the spec last, so a directory with a spec
    holds a complete weights file (`is_trunk` reads the spec).

    Raises:
      ValueError: `model` has none of VGG16's convolutions.
    """
    layers = _layers_to_save(model)
    if not any(layer.name in vgg16.conv_layer_names() for layer in layers):
        raise ValueError(f"model {model.name} has no VGG16 convolutions (block1_conv1 ...) "
                         "to save")
    os.makedirs(directory, exist_ok=True)
    spec_path = os.path.join(directory, SPEC_FILE)
    if os.path.exists(spec_path):
        os.remove(spec_path)
    weights_path = os.path.join(directory, WEIGHTS_FILE)
    temporary = weights_path + ".tmp"
    with h5py.File(temporary, "w") as f:
        f.attrs["format"] = _FORMAT
        for layer in layers:
            group = f.create_group(layer.name)
            for i, value in enumerate(layer.get_weights()):
                group.create_dataset(str(i), data=np.asarray(value))
    os.replace(temporary, weights_path)
    with open(spec_path, "w") as f:
        json.dump({"format": _FORMAT, **dataclasses.asdict(spec)}, f, indent=1, sort_keys=True)
    logging.info("Saved a VGG16 trunk (%d layers, width %g, norm %s) to %s", len(layers),
                 spec.width_multiplier, spec.norm, directory)
    return weights_path


def read_spec(path: str) -> TrunkSpec:
    """The `TrunkSpec` of a saved trunk (its directory or its weights file).

    Raises:
      ValueError: no trunk there, or a spec of another format.
    """
    spec_path = os.path.join(_directory(path), SPEC_FILE)
    if not os.path.isfile(spec_path):
        raise ValueError(f"{path} is no saved trunk: {spec_path} is missing (the categorizer "
                         "writes one into its --output_dir/trunk)")
    with open(spec_path) as f:
        data = json.load(f)
    if data.pop("format", None) != _FORMAT:
        raise ValueError(f"{spec_path} is not a {_FORMAT} trunk spec")
    return TrunkSpec(**data)


def check_fits(path: str, *, width_multiplier: float, norm: str) -> TrunkSpec:
    """The saved trunk's spec, after checking it fits a trunk of these settings.

    Raises:
      ValueError: naming every setting that differs, with the saved value and the
        asked one, and how to make them agree.
    """
    spec = read_spec(path)
    asked = {"width_multiplier": float(width_multiplier), "norm": norm}
    saved = {"width_multiplier": float(spec.width_multiplier), "norm": spec.norm}
    differ = [k for k in asked if asked[k] != saved[k]]
    if differ:
        raise ValueError(
            f"the trunk in {_directory(path)} does not fit this network: "
            + ", ".join(f"{k} is {saved[k]!r} there but {asked[k]!r} here" for k in differ)
            + " (detector flags --width_multiplier and --backbone_norm; categorizer flags "
            "--width_multiplier and --trunk_norm); train both with the same trunk")
    return spec


def _read_arrays(path: str, names: Sequence[str]) -> Dict[str, List[np.ndarray]]:
    with h5py.File(os.path.join(_directory(path), WEIGHTS_FILE), "r") as f:
        return {name: [np.asarray(f[name][str(i)]) for i in range(len(f[name]))]
                for name in names if name in f}


def load_convolutions(model: keras.Model, path: str, *, width_multiplier: float,
                      norm: str) -> List[str]:
    """Copies the saved convolutions (and their normalisations) into `model`'s by name.

    Args:
      model: holds `block1_conv1` ... `block5_conv3` (and, with group
        normalisation, `block{b}_conv{i}_norm`).
      path: a saved trunk (directory or weights file).
      width_multiplier, norm: `model`'s trunk settings, checked against the file's.

    Returns:
      The names of the layers loaded.

    Raises:
      ValueError: the settings differ (`check_fits`), or a layer is missing
        from the file or has other shapes.
    """
    spec = check_fits(path, width_multiplier=width_multiplier, norm=norm)
    wanted = [layer for layer in model.layers
              if layer.weights and (layer.name in vgg16.conv_layer_names()
                                    or layer.name.endswith("_norm"))]
    arrays = _read_arrays(path, [layer.name for layer in wanted])
    missing = [layer.name for layer in wanted if layer.name not in arrays]
    if missing:
        raise ValueError(f"the trunk in {_directory(path)} lacks layers {missing}")
    for layer in wanted:  # All checked before any is set.
        expected = [tuple(v.shape) for v in layer.weights]
        given = [a.shape for a in arrays[layer.name]]
        if expected != given:
            raise ValueError(f"{layer.name} of the trunk in {_directory(path)} has shapes "
                             f"{given}, this network's {expected}")
    for layer in wanted:
        layer.set_weights(arrays[layer.name])
    # What the trunk's input held, beside the detector pipeline's own log of its input.
    logging.info("Loaded the trunk %s into %d layers; trained by the %s on %s (provenance %s)",
                 path, len(wanted), spec.source or "?", spec.input_description or "?",
                 spec.provenance)
    return [layer.name for layer in wanted]


def fc_arrays(path: str) -> Dict[str, List[np.ndarray]]:
    """The saved FC6 and FC7, `{"fc6": [kernel, bias], "fc7": ...}`, those the file has."""
    arrays = _read_arrays(path, list(vgg16.FC_LAYERS.values()))
    return {paper: arrays[keras_name] for paper, keras_name in vgg16.FC_LAYERS.items()
            if keras_name in arrays}
