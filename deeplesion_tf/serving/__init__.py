"""The exported detector: a `tf.Module` with TF Serving signatures, its export, and `bin/detect`."""
