"""The detector's second stage: FC6, FC7, then class logits and class-specific box deltas.

Shape shorthand:
  B: images per batch.
  R: RoIs per image.
  P: bins per side of the pooled RoIs (7 for VGG16's FC6).
  C: channels of the pooled RoIs.
  K: foreground classes (`num_classes`); class 0 is the background.

Input: pooled RoIs `[B, R, P, P, C]`, flattened row-major per RoI (as Keras's
VGG16 flattens pool5, so that its FC6 weights fit at P = 7, C = 512).
Outputs: `class_logits` `[B, R, K + 1]`, column 0 the background, and
`deltas` `[B, R, K, 4]` `(ty, tx, th, tw)`: class k >= 1 uses
`deltas[..., k - 1, :]` (the background has none).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class BoxHead(keras.layers.Layer):
    """Flatten -> FC6 (ReLU) -> FC7 (ReLU) -> class logits (K + 1) and deltas (4K).

    The classifier's kernel starts normal with std 0.01, the regressor's with
    std 0.001, biases at 0 (Faster R-CNN); FC6 and FC7 start Glorot-uniform or
    from VGG16 (`load_fc_weights`).

    Args:
      num_classes: K, foreground classes.
      fc_units: units of FC6 and FC7 (4096 for VGG16).
      dropout_rate: dropout after FC6 and after FC7 when training (0 for none;
        py-faster-rcnn's VGG16 uses 0.5).

    Call args:
      pooled: `[B, R, P, P, C]`, P and C known when the layer is built.
      training: whether the dropout is on.

    Returns:
      `{"class_logits": [B, R, K + 1], "deltas": [B, R, K, 4]}`.
    """

    def __init__(self, num_classes: int, fc_units: int = 4096, dropout_rate: float = 0.0,
                 category_loss_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1 or fc_units < 1:
            raise ValueError(f"num_classes and fc_units must be >= 1, got {num_classes}, {fc_units}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
        if category_loss_weight < 0:
            raise ValueError(f"category_loss_weight must be >= 0, got {category_loss_weight}")
        self.num_classes = num_classes
        self.fc_units = fc_units
        self.dropout_rate = dropout_rate
        # The weight of the category term of this head's loss (`losses.rcnn_losses`'
        # `category_weight`; 1 is the plain softmax loss, the paper's).
        self.category_loss_weight = float(category_loss_weight)
        self.fc6 = keras.layers.Dense(fc_units, activation="relu", dtype=self.dtype_policy,
                                      name="fc6")
        self.fc7 = keras.layers.Dense(fc_units, activation="relu", dtype=self.dtype_policy,
                                      name="fc7")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.classifier = keras.layers.Dense(
            num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            bias_initializer="zeros", dtype=self.dtype_policy, name="class_logits")
        self.regressor = keras.layers.Dense(
            4 * num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
            bias_initializer="zeros", dtype=self.dtype_policy, name="deltas")

    def build(self, input_shape):
        if len(input_shape) != 5 or any(d is None for d in input_shape[2:]):
            raise ValueError(f"BoxHead needs pooled RoIs [B, R, P, P, C] with P and C known, "
                             f"got shape {tuple(input_shape)}")
        flat = int(np.prod(input_shape[2:]))
        self.fc6.build((None, None, flat))
        self.fc7.build((None, None, self.fc_units))
        self.classifier.build((None, None, self.fc_units))
        self.regressor.build((None, None, self.fc_units))

    def call(self, pooled, training=None):
        batch = pooled.shape[0] if pooled.shape[0] is not None else tf.shape(pooled)[0]
        num_rois = pooled.shape[1] if pooled.shape[1] is not None else tf.shape(pooled)[1]
        flat = int(np.prod(pooled.shape[2:]))
        x = tf.reshape(pooled, [batch, num_rois, flat])
        x = self.dropout(self.fc6(x), training=training)
        x = self.dropout(self.fc7(x), training=training)
        return {
            "class_logits": self.classifier(x),
            "deltas": tf.reshape(self.regressor(x), [batch, num_rois, self.num_classes, 4]),
        }

    def load_fc_weights(self, fc_weights: Mapping[str, Sequence[np.ndarray]],
                        layers: Sequence[str] = ("fc6", "fc7")) -> None:
        """Copies FC6 and FC7 (or the named ones of them) from `fc_weights` (after building).

        Args:
          fc_weights: `{"fc6": [kernel, bias], "fc7": [kernel, bias]}`, e.g. from
            `nets.vgg16.fc_weights` or `nets.trunk_file.fc_arrays`.
          layers: which of "fc6", "fc7" to copy.

        Raises:
          ValueError: the layer is not built, a key is missing, or the shapes
            differ (P * P * C must be 25088 and fc_units 4096 for VGG16's).
        """
        if not self.built:
            raise ValueError("build the BoxHead (call it once on pooled RoIs) before loading "
                             "FC weights")
        targets = {"fc6": self.fc6, "fc7": self.fc7}
        targets = {key: targets[key] for key in layers}
        missing = sorted(set(targets) - set(fc_weights))
        if missing:
            raise ValueError(f"fc_weights lacks {missing}; it has {sorted(fc_weights)}")
        for key, layer in targets.items():  # All checked before any is set.
            expected = [tuple(v.shape) for v in layer.weights]
            given = [tuple(np.shape(a)) for a in fc_weights[key]]
            if given != expected:
                raise ValueError(f"{key} weights of shapes {given} do not fit the layer's "
                                 f"[kernel, bias] shapes {expected}")
        for key, layer in targets.items():
            layer.set_weights([np.asarray(a) for a in fc_weights[key]])

    def fc_shapes(self) -> Dict[str, List[tuple]]:
        """`{"fc6": [kernel shape, bias shape], "fc7": ...}` of the built layers."""
        return {key: [tuple(v.shape) for v in layer.weights]
                for key, layer in (("fc6", self.fc6), ("fc7", self.fc7))}

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, fc_units=self.fc_units,
                      dropout_rate=self.dropout_rate,
                      category_loss_weight=self.category_loss_weight)
        return config
