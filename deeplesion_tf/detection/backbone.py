"""The detector's trunk: VGG16's convolutions with pool4 removed (paper Sec. 2.3), stride 8.

Shape shorthand:
  B: images per batch.
  H, W: rows and columns of the network input (any size).
  h, w: `ceil(H / 8)`, `ceil(W / 8)`, the feature map.
  C: channels of conv5_3, `round(512 * width_multiplier)` (512 at full size).

Input: `[B, H, W, 3]` float32 in [0, 1], the three HU-windowed slices of
`deeplesion_tf.data.detector_pipeline` as channels (treated as "RGB").
Output: conv5_3 activations `[B, h, w, C]`. Blocks 1-3 end with a 2x2 max pool
of stride 2 and padding "same", so any H, W works and feature cell `(i, j)`
covers input pixels `[8i, 8i + 8) x [8j, 8j + 8)` (the last ones padded):
its centre is input pixel `8i + 3.5`, i.e. pixel `p` lies at feature
coordinate `(p + 0.5) / 8 - 0.5` (what `roi_pooler.RoIPooler` uses). Block 4
has no pool (the paper removes pool4) and neither has block 5 (the RoI pooling
follows conv5_3).

Layers keep Keras's VGG16 names (`block1_conv1` ... `block5_conv3`), so
pretrained weights load by name.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Union

import h5py
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deeplesion_tf.categorize import vgg16_features

STRIDE = 8
# Blocks that end with a 2x2 pooling; pool4 and pool5 are gone.
_POOLED_BLOCKS = (1, 2, 3)
# Normalisations after each convolution (`build_backbone(norm=...)`).
NORMS = ("none", "group")
# Group normalisation: at most this many groups, and at least this many channels per group.
_MAX_GROUPS = 32
_MIN_CHANNELS_PER_GROUP = 4
# keras.applications.vgg16.preprocess_input ("caffe" mode): BGR means of ImageNet.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)

Weights = Optional[Union[str, os.PathLike]]


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


def build_backbone(
    *,
    weights: Weights = None,
    width_multiplier: float = 1.0,
    frozen_blocks: int = 0,
    norm: str = "none",
    name: str = "vgg16_trunk",
) -> keras.Model:
    """VGG16 conv1_1 ... conv5_3 without pool4 (and pool5): `[B, H, W, 3]` -> `[B, h, w, C]`.

    Args:
      weights: None (random initialisation), "imagenet" (Keras downloads the
        no-top file once into ~/.keras/models), or the path of a local Keras
        VGG16 weights file, with or without the classifier: a legacy `.h5`
        (as the ImageNet downloads) or a Keras 3 `.weights.h5`.
      width_multiplier: scales every convolution's filters (below 1 for CPU runs).
      frozen_blocks: blocks 1 .. `frozen_blocks` are not trainable (Faster
        R-CNN fine-tunes from conv3_1 on: 2); 0 to 5.
      norm: "none" (VGG16, the paper) or "group": group normalisation
        between each convolution and its ReLU (`block{b}_conv{i}_norm`), for
        training from random initialisation, where a plain VGG16 learns slowly
        (He et al., "Rethinking ImageNet Pre-training", 2019). Batch-size
        independent, so it behaves the same in training, inference, on one
        replica or many. Pretrained weights load into the convolutions only.
      name: the model's name.

    Returns:
      A functional model from `image` `[B, H, W, 3]` float32 in [0, 1] (any H,
      W) to conv5_3 `[B, ceil(H / 8), ceil(W / 8), C]`; its first layer is the
      VGG16 preprocessing, so an exported graph takes [0, 1] images.

    Raises:
      ValueError: pretrained weights with `width_multiplier != 1` (they only fit
        the full-size network), `frozen_blocks` outside 0..5, or an unknown `norm`.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if weights is not None and width_multiplier != 1.0:
        raise ValueError(f"pretrained VGG16 weights fit only width_multiplier=1.0, not "
                         f"{width_multiplier}; use weights=None for a narrower trunk")
    num_blocks = len(vgg16_features.VGG16_BLOCKS)
    if not 0 <= frozen_blocks <= num_blocks:
        raise ValueError(f"frozen_blocks must be in 0..{num_blocks}, got {frozen_blocks}")
    inputs = keras.Input((None, None, 3), name="image")
    x = VGG16Preprocessing(name="vgg16_preprocessing")(inputs)
    for block, (filters, convolutions) in enumerate(vgg16_features.VGG16_BLOCKS, start=1):
        for i in range(1, convolutions + 1):
            channels = max(1, int(round(filters * width_multiplier)))
            x = keras.layers.Conv2D(channels, 3, padding="same",
                                    activation="relu" if norm == "none" else None,
                                    # He initialisation: the ReLU trunk trains from
                                    # scratch (pretrained weights replace it).
                                    kernel_initializer="he_normal",
                                    trainable=block > frozen_blocks,
                                    name=f"block{block}_conv{i}")(x)
            if norm == "group":
                x = keras.layers.GroupNormalization(
                    groups=_num_groups(channels), trainable=block > frozen_blocks,
                    name=f"block{block}_conv{i}_norm")(x)
                x = keras.layers.ReLU(name=f"block{block}_conv{i}_relu")(x)
        if block in _POOLED_BLOCKS:
            x = keras.layers.MaxPooling2D(2, strides=2, padding="same",
                                          name=f"block{block}_pool")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        _load_convolutions(model, weights)
    return model


def _num_groups(channels: int) -> int:
    """Groups for `channels`: up to 32, with at least 4 channels each, dividing `channels`."""
    groups = max(1, min(_MAX_GROUPS, channels // _MIN_CHANNELS_PER_GROUP))
    while channels % groups:
        groups -= 1
    return groups


def _conv_layer_names() -> List[str]:
    return [f"block{block}_conv{i}"
            for block, (_, convolutions) in enumerate(vgg16_features.VGG16_BLOCKS, start=1)
            for i in range(1, convolutions + 1)]


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


def _load_convolutions(model: keras.Model, weights: Union[str, os.PathLike]) -> None:
    include_top = weights != "imagenet" and _legacy_file_has_classifier(weights)
    source = vgg16_features.keras_vgg16(weights, include_top=include_top)
    names = _conv_layer_names()
    for layer_name in names:
        model.get_layer(layer_name).set_weights(source.get_layer(layer_name).get_weights())
    logging.info("Loaded VGG16 weights %s into %d convolutions", weights, len(names))


def vgg16_fc_weights(weights: Weights) -> Dict[str, List[np.ndarray]]:
    """VGG16's FC6 and FC7 (Keras's `fc1`, `fc2`), to initialise `box_head.BoxHead`.

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
        raise ValueError("vgg16_fc_weights needs pretrained weights ('imagenet' or the path of "
                         "a Keras VGG16 weights file with the classifier), got None")
    if weights != "imagenet" and _is_legacy_file(weights) and not _legacy_file_has_classifier(weights):
        raise ValueError(f"the VGG16 weights file {os.fspath(weights)} has no classifier "
                         "(fc1, fc2): it cannot initialise FC6 and FC7")
    source = vgg16_features.keras_vgg16(weights, include_top=True)
    return {paper_name: list(source.get_layer(keras_name).get_weights())
            for paper_name, keras_name in vgg16_features.FEATURE_LAYERS.items()}
