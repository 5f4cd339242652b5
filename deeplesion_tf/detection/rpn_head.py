"""The region proposal network's head (Faster R-CNN): objectness and box deltas per anchor.

Shape shorthand:
  B: images per batch.
  h, w: rows and columns of the feature map (stride 8 of the input).
  C: channels of the feature map.
  A: anchors per feature-map position (`num_anchors`).

Outputs are flattened position-major then anchor: row `(y * w + x) * A + a`
belongs to anchor `a` at feature cell `(y, x)`, the order the anchor generator
in `deeplesion_tf.ops` must follow. The deltas of that row are
`(ty, tx, th, tw)`, channels `4a .. 4a + 3` of the regression convolution.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _dim(tensor: tf.Tensor, axis: int):
    """The static size of `axis` when known, else the dynamic one."""
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class RPNHead(keras.layers.Layer):
    """3x3 conv (ReLU) -> 1x1 conv objectness logits (A) and 1x1 conv box deltas (4A).

    Kernels start normal with std 0.01 and biases at 0 (Faster R-CNN).

    Args:
      num_anchors: A, anchors per position.
      channels: filters of the shared 3x3 convolution (512 for VGG16).

    Call args:
      features: `[B, h, w, C]`.

    Returns:
      `{"objectness": [B, h * w * A] logits, "deltas": [B, h * w * A, 4]
      (ty, tx, th, tw)}`, rows ordered as in the module docstring.
    """

    def __init__(self, num_anchors: int = 9, channels: int = 512, **kwargs):
        super().__init__(**kwargs)
        if num_anchors < 1 or channels < 1:
            raise ValueError(f"num_anchors and channels must be >= 1, got {num_anchors}, {channels}")
        self.num_anchors = num_anchors
        self.channels = channels
        self.conv = keras.layers.Conv2D(
            channels, 3, padding="same", activation="relu",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer="zeros", dtype=self.dtype_policy, name="rpn_conv")
        self.objectness_conv = keras.layers.Conv2D(
            num_anchors, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer="zeros", dtype=self.dtype_policy, name="rpn_objectness")
        self.deltas_conv = keras.layers.Conv2D(
            4 * num_anchors, 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer="zeros", dtype=self.dtype_policy, name="rpn_deltas")

    def build(self, input_shape):
        self.conv.build(input_shape)
        hidden_shape = self.conv.compute_output_shape(input_shape)
        self.objectness_conv.build(hidden_shape)
        self.deltas_conv.build(hidden_shape)

    def call(self, features):
        hidden = self.conv(features)
        objectness = self.objectness_conv(hidden)  # [B, h, w, A]
        deltas = self.deltas_conv(hidden)  # [B, h, w, 4A], anchor a in channels 4a .. 4a + 3
        batch, height, width = _dim(objectness, 0), _dim(objectness, 1), _dim(objectness, 2)
        rows = (height * width * self.num_anchors
                if isinstance(height, int) and isinstance(width, int) else -1)
        return {
            "objectness": tf.reshape(objectness, [batch, rows]),
            "deltas": tf.reshape(deltas, [batch, rows, 4]),
        }

    def get_config(self):
        config = super().get_config()
        config.update(num_anchors=self.num_anchors, channels=self.channels)
        return config
