"""VGG16, once: the block table, the conv stack, FC6/FC7 and loading Keras's weights.

The categorizer (paper Sec. 2.2) uses the whole network on lesion patches; the
detector (Sec. 2.3) uses its convolutions without pool4 as the trunk and its
FC6/FC7 as the box head's start. Both build their layers here so that they name
them as Keras's VGG16 does (`block1_conv1` ... `block5_conv3`, `fc1`, `fc2`) and
ImageNet weights, or any Keras VGG16 weights file, load by name into either.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Union

import h5py
import keras
import numpy as np
import tensorflow as tf
from absl import logging

# (filters, convolutions) of the five blocks.
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# The paper's names for the fully-connected layers -> Keras's layer names.
FC_LAYERS = {"fc6": "fc1", "fc7": "fc2"}
# Normalisations after each convolution (`conv_stack(norm=...)`).
NORMS = ("none", "group")
# Group normalisation: at most this many groups, and at least this many channels per group.
_MAX_GROUPS = 32
_MIN_CHANNELS_PER_GROUP = 4
# keras.applications.vgg16.preprocess_input ("caffe" mode): BGR means of ImageNet.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)

Weights = Optional[Union[str, os.PathLike]]


def channels(filters: int, width_multiplier: float) -> int:
    """A convolution's filters at `width_multiplier` (at least one)."""
    return max(1, int(round(filters * width_multiplier)))


def conv_layer_names() -> List[str]:
    return [f"block{block}_conv{i}" for block, (_, convolutions) in enumerate(BLOCKS, start=1)
            for i in range(1, convolutions + 1)]


def conv_stack(x, *, width_multiplier: float = 1.0, pooled_blocks: Sequence[int] = (1, 2, 3, 4, 5),
               pool_padding: str = "valid", norm: str = "none", frozen_blocks: int = 0,
               kernel_initializer: str = "glorot_uniform"):
    """conv1_1 ... conv5_3 on the Keras tensor `x`, with a 2x2 max pool after `pooled_blocks`.

    Args:
      x: a Keras tensor `[B, H, W, 3]`.
      width_multiplier: scales every convolution's filters.
      pooled_blocks: the blocks that end with their 2x2, stride-2 pooling
        (`block{b}_pool`): all five in VGG16, 1-3 in the detector's trunk.
      pool_padding: "valid" (VGG16) or "same" (any input size).
      norm: "none" (VGG16) or "group": group normalisation between each
        convolution and its ReLU (`block{b}_conv{i}_norm`).
      frozen_blocks: blocks 1 .. `frozen_blocks` are not trainable.
      kernel_initializer: of the convolutions.

    Raises:
      ValueError: an unknown `norm`, or `frozen_blocks` outside 0..5.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if not 0 <= frozen_blocks <= len(BLOCKS):
        raise ValueError(f"frozen_blocks must be in 0..{len(BLOCKS)}, got {frozen_blocks}")
    for block, (filters, convolutions) in enumerate(BLOCKS, start=1):
        trainable = block > frozen_blocks
        for i in range(1, convolutions + 1):
            units = channels(filters, width_multiplier)
            x = keras.layers.Conv2D(units, 3, padding="same",
                                    activation="relu" if norm == "none" else None,
                                    kernel_initializer=kernel_initializer, trainable=trainable,
                                    name=f"block{block}_conv{i}")(x)
            if norm == "group":
                x = keras.layers.GroupNormalization(
                    groups=_num_groups(units), trainable=trainable,
                    name=f"block{block}_conv{i}_norm")(x)
                x = keras.layers.ReLU(name=f"block{block}_conv{i}_relu")(x)
        if block in pooled_blocks:
            x = keras.layers.MaxPooling2D(2, strides=2, padding=pool_padding,
                                          name=f"block{block}_pool")(x)
    return x


def _num_groups(units: int) -> int:
    """Groups for `units` channels: up to 32, with at least 4 channels each, dividing them."""
    groups = max(1, min(_MAX_GROUPS, units // _MIN_CHANNELS_PER_GROUP))
    while units % groups:
        groups -= 1
    return groups


def fc_layers(x, fc_units: int = 4096):
    """FC6 and FC7 (Keras's `fc1`, `fc2`, ReLU) on a flattened Keras tensor."""
    x = keras.layers.Dense(fc_units, activation="relu", name=FC_LAYERS["fc6"])(x)
    return keras.layers.Dense(fc_units, activation="relu", name=FC_LAYERS["fc7"])(x)


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class VGG16Preprocessing(keras.layers.Layer):
    """[0, 1] images -> VGG16's input, as `vgg16.preprocess_input(255 * x)` makes it.

    Scales to [0, 255], reverses the channels ("RGB" -> BGR; for the detector:
    previous, key, next slice -> next, key, previous) and subtracts the ImageNet
    BGR means. Shapes: `[..., 3]` -> `[..., 3]`, float32.
    """

    def call(self, images):
        images = tf.cast(images, self.compute_dtype) * 255.0
        mean = tf.constant(IMAGENET_MEAN_BGR, dtype=self.compute_dtype)
        return tf.reverse(images, axis=[-1]) - mean

    def compute_output_shape(self, input_shape):
        return input_shape


# -- Keras's pretrained weights ------------------------------------------------------------

def keras_vgg16(weights: Union[str, os.PathLike], *, include_top: bool = True) -> keras.Model:
    """Keras's own VGG16 (224 x 224 input) with pretrained weights: the source to copy from.

    Args:
      weights: "imagenet" (Keras downloads the file once into ~/.keras/models)
        or the path of a local Keras VGG16 weights file that fits `include_top`.
      include_top: with FC6 (`fc1`), FC7 (`fc2`) and the 1000-way classifier.
    """
    return keras.applications.VGG16(include_top=include_top, weights=os.fspath(weights))


def _is_legacy_file(path: Union[str, os.PathLike]) -> bool:
    with h5py.File(os.fspath(path), "r") as f:
        return "layer_names" in f.attrs


def _legacy_file_has_classifier(path: Union[str, os.PathLike]) -> bool:
    """Whether a legacy Keras `.h5` weights file holds `fc1`.

    Keras loads a legacy file only into a model with the same layers, so the
    source model must match the file. A Keras 3 `.weights.h5` (no `layer_names`
    attribute) loads into the model without the classifier either way.
    """
    with h5py.File(os.fspath(path), "r") as f:
        names = f.attrs.get("layer_names")
        if names is None:
            return False
        return any((n.decode() if isinstance(n, bytes) else str(n)) == "fc1" for n in names)


def load_convolutions(model: keras.Model, weights: Union[str, os.PathLike]) -> None:
    """Copies VGG16's 13 convolutions from `weights` (with or without the classifier)."""
    include_top = weights != "imagenet" and _legacy_file_has_classifier(weights)
    source = keras_vgg16(weights, include_top=include_top)
    names = conv_layer_names()
    for layer_name in names:
        model.get_layer(layer_name).set_weights(source.get_layer(layer_name).get_weights())
    logging.info("Loaded VGG16 weights %s into %d convolutions", weights, len(names))


def load_by_name(model: keras.Model, weights: Weights, *, skip: Sequence[str] = ()) -> None:
    """Copies every weighted layer of `model` but `skip` from Keras's VGG16 with its classifier."""
    source = keras_vgg16(weights, include_top=True)
    loaded = []
    for layer in model.layers:
        if layer.weights and layer.name not in skip:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            loaded.append(layer.name)
    logging.info("Loaded VGG16 weights %s into %d layers", weights, len(loaded))


def fc_weights(weights: Weights) -> Dict[str, List[np.ndarray]]:
    """VGG16's FC6 and FC7 (Keras's `fc1`, `fc2`), e.g. to initialise the detector's box head.

    Args:
      weights: "imagenet" or the path of a local Keras VGG16 weights file with
        the classifier (`vgg16_weights_tf_dim_ordering_tf_kernels.h5`).

    Returns:
      `{"fc6": [kernel [25088, 4096], bias [4096]], "fc7": [kernel [4096, 4096],
      bias [4096]]}`; FC6's rows are pool5's `[7, 7, 512]` flattened row-major.

    Raises:
      ValueError: `weights` is None, or a file without the classifier (Keras's
        own ValueError for a Keras 3 `.weights.h5`).
    """
    if weights is None:
        raise ValueError("VGG16's FC6/FC7 need pretrained weights ('imagenet' or the path of "
                         "a Keras VGG16 weights file with the classifier), got None")
    if weights != "imagenet" and _is_legacy_file(weights) and not _legacy_file_has_classifier(weights):
        raise ValueError(f"the VGG16 weights file {os.fspath(weights)} has no classifier "
                         "(fc1, fc2): it cannot initialise FC6 and FC7")
    source = keras_vgg16(weights, include_top=True)
    return {paper_name: list(source.get_layer(keras_name).get_weights())
            for paper_name, keras_name in FC_LAYERS.items()}
