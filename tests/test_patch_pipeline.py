"""Values of the categorizer's patches: numpy crops of the dilated boxes, windowed."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import hu_windows
from deeplesion_tf.data import patch_pipeline
from tests import tfds_helpers

WIDE3 = (hu_windows.NIH_WIDE_WINDOW,) * 3
# Long axis (20, 20)-(30, 20), short axis (25, 15)-(25, 25): with 5 px of padding
# the box is rows 10..30, columns 15..35, 21 x 21 pixels.
SQUARE = (20.0, 20.0, 30.0, 20.0, 25.0, 15.0, 25.0, 25.0)
TILTED = (12.3, 30.7, 27.9, 41.2, 17.4, 39.6, 22.1, 31.5)
CORNER = (40.5, 44.2, 46.0, 46.5, 42.0, 47.0, 44.6, 43.1)  # clipped by 20 px of padding


def _slice(height=48, width=50, seed=0):
    """A smooth random HU slice, `[H, W]` float32."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 400.0, size=(height, width))
    smooth = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1)) / 3.0
    return np.round(smooth).astype(np.float32)


def _dataset(examples):
    """Decoded `deeplesion` examples (only the fields the patch pipeline reads)."""
    def stored(hu):
        return (hu + 32768).astype(np.uint16)[..., np.newaxis]

    items = [{"image": stored(hu),
              "lesions": {"measurement": np.asarray(ms, np.float32).reshape(-1, 8),
                          "lesion_id": np.asarray(ids, object)},
              "patient_id": patient} for hu, ms, ids, patient in examples]
    signature = {"image": tf.TensorSpec([None, None, 1], tf.uint16),
                 "lesions": {"measurement": tf.TensorSpec([None, 8], tf.float32),
                             "lesion_id": tf.TensorSpec([None], tf.string)},
                 "patient_id": tf.TensorSpec([], tf.string)}
    return tf.data.Dataset.from_generator(lambda: iter(items), output_signature=signature)


def _patches(dataset):
    return [{k: v.numpy() for k, v in p.items()} for p in dataset]


def _windowed(hu, windows):
    lows, highs = np.array(windows, np.float64).T
    return np.clip((hu[..., None] - lows) / (highs - lows), 0.0, 1.0) * 255.0


def _bilinear_crop(hu, box, size):
    """numpy reference: `size x size` bilinear samples of `hu` from box edge to box edge."""
    y1, x1, y2, x2 = box
    ys = y1 + np.arange(size) * (y2 - y1) / (size - 1)
    xs = x1 + np.arange(size) * (x2 - x1) / (size - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1i, x1i = np.minimum(y0 + 1, hu.shape[0] - 1), np.minimum(x0 + 1, hu.shape[1] - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = hu[y0][:, x0] * (1 - wx) + hu[y0][:, x1i] * wx
    bottom = hu[y1i][:, x0] * (1 - wx) + hu[y1i][:, x1i] * wx
    return top * (1 - wy) + bottom * wy


def _box(measurement, hu, padding):
    return bookmarks.measure(bookmarks.Bookmark("m", tuple(np.float32(measurement)), *hu.shape),
                             padding).box


def test_integer_box_at_its_own_size_is_a_plain_crop():
    hu = _slice()
    patch, = _patches(patch_pipeline.make_patch_dataset(
        _dataset([(hu, [SQUARE], ["a"], "p")]), padding_px=5.0, patch_size=21,
        windows=WIDE3, vgg_preprocess=False))
    np.testing.assert_array_equal(_box(SQUARE, hu, 5.0), [10, 15, 30, 35])
    # Equal up to float32 rounding of the window's arithmetic (255 / 4095 per HU).
    np.testing.assert_allclose(patch["patch"], _windowed(hu[10:31, 15:36], WIDE3), atol=2e-4)


@pytest.mark.parametrize("measurement", [TILTED, CORNER])
def test_general_box_matches_numpy_bilinear(measurement):
    hu = _slice()
    padding, size = 20.0, 17
    patch, = _patches(patch_pipeline.make_patch_dataset(
        _dataset([(hu, [measurement], ["a"], "p")]), padding_px=padding, patch_size=size,
        vgg_preprocess=False))
    box = _box(measurement, hu, padding)
    if measurement is CORNER:
        assert box[2] == hu.shape[0] - 1 and box[3] == hu.shape[1] - 1  # clipped
    want = _windowed(_bilinear_crop(hu.astype(np.float64), box, size),
                     hu_windows.CATEGORIZER_WINDOWS)
    np.testing.assert_allclose(patch["patch"], want, atol=0.05)


def test_vgg_preprocessing_reverses_channels_and_subtracts_means():
    hu = _slice()
    examples = [(hu, [TILTED], ["a"], "p")]
    raw, = _patches(patch_pipeline.make_patch_dataset(_dataset(examples), patch_size=32,
                                                      vgg_preprocess=False))
    vgg, = _patches(patch_pipeline.make_patch_dataset(_dataset(examples), patch_size=32))
    np.testing.assert_allclose(vgg["patch"], keras.applications.vgg16.preprocess_input(
        raw["patch"].copy()), atol=1e-4)
    # Channel 0 is now the bone window minus ImageNet's blue mean.
    np.testing.assert_allclose(vgg["patch"][..., 0], raw["patch"][..., 2] - 103.939, atol=1e-4)


def test_one_patch_per_lesion_in_order():
    first, second = _slice(seed=1), _slice(seed=2)
    examples = [(first, [TILTED, SQUARE], ["t", "s"], "patient1"),
                (second, [CORNER], ["c"], "patient2")]
    patches = _patches(patch_pipeline.make_patch_dataset(
        _dataset(examples), padding_px=5.0, patch_size=21, windows=WIDE3, vgg_preprocess=False))
    assert [p["lesion_id"] for p in patches] == [b"t", b"s", b"c"]
    assert [p["patient_id"] for p in patches] == [b"patient1", b"patient1", b"patient2"]
    np.testing.assert_allclose(patches[1]["patch"], _windowed(first[10:31, 15:36], WIDE3),
                               atol=2e-4)
    for p, (hu, m) in zip(patches, [(first, TILTED), (first, SQUARE), (second, CORNER)]):
        want = _windowed(_bilinear_crop(hu.astype(np.float64), _box(m, hu, 5.0), 21), WIDE3)
        np.testing.assert_allclose(p["patch"], want, atol=0.05)


def test_vgg_preprocessing_needs_three_windows():
    with pytest.raises(ValueError, match="3 channels"):
        patch_pipeline.make_patch_dataset(_dataset([]), windows=WIDE3[:2])


def test_dummy_pacs_patches(dummy_pacs_builder):
    examples = tfds_helpers.examples(dummy_pacs_builder, "train")
    patches = _patches(patch_pipeline.make_patch_dataset(
        dummy_pacs_builder.as_dataset(split="train"), patch_size=224))
    lesions = [(e, i) for e in examples for i in range(len(e["lesions"]["lesion_id"]))]
    assert len(patches) == len(lesions) == 16  # two key slices hold two lesions each
    for patch, (example, i) in zip(patches, lesions):
        assert patch["lesion_id"] == example["lesions"]["lesion_id"][i]
        assert patch["patient_id"] == example["patient_id"]
        hu = example["image"][..., 0].astype(np.float64) - 32768
        box = _box(example["lesions"]["measurement"][i], hu, 20.0)
        want = keras.applications.vgg16.preprocess_input(
            _windowed(_bilinear_crop(hu, box, 224), hu_windows.CATEGORIZER_WINDOWS))
        np.testing.assert_allclose(patch["patch"], want, atol=0.05)
