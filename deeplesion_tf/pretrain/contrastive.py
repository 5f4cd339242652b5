"""SimCLR on unlabelled slices: a VGG16 trunk for the detector without ImageNet (issue 25).

SimCLR (Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020): two random views of each image
go through the encoder and a small projection head, and the NT-Xent loss asks
every view to pick its partner out of the other `2B - 2` views of the batch.
Chosen over a masked-image objective because it needs no decoder and works with
a convolutional trunk as it is; it is small enough for a CPU at the quickstart's
width (about 0.1 GFLOP per 64 px view through VGG16 at width 0.25).

The encoder is the detector's trunk layer for layer: `VGG16Preprocessing`,
then `vgg16.conv_stack` with pool1-pool3 only (stride 8, as
`detection.backbone`), the same width and normalisation, then a global average
pool and the projection head (thrown away). Its input follows the detector's
convention: three adjacent slices under the detector's window at the detector's
input scale (`data.unlabelled_slices`), so the trunk sees what it will see.

Views (the SimCLR augmentations that carry over to CT): a random crop of 0.2
to 1 of the slice's area and aspect 3/4 to 4/3, resized to `crop_size` (at the
defaults a view spans 0.5x to 2.5x the detector's scale), a left-right flip (a
lesion is not tied to one side), and a random linear change of the window
(contrast x0.8-1.25, level +-0.1), which stands in for SimCLR's colour
distortion: the channels are slices, not colours, so they change together.

Shapes: B images per batch, S their side, c `crop_size`, D `projection_dim`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf
import tqdm
from absl import logging

from deeplesion_tf.nets import vgg16

# The detector's trunk keeps the pooling after these blocks (`detection.backbone`).
TRUNK_POOLED_BLOCKS = (1, 2, 3)


# NT-Xent compares L2-normalised projections, so it does not see the scale of the
# trunk's activations, and without a normalisation layer nothing else bounds it
# (SimCLR's ResNet has batch normalisation throughout). Measured on
# synthetic_benchmark, 300 steps of the quickstart preset with --norm=none:
# block5's mean |activation| 2.9e5 against 0.27 at the random initialisation, and
# the categorizer fine-tuned from that trunk reached NaN in its first iteration.
UNNORMALISED_TRUNK = (
    "contrastive pretraining needs a normalised trunk (--norm=group): NT-Xent is blind to "
    "the scale of the activations, which grow without bound in a trunk without "
    "normalisation (measured: 1e6 times the random initialisation's after 300 steps); "
    "train the detector or the categorizer with --backbone_norm=group to use the trunk")


@dataclasses.dataclass(frozen=True)
class ContrastiveSettings:
    """How the trunk is pretrained (`bin/pretrain_trunk`'s flags).

    Attributes:
      width_multiplier, norm: the trunk's, as the detector's `--width_multiplier`
        and `--backbone_norm`.
      crop_size: side of every view, px.
      min_area, max_area: of a crop, as fractions of the slice's content area.
      projection_units, projection_dim: the head's hidden and output units.
      temperature: of NT-Xent (SimCLR's 0.1 for small batches).
      batch_size: images per step (2x as many views).
      steps, learning_rate: Adam's (as the detector preset, which trains from random).
      seed: of the initialisation, the batches and the views.
    """

    width_multiplier: float = 0.25
    norm: str = "group"
    crop_size: int = 64
    min_area: float = 0.2
    max_area: float = 1.0
    projection_units: int = 256
    projection_dim: int = 64
    temperature: float = 0.1
    batch_size: int = 64
    steps: int = 300
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        # Here rather than in `train`: a binary builds its settings before reading a slice.
        if self.norm == "none":
            raise ValueError(UNNORMALISED_TRUNK)


def nt_xent(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> Dict[str, tf.Tensor]:
    """SimCLR's NT-Xent over `[B, D]` projections of two views; `{"loss", "accuracy"}`.

    Every one of the 2B views is a softmax over the cosine similarities to the
    other 2B - 1, divided by `temperature`, and the loss is the cross-entropy of
    its partner (view i of `z1` with view i of `z2`), averaged over the 2B.
    `accuracy`: how often the partner is the most similar view.
    """
    z = tf.math.l2_normalize(tf.concat([z1, z2], axis=0), axis=1)
    n = tf.shape(z1)[0]
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits -= tf.eye(2 * n, dtype=logits.dtype) * 1e9  # A view is never its own partner.
    partners = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(partners, logits))
    hits = tf.equal(tf.argmax(logits, axis=1, output_type=tf.int32), partners)
    return {"loss": loss, "accuracy": tf.reduce_mean(tf.cast(hits, tf.float32))}


def build_encoder(settings: ContrastiveSettings) -> keras.Model:
    """`[B, c, c, 3]` views in [0, 1] -> `[B, D]` projections; trunk layers named as VGG16's."""
    inputs = keras.Input((settings.crop_size, settings.crop_size, 3), name="view")
    x = vgg16.VGG16Preprocessing(name="preprocess")(inputs)
    x = vgg16.conv_stack(x, width_multiplier=settings.width_multiplier,
                         pooled_blocks=TRUNK_POOLED_BLOCKS, pool_padding="same",
                         norm=settings.norm, kernel_initializer="he_normal")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(settings.projection_units, activation="relu", name="projection_1")(x)
    outputs = keras.layers.Dense(settings.projection_dim, name="projection_2")(x)
    return keras.Model(inputs, outputs, name="simclr_encoder")


def random_views(images: tf.Tensor, sizes: tf.Tensor, settings: ContrastiveSettings,
                 generator: tf.random.Generator) -> tf.Tensor:
    """One random view of each image: `[B, S, S, 3]` uint8 and `[B, 2]` content sizes ->
    `[B, c, c, 3]` float32 in [0, 1] (crop, flip, window change; see the module doc)."""
    batch = tf.shape(images)[0]
    side = tf.cast(tf.shape(images)[1], tf.float32)
    # In pixel centres the content spans 0 .. size - 1; crop_and_resize samples a box's
    # edges too, so a box within that span never reads the zero padding.
    sizes = tf.cast(sizes, tf.float32) - 1.0
    area = generator.uniform([batch], settings.min_area, settings.max_area)
    log_ratio = generator.uniform([batch], math.log(3 / 4), math.log(4 / 3))
    ratio = tf.exp(log_ratio)  # width / height
    height = tf.minimum(tf.sqrt(area / ratio), 1.0) * sizes[:, 0]
    width = tf.minimum(tf.sqrt(area * ratio), 1.0) * sizes[:, 1]
    top = generator.uniform([batch]) * (sizes[:, 0] - height)
    left = generator.uniform([batch]) * (sizes[:, 1] - width)
    flip = generator.uniform([batch]) < 0.5
    # crop_and_resize mirrors a crop whose x1 > x2: the flip comes with the crop.
    x1 = tf.where(flip, left + width, left)
    x2 = tf.where(flip, left, left + width)
    boxes = tf.stack([top, x1, top + height, x2], axis=1) / (side - 1.0)
    views = tf.image.crop_and_resize(tf.cast(images, tf.float32) / 255.0, boxes,
                                     tf.range(batch), [settings.crop_size] * 2)
    contrast = tf.exp(generator.uniform([batch, 1, 1, 1], math.log(0.8), math.log(1.25)))
    level = generator.uniform([batch, 1, 1, 1], -0.1, 0.1)
    return tf.clip_by_value((views - 0.5) * contrast + 0.5 + level, 0.0, 1.0)


@dataclasses.dataclass
class History:
    """Per logged step: the step, NT-Xent loss and partner accuracy (over the last steps)."""

    steps: List[int] = dataclasses.field(default_factory=list)
    loss: List[float] = dataclasses.field(default_factory=list)
    accuracy: List[float] = dataclasses.field(default_factory=list)


def train(images: np.ndarray, sizes: np.ndarray, settings: ContrastiveSettings, *,
          log_every: int = 25, encoder: Optional[keras.Model] = None):
    """Pretrains an encoder on `images` (`unlabelled_slices.load_inputs`); `(encoder, History)`.

    Each step draws `batch_size` images without replacement within an epoch and
    two views of each.

    Raises:
      ValueError: fewer than 2 images (NT-Xent needs another image to contrast).
    """
    if len(images) < 2:
        raise ValueError(f"contrastive pretraining needs at least 2 images, got {len(images)}")
    keras.utils.set_random_seed(settings.seed)
    encoder = encoder or build_encoder(settings)
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    generator = tf.random.Generator.from_seed(settings.seed)
    batch_size = min(settings.batch_size, len(images))
    images_t, sizes_t = tf.constant(images), tf.constant(sizes)

    @tf.function
    def step(indices):
        batch, batch_sizes = tf.gather(images_t, indices), tf.gather(sizes_t, indices)
        v1 = random_views(batch, batch_sizes, settings, generator)
        v2 = random_views(batch, batch_sizes, settings, generator)
        with tf.GradientTape() as tape:
            result = nt_xent(encoder(v1, training=True), encoder(v2, training=True),
                             settings.temperature)
        variables = encoder.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(result["loss"], variables), variables))
        return result

    rng = np.random.default_rng(settings.seed)
    order, cursor = rng.permutation(len(images)), 0
    history, window = History(), []
    progress = tqdm.trange(settings.steps, desc="pretrain_trunk", unit=" steps", mininterval=2.0)
    for i in progress:
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(images)), 0
        result = step(tf.constant(order[cursor:cursor + batch_size], tf.int32))
        cursor += batch_size
        window.append((float(result["loss"]), float(result["accuracy"])))
        if (i + 1) % log_every == 0 or i + 1 == settings.steps:
            loss, accuracy = np.mean(window, axis=0)
            history.steps.append(i + 1)
            history.loss.append(float(loss))
            history.accuracy.append(float(accuracy))
            window = []
            progress.set_postfix(loss=f"{loss:.3f}", accuracy=f"{accuracy:.2f}")
            logging.info("step %d: nt_xent %.4f, partner accuracy %.3f", i + 1, loss, accuracy)
    return encoder, history
