"""3DCE: several 3-slice images through one trunk, their feature maps fused (Yan et al. 2018).

3D context enhancement: the input holds M 3-slice images (3M slices around the key
slice, the key in the middle of the central image). Each goes through the shared
backbone; the RPN runs on the central image's feature map and RoI pooling on the
fused map, the M maps concatenated along the channels and reduced back to the
trunk's width by a 1x1 convolution, so that the box head is the one of M = 1.

Where from: the fusion is MULAN's `FeatureFusion3dce` (CADLab
`MULAN_universal_lesion_analysis/maskrcnn/modeling/backbone/feature_fusion_3dce.py`:
reshape `[B*M, C, h, w]` to `[B, M*C, h, w]`, a 1x1 conv to the backbone's channels,
Kaiming-uniform with a = 1, bias 0); the original 3DCE (`lesion_detector_3DCE/rcnn/symbol/symbol_vgg.py`,
`_get_3DCE_head`) reduces each image's map by a 1x1 conv and concatenates before
its position-sensitive pooling. The RPN on the central image is the 3DCE paper's
(Sec. 2.2); MULAN's code feeds it the fused map. We follow the paper there and keep this project's RoI pooling and box head.

Shape shorthand: B images, M context images, S input side, h, w feature map, C channels.
"""

from __future__ import annotations

from typing import Dict

import keras
import tensorflow as tf


def split_context_images(images: tf.Tensor, num_images: int) -> tf.Tensor:
    """`[B, S, S, 3M]` (image m in channels `3m .. 3m + 2`) -> `[B * M, S, S, 3]`,
    image-major within each example (row `b * M + m`)."""
    shape = tf.shape(images)
    grouped = tf.reshape(images, tf.stack([shape[0], shape[1], shape[2], num_images, 3]))
    return tf.reshape(tf.transpose(grouped, [0, 3, 1, 2, 4]),
                      tf.stack([shape[0] * num_images, shape[1], shape[2], 3]))


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class ContextFusion(keras.layers.Layer):
    """The M feature maps of each example -> the central one and the fused one.

    Args:
      num_images: M, odd, >= 3.
      channels: C, the backbone's channels (the fused map's too).

    Call args:
      features: `[B * M, h, w, C]` in `split_context_images`' order.

    Returns:
      `{"central": [B, h, w, C], "fused": [B, h, w, C]}`.
    """

    def __init__(self, num_images: int = 3, channels: int = 512, **kwargs):
        super().__init__(**kwargs)
        if num_images < 3 or num_images % 2 == 0:
            raise ValueError(f"num_images must be odd and >= 3, got {num_images}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.num_images = num_images
        self.channels = channels
        # Kaiming-uniform with a = 1 (MULAN) is a limit of sqrt(3 / fan_in): LeCun uniform.
        self.conv = keras.layers.Conv2D(channels, 1, kernel_initializer="lecun_uniform",
                                        bias_initializer="zeros", dtype=self.dtype_policy,
                                        name="fusion_conv")

    def build(self, input_shape):
        self.conv.build([None, None, None, self.num_images * self.channels])
        self.built = True

    def call(self, features) -> Dict[str, tf.Tensor]:
        shape = tf.shape(features)
        batch = shape[0] // self.num_images
        grouped = tf.reshape(features, tf.stack([batch, self.num_images, shape[1], shape[2],
                                                 self.channels]))
        central = grouped[:, self.num_images // 2]
        stacked = tf.reshape(tf.transpose(grouped, [0, 2, 3, 1, 4]),
                             tf.stack([batch, shape[1], shape[2],
                                       self.num_images * self.channels]))
        return {"central": central, "fused": self.conv(stacked)}

    def get_config(self):
        config = super().get_config()
        config.update(num_images=self.num_images, channels=self.channels)
        return config
