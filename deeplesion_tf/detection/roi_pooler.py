"""RoI pooling of the feature map: max over bilinear samples (RoI pooling) or their mean (RoIAlign).

Shape shorthand:
  B: images per batch.
  h, w: rows and columns of the feature map.
  C: channels.
  R: RoIs per image.
  P: `output_size`, bins per side.
  S: `sampling_ratio`, bilinear samples per bin and side.

Coordinates: RoIs are `[ymin, xmin, ymax, xmax]` in absolute pixels of the
network input (pixel centres at integers, continuous widths). Input pixel `p`
lies at feature coordinate `(p + 0.5) / stride - 0.5` (feature cell `i`'s
centre is input pixel `stride * i + (stride - 1) / 2`), on both axes; the RoI is
mapped so, without rounding, and split into P x P equal bins. Each bin takes
S x S bilinear samples at the centres of its S x S sub-bins:

  y_k = y0 + (k + 0.5) * (y1 - y0) / (P * S),  k = 0 .. P * S - 1

(and so for x), then "max" keeps their maximum (the TF form of the paper's RoI
max pooling, as tf-faster-rcnn computes it with crop_and_resize and a max pool)
and "align" their mean (RoIAlign, as Detectron2's `aligned=True`).

Samples outside the feature map read the nearest edge: each sample's
coordinates are clamped to `[0, h - 1]` and `[0, w - 1]` before the bilinear
interpolation (no zero extrapolation). The RoIs get no gradient (Faster R-CNN's
approximate joint training); the features do.
"""

from __future__ import annotations

import keras
import tensorflow as tf

METHODS = ("max", "align")


def _dim(tensor: tf.Tensor, axis: int):
    """The static size of `axis` when known, else the dynamic one."""
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


@keras.saving.register_keras_serializable(package="deeplesion_tf")
class RoIPooler(keras.layers.Layer):
    """Pools every RoI of the feature map to `[P, P, C]`.

    Args:
      output_size: P, bins per side (7 for VGG16's FC6).
      stride: input pixels per feature cell (8 for the trunk without pool4).
      method: "max" (RoI max pooling over the samples) or "align" (their mean).
      sampling_ratio: S, bilinear samples per bin and side.

    Call args:
      features: `[B, h, w, C]`.
      rois: `[B, R, 4]` `[ymin, xmin, ymax, xmax]`, input-image pixels.

    Returns:
      `[B, R, P, P, C]` in the features' dtype.
    """

    def __init__(self, output_size: int = 7, stride: int = 8, method: str = "max",
                 sampling_ratio: int = 2, **kwargs):
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if output_size < 1 or sampling_ratio < 1 or stride <= 0:
            raise ValueError("output_size and sampling_ratio must be >= 1 and stride > 0, got "
                             f"{output_size}, {sampling_ratio}, {stride}")
        self.output_size = output_size
        self.stride = stride
        self.method = method
        self.sampling_ratio = sampling_ratio

    def call(self, features, rois):
        features = tf.convert_to_tensor(features)
        rois = tf.stop_gradient(tf.cast(rois, tf.float32))
        batch, height, width = tf.unstack(tf.shape(features)[:3])
        num_rois = _dim(rois, 1)
        channels = _dim(features, -1)
        samples = self.output_size * self.sampling_ratio  # per side of the RoI

        y_max = tf.cast(height - 1, tf.float32)
        x_max = tf.cast(width - 1, tf.float32)
        ymin, xmin, ymax, xmax = tf.unstack((rois + 0.5) / self.stride - 0.5, axis=-1)  # [B, R]
        offsets = (tf.range(samples, dtype=tf.float32) + 0.5) / samples  # [n]
        ys = ymin[..., None] + (ymax - ymin)[..., None] * offsets  # [B, R, n]
        xs = xmin[..., None] + (xmax - xmin)[..., None] * offsets
        # Clamped to the map, then normalised as crop_and_resize reads them
        # (`y * (h - 1)`); a 1-row map only has row 0.
        ys = tf.clip_by_value(ys, 0.0, y_max) / tf.maximum(y_max, 1.0)
        xs = tf.clip_by_value(xs, 0.0, x_max) / tf.maximum(x_max, 1.0)

        # Clamping breaks the even spacing of the samples near the edges, so the
        # samples cannot be one crop_and_resize box per RoI: each sample is a
        # point box (a 1 x 1 crop samples the box centre), all in one call. The
        # result has as many elements as P*S x P*S crops per RoI would.
        grid_shape = [batch, num_rois, samples, samples]
        ys = tf.broadcast_to(ys[..., :, None], grid_shape)
        xs = tf.broadcast_to(xs[..., None, :], grid_shape)
        points = tf.reshape(tf.stack([ys, xs, ys, xs], axis=-1), [-1, 4])
        box_indices = tf.reshape(
            tf.broadcast_to(tf.range(batch)[:, None, None, None], grid_shape), [-1])
        values = tf.image.crop_and_resize(features, points, box_indices, [1, 1])  # [B*R*n*n, 1, 1, C]
        values = tf.reshape(values, [batch * num_rois, samples, samples, channels])

        window = self.sampling_ratio
        if self.method == "max":
            pooled = tf.nn.max_pool2d(values, window, window, "VALID")
        else:
            pooled = tf.nn.avg_pool2d(values, window, window, "VALID")
        pooled = tf.reshape(pooled, [batch, num_rois, self.output_size, self.output_size, channels])
        return tf.cast(pooled, features.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(output_size=self.output_size, stride=self.stride, method=self.method,
                      sampling_ratio=self.sampling_ratio)
        return config
