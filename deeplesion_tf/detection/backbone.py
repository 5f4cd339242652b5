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

import keras

from deeplesion_tf.nets import trunk_file
from deeplesion_tf.nets import vgg16

STRIDE = 8
# Blocks that end with a 2x2 pooling; pool4 and pool5 are gone.
_POOLED_BLOCKS = (1, 2, 3)


def build_backbone(
    *,
    weights: vgg16.Weights = None,
    width_multiplier: float = 1.0,
    frozen_blocks: int = 0,
    norm: str = "none",
    name: str = "vgg16_trunk",
) -> keras.Model:
    """VGG16 conv1_1 ... conv5_3 without pool4 (and pool5): `[B, H, W, 3]` -> `[B, h, w, C]`.

    Args:
      weights: None (random initialisation), "imagenet" (Keras downloads the
        no-top file once into ~/.keras/models), the path of a local Keras
        VGG16 weights file, with or without the classifier: a legacy `.h5`
        (as the ImageNet downloads) or a Keras 3 `.weights.h5`; or a trunk
        trained on this project's data (`nets.trunk_file`, e.g. the
        categorizer's `OUTPUT_DIR/trunk`), whose width and normalisation must
        be this trunk's.
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
      ValueError: Keras VGG16 weights with `width_multiplier != 1` (they only fit
        the full-size network), a saved trunk of another width or normalisation
        (`trunk_file.check_fits`), `frozen_blocks` outside 0..5, or an unknown
        `norm` (the last two checked by `vgg16.conv_stack`).
    """
    own_trunk = trunk_file.is_trunk(weights)
    if not own_trunk and weights is not None and width_multiplier != 1.0:
        raise ValueError(f"pretrained VGG16 weights fit only width_multiplier=1.0, not "
                         f"{width_multiplier}; use weights=None for a narrower trunk")
    inputs = keras.Input((None, None, 3), name="image")
    x = vgg16.VGG16Preprocessing(name="vgg16_preprocessing")(inputs)
    # "same" pooling: any H, W. He initialisation: the ReLU trunk trains from scratch
    # (pretrained weights replace it).
    x = vgg16.conv_stack(x, width_multiplier=width_multiplier, pooled_blocks=_POOLED_BLOCKS,
                         pool_padding="same", norm=norm, frozen_blocks=frozen_blocks,
                         kernel_initializer="he_normal")
    model = keras.Model(inputs, x, name=name)
    if own_trunk:
        trunk_file.load_convolutions(model, weights, width_multiplier=width_multiplier,
                                     norm=norm)
    elif weights is not None:
        vgg16.load_convolutions(model, weights)
    return model
