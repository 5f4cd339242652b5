"""TFDS datasets of deeplesion-tf; importing this package registers `deeplesion`.

    tfds build deeplesion --imports tfds_deeplesion --config synthetic
"""

from tfds_deeplesion.deeplesion import deeplesion_dataset_builder  # noqa: F401 (registers)
