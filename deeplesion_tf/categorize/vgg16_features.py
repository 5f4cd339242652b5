"""VGG16 with its classifier: lesion patch features (FC6/FC7) and fine-tuning on clusters.

The categorizer (paper Sec. 2.2) encodes each lesion patch with VGG16's
fully-connected layers, clusters the features, fine-tunes VGG16 on the cluster
labels and encodes again. Keras names VGG16's FC6 and FC7 `fc1` and `fc2`; this
module keeps Keras's layer names so that ImageNet weights load by name.

A `width_multiplier` below 1 (and smaller `fc_units` and `input_size`) keeps the
same topology small enough to train on a CPU; ImageNet weights only fit the
full-size network.

Shapes: patches `[batch, input_size, input_size, 3]`, VGG-preprocessed (BGR, mean
subtracted, as `keras.applications.vgg16.preprocess_input` makes them);
features `[batch, fc_units]`.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from deeplesion_tf.nets import trunk_file
from deeplesion_tf.nets import vgg16

_FULL_SIZE = dict(width_multiplier=1.0, fc_units=4096, input_size=224)

# Convolutional blocks whose pooled output can stand in for FC6/FC7 -> Keras's layer names.
POOLED_BLOCKS = {f"block{b}": f"block{b}_pool" for b in range(1, 6)}
FEATURE_LAYER_CHOICES = tuple(vgg16.FC_LAYERS) + tuple(POOLED_BLOCKS)
# Sides of the centred crops of a block's map that `pooled_block_extractor`
# averages, as fractions of the map's side: the whole patch (the region around
# the lesion), the middle half (the host tissue) and the middle quarter (the
# lesion itself, for the default padding of the CPU preset).
DEFAULT_CROP_FRACTIONS = (1.0, 0.5, 0.25)


def build_vgg16(
    *,
    weights: vgg16.Weights = None,
    num_classes: int = 1000,
    input_size: int = 224,
    width_multiplier: float = 1.0,
    fc_units: int = 4096,
    norm: str = "none",
    name: str = "vgg16",
) -> keras.Model:
    """VGG16 with FC6, FC7 and a `num_classes` softmax, named as Keras names it.

    Args:
      weights: None (random initialisation), "imagenet" (Keras downloads the
        file once into ~/.keras/models), or the path of a local Keras VGG16
        weights file with the classifier (`vgg16_weights_tf_dim_ordering_tf_kernels.h5`).
        The convolutions, FC6 and FC7 take those weights; the classifier too
        when `num_classes` is 1000.
        Or a saved trunk (`nets.trunk_file`: `bin/pretrain_trunk`'s or an earlier
        categorizer's `OUTPUT_DIR/trunk`), of any size, whose width and
        normalisation must be this network's.
      num_classes: outputs of the final softmax (the clusters when fine-tuning).
      input_size: rows = columns of the input patches; a multiple of 32.
      width_multiplier: scales every convolution's filters.
      fc_units: units of FC6 and FC7.
      norm: "none" (VGG16, the paper) or "group": group normalisation after
        each convolution, as the detector's trunk has it with `--backbone_norm=group`,
        so that the fine-tuned network can start the detector (`nets.trunk_file`).
      name: the model's name.

    Raises:
      ValueError: a saved trunk of another width or normalisation
        (`trunk_file.check_fits`); ImageNet weights asked for a network that is not full-size
        or with a normalisation ImageNet's VGG16 lacks, an input size that is not
        a multiple of 32, or an unknown `norm`.
    """
    size = dict(width_multiplier=width_multiplier, fc_units=fc_units, input_size=input_size)
    if trunk_file.is_trunk(weights):
        # A trunk of this project's own training fits any input size and FC width:
        # its convolutions load by name, FC6/FC7 where their shapes fit.
        model = build_vgg16(num_classes=num_classes, input_size=input_size,
                            width_multiplier=width_multiplier, fc_units=fc_units, norm=norm,
                            name=name)
        trunk_file.load_convolutions(model, weights, width_multiplier=width_multiplier, norm=norm)
        for paper_name, arrays in trunk_file.fc_arrays(weights).items():
            layer = model.get_layer(vgg16.FC_LAYERS[paper_name])
            if [tuple(v.shape) for v in layer.weights] == [a.shape for a in arrays]:
                layer.set_weights(arrays)
            else:
                logging.info("%s of the trunk in %s does not fit %s's (%s): it starts randomly",
                             paper_name, weights, name, [tuple(v.shape) for v in layer.weights])
        return model
    if weights is not None and norm != "none":
        raise ValueError(f"pretrained VGG16 weights have no normalisation layers; norm={norm!r} "
                         "needs weights=None")
    if weights is not None and size != _FULL_SIZE:
        raise ValueError(f"pretrained VGG16 weights fit only {_FULL_SIZE}, not {size}; "
                         "use weights=None for a smaller network")
    if input_size % 32 or input_size < 32:
        raise ValueError(
            f"input_size must be a multiple of 32 (five 2x poolings), got {input_size}")
    inputs = keras.Input((input_size, input_size, 3), name="patch")
    x = vgg16.conv_stack(inputs, width_multiplier=width_multiplier, norm=norm)
    x = vgg16.fc_layers(keras.layers.Flatten(name="flatten")(x), fc_units)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        # A new classifier for the clusters stays randomly initialised.
        vgg16.load_by_name(model, weights, skip=() if num_classes == 1000 else ("predictions",))
    return model


def with_new_classifier(model: keras.Model, num_classes: int) -> keras.Model:
    """The same network (shared layers) with a fresh `num_classes` softmax on FC7."""
    fc7 = model.get_layer(vgg16.FC_LAYERS["fc7"]).output
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(fc7)
    return keras.Model(model.input, outputs, name=model.name)


def feature_extractor(model: keras.Model, layer: str = "fc7") -> keras.Model:
    """A model from patches to features of `model` (shared weights).

    Args:
      model: from `build_vgg16`.
      layer: "fc6" or "fc7" (the paper's features), or "block1" ... "block5" for
        that block's output pooled over centred crops (`pooled_block_extractor`).

    Raises:
      ValueError: `layer` is none of those.
    """
    if layer in POOLED_BLOCKS:
        return pooled_block_extractor(model, layer)
    if layer not in vgg16.FC_LAYERS:
        raise ValueError(f"feature layer must be one of {FEATURE_LAYER_CHOICES}, got {layer!r}")
    return keras.Model(model.input, model.get_layer(vgg16.FC_LAYERS[layer]).output,
                       name=f"{model.name}_{layer}")


def pooled_block_extractor(model: keras.Model, block: str = "block1",
                           crop_fractions: Sequence[float] = DEFAULT_CROP_FRACTIONS
                           ) -> keras.Model:
    """Patches -> a block's output averaged over centred crops, concatenated.

    Used instead of FC6/FC7 when VGG16 has no pretrained weights. FC6/FC7 of a
    randomly initialised network are random projections of the position-
    dependent flatten of block 5, which on the synthetic PACS mostly tells a
    dark (lung) background from the rest (benchmarks/BENCHMARKS.md). Averaging a
    block's activations over the whole patch, its middle half and its middle
    quarter (a centred spatial pyramid) keeps what the block sees of the
    lesion, of its host tissue and of the region around it, wherever in the
    patch these lie. Keras layers only, so the extractor is serialisable.

    Args:
      model: from `build_vgg16`.
      block: "block1" ... "block5"; the block's pooling layer is read.
      crop_fractions: sides of the centred crops, as fractions in (0, 1] of the
        map's side; the crops are rounded to whole cells, at least one.

    Returns:
      A model from patches `[batch, S, S, 3]` to `[batch, len(crop_fractions) * C]`,
      C being the block's channels, crop by crop in `crop_fractions` order.

    Raises:
      ValueError: an unknown block, or a fraction outside (0, 1].
    """
    if block not in POOLED_BLOCKS:
        raise ValueError(f"block must be one of {sorted(POOLED_BLOCKS)}, got {block!r}")
    if not crop_fractions or not all(0.0 < f <= 1.0 for f in crop_fractions):
        raise ValueError(f"crop fractions must lie in (0, 1], got {tuple(crop_fractions)}")
    x = model.get_layer(POOLED_BLOCKS[block]).output  # [batch, s, s, C]
    side = x.shape[1]
    pooled = []
    for i, fraction in enumerate(crop_fractions):
        margin = min(int(round(side * (1.0 - fraction) / 2.0)), (side - 1) // 2)
        crop = keras.layers.Cropping2D(margin, name=f"{block}_crop{i}")(x) if margin else x
        pooled.append(keras.layers.GlobalAveragePooling2D(name=f"{block}_gap{i}")(crop))
    features = (keras.layers.Concatenate(name=f"{block}_pyramid")(pooled)
                if len(pooled) > 1 else pooled[0])
    return keras.Model(model.input, features, name=f"{model.name}_{block}_pooled")


def extract_features(extractor: keras.Model, patches: tf.data.Dataset, batch_size: int = 32,
                     *, mirror: bool = False) -> Tuple[np.ndarray, List[str]]:
    """Encodes every patch of a patch dataset, in order.

    Args:
      extractor: from `feature_extractor`.
      patches: unbatched elements `{"patch": [S, S, 3], "lesion_id": string, ...}`.
      batch_size: patches per forward pass.
      mirror: each patch's features are the mean of its own and its left-right
        mirror's, so that a lesion and its mirror image (the same kind of lesion
        on the other side of the body) are encoded alike.

    Returns:
      `(features [n, units] float32, lesion_ids)`, row i belonging to lesion_ids[i].
    """
    features, lesion_ids = [], []
    batches = patches.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for batch in tqdm(batches, desc="VGG16 features", unit=" batches"):
        encoded = np.asarray(extractor(batch["patch"], training=False))
        if mirror:
            mirrored = tf.reverse(batch["patch"], axis=[2])  # [batch, rows, columns, 3]
            encoded = (encoded + np.asarray(extractor(mirrored, training=False))) / 2.0
        features.append(encoded)
        lesion_ids.extend(v.decode() for v in batch["lesion_id"].numpy())
    if not features:
        raise ValueError("the patch dataset is empty")
    return np.concatenate(features).astype(np.float32), lesion_ids
