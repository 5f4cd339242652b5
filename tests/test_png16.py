"""16-bit PNGs of HU + 32768: our encoder against Pillow's and TensorFlow's decoders."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplesion_tf.data import png16


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 7), (64, 64), (3, 768)])
def test_round_trip_through_pillow_and_tensorflow(shape):
    rng = np.random.default_rng(sum(shape))
    hu = rng.integers(-32768, 32768, shape).astype(np.float64)
    hu.flat[0], hu.flat[-1] = -32768, 32767  # both ends of the range
    data = png16.encode_hu(hu)
    pillow = np.asarray(Image.open(io.BytesIO(data))).astype(np.int64)
    np.testing.assert_array_equal(pillow - 32768, hu)
    decoded = tf.io.decode_png(data, dtype=tf.uint16).numpy()
    assert decoded.shape == shape + (1,)
    np.testing.assert_array_equal(decoded[..., 0].astype(np.int64) - 32768, hu)
    np.testing.assert_array_equal(png16.decode_hu(data), hu)


def test_rounds_and_clips():
    hu = np.array([[-40000.0, -1000.4, -1000.6, 2.5, 40000.0]])
    np.testing.assert_array_equal(png16.decode_hu(png16.encode_hu(hu)),
                                  [[-32768, -1000, -1001, 2, 32767]])


def test_header_and_bit_depth_checks():
    data = png16.encode_hu(np.zeros((3, 5)))
    assert png16.read_header(data) == png16.PngHeader(5, 3, 16, png16.GRAYSCALE)
    assert png16.is_hu_png(png16.read_header(data))
    eight_bit = io.BytesIO()
    Image.fromarray(np.zeros((3, 5), np.uint8)).save(eight_bit, format="PNG")
    header = png16.read_header(eight_bit.getvalue())
    assert header.bit_depth == 8 and not png16.is_hu_png(header)
    with pytest.raises(ValueError, match="not a PNG"):
        png16.read_header(b"GIF89a" + bytes(30))
    with pytest.raises(ValueError, match="expected one 2-D slice"):
        png16.encode_hu(np.zeros((2, 2, 2)))


def test_smaller_than_raw_on_ct_like_data():
    y, x = np.mgrid[:256, :256]
    hu = np.where((x - 128) ** 2 + (y - 128) ** 2 < 100 ** 2, 40.0, -1000.0)
    hu += np.random.default_rng(0).normal(0, 12, hu.shape)
    assert len(png16.encode_hu(hu)) < 0.6 * hu.size * 2
