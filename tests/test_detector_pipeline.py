"""Values of the detector's input pipeline and of the HU windows.

Hand-made examples (HU painted where the lesion is) check where boxes land
after resize and flip; the dummy PACS built with the `pacs` config checks the
pipeline on what the builder writes.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.data import hu_windows
from deeplesion_tf.data import png16
from tests import tfds_helpers

WIDE = hu_windows.NIH_WIDE_WINDOW
BACKGROUND_HU, LESION_HU, PREVIOUS_HU, NEXT_HU = -1000.0, 2000.0, -500.0, 500.0


def _wide(hu):
    return (np.asarray(hu, np.float64) + 1024.0) / 4095.0


def _stored(hu):
    return (np.asarray(hu) + 32768).astype(np.uint16)[..., np.newaxis]


def _example(height, width, measurements, lesion_ids, patient="p1", paint_padding=0.0):
    """A decoded `deeplesion` example: the key slice is LESION_HU on the pixels
    that cover each measurement's box widened by `paint_padding` (the box's
    edges rounded outwards), BACKGROUND_HU elsewhere; the previous and next
    slices are constant."""
    key = np.full((height, width), BACKGROUND_HU, np.float32)
    for m in measurements:
        box = bookmarks.measure(bookmarks.Bookmark("m", tuple(m), height, width), paint_padding).box
        y1, x1 = np.floor(box[:2]).astype(int)
        y2, x2 = np.ceil(box[2:]).astype(int)
        key[y1:y2 + 1, x1:x2 + 1] = LESION_HU
    return {
        "image": _stored(key),
        "previous_slice": _stored(np.full((height, width), PREVIOUS_HU)),
        "next_slice": _stored(np.full((height, width), NEXT_HU)),
        "lesions": {"measurement": np.asarray(measurements, np.float32).reshape(-1, 8),
                    "lesion_id": np.asarray(lesion_ids, object)},
        "patient_id": patient,
    }


def _dataset(examples):
    signature = {
        "image": tf.TensorSpec([None, None, 1], tf.uint16),
        "previous_slice": tf.TensorSpec([None, None, 1], tf.uint16),
        "next_slice": tf.TensorSpec([None, None, 1], tf.uint16),
        "lesions": {"measurement": tf.TensorSpec([None, 8], tf.float32),
                    "lesion_id": tf.TensorSpec([None], tf.string)},
        "patient_id": tf.TensorSpec([], tf.string),
    }
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def _batches(dataset):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


def _expected_box(measurement, height, width, padding, scale):
    box = bookmarks.measure(bookmarks.Bookmark("m", tuple(measurement), height, width),
                            padding).box
    resized = np.array([round(height * scale), round(width * scale)] * 2) - 1.0
    return np.clip((box + 0.5) * scale - 0.5, 0.0, resized)


# An axis-aligned cross: long axis across, short axis down. Box with padding 4:
# rows 10..26, columns 16..40 of a 40 x 56 slice.
CROSS = (20.0, 18.0, 36.0, 18.0, 28.0, 14.0, 28.0, 22.0)
# A tilted measurement near the bottom-right corner: the padded box is clipped.
CORNER = (45.3, 33.1, 53.7, 38.6, 47.2, 38.9, 51.0, 32.4)
# A box touching the right edge after padding, for the flip.
EDGE = (46.0, 4.0, 52.0, 4.0, 49.0, 2.0, 49.0, 6.0)


# --- HU windows ----------------------------------------------------------------------


def test_window_maps_low_high_and_clips():
    hu = tf.constant([-3000.0, -1024.0, 1023.5, 3071.0, 9000.0])
    np.testing.assert_allclose(hu_windows.apply_window(hu, WIDE), [0.0, 0.0, 0.5, 1.0, 1.0],
                               atol=1e-6)
    np.testing.assert_allclose(
        hu_windows.apply_window(tf.constant([-160.0, 40.0, 240.0]), hu_windows.SOFT_TISSUE_WINDOW),
        [0.0, 0.5, 1.0], atol=1e-6)


def test_windows_stack_window_major():
    hu = tf.constant([[[-600.0, 0.0]]])  # [1, 1, 2]: two slice channels
    out = hu_windows.apply_windows(hu, [hu_windows.LUNG_WINDOW, hu_windows.BONE_WINDOW]).numpy()
    lung = (np.array([-600.0, 0.0]) + 1350.0) / 1500.0
    bone = (np.array([-600.0, 0.0]) + 450.0) / 1500.0
    np.testing.assert_allclose(out[0, 0], [lung[0], lung[1], max(bone[0], 0.0), bone[1]],
                               atol=1e-6)


def test_window_constants():
    assert hu_windows.DETECTOR_WINDOWS == ((-1024.0, 3071.0),)
    assert hu_windows.CATEGORIZER_WINDOWS == ((-1350.0, 150.0), (-160.0, 240.0), (-450.0, 1050.0))


@pytest.mark.parametrize("windows", [[], [(100.0, 100.0)], [(1.0, 2.0, 3.0)]])
def test_bad_windows_are_refused(windows):
    with pytest.raises(ValueError):
        hu_windows.validate_windows(windows)


def test_hu_from_stored_reads_uint16_and_png_bytes():
    hu = np.array([[-1024, -1, 0, 3071]], np.float32)
    np.testing.assert_array_equal(hu_windows.hu_from_stored(tf.constant(_stored(hu)))[..., 0], hu)
    png = tf.constant(png16.encode_hu(hu, 1))
    np.testing.assert_array_equal(hu_windows.hu_from_stored(png)[..., 0], hu)


# --- Boxes ---------------------------------------------------------------------------


def test_measurement_boxes_match_bookmarks_measure():
    rng = np.random.default_rng(3)
    height, width = 40, 56
    measurements = np.concatenate([
        np.array([CROSS, CORNER, EDGE]),
        rng.uniform(0, [width - 1, height - 1] * 4, size=(20, 8))])
    for padding in (0.0, 4.0, 20.0):
        got = detector_pipeline.measurement_boxes(
            tf.constant(measurements, tf.float32), height, width, padding).numpy()
        want = [bookmarks.measure(bookmarks.Bookmark("m", tuple(m), height, width), padding).box
                for m in measurements.astype(np.float32)]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_flip_boxes_twice_is_identity():
    boxes = tf.constant([[1.0, 0.0, 5.0, 9.0], [2.5, 3.25, 7.0, 4.5]])
    once = detector_pipeline.flip_boxes_left_right(boxes, 10)
    np.testing.assert_allclose(once, [[1.0, 0.0, 5.0, 9.0], [2.5, 4.5, 7.0, 5.75]])
    np.testing.assert_allclose(detector_pipeline.flip_boxes_left_right(once, 10), boxes)


def test_boxes_to_original_inverts_scale_boxes():
    boxes = tf.constant([[0.0, 3.0, 17.0, 39.0]])
    for scale in (0.5, 1.0, 2.0, 512.0 / 333.0):
        np.testing.assert_allclose(detector_pipeline.boxes_to_original(
            detector_pipeline.scale_boxes(boxes, scale), scale), boxes, atol=1e-4)
    np.testing.assert_allclose(detector_pipeline.scale_boxes(boxes, 1.0), boxes)
    np.testing.assert_allclose(detector_pipeline.scale_boxes(boxes, 2.0),
                               [[0.5, 6.5, 34.5, 78.5]])


@pytest.mark.parametrize("image_size", [56, 112, 35])  # scale 1, 2 and 0.625
def test_eval_boxes_are_measure_boxes_mapped_by_the_scale(image_size):
    height, width, padding = 40, 56, 4.0
    examples = [_example(height, width, [CROSS, CORNER], ["a", "b"]),
                _example(height, width, [EDGE], ["c"])]
    batch, = _batches(detector_pipeline.make_detector_dataset(
        _dataset(examples), training=False, batch_size=2, image_size=image_size,
        box_padding_px=padding, deterministic=True))
    scale = image_size / width
    np.testing.assert_allclose(batch["image_scale"], [scale, scale], rtol=1e-6)
    np.testing.assert_array_equal(batch["original_size"], [[height, width]] * 2)
    want = [[_expected_box(m, height, width, padding, scale) for m in ms]
            for ms in ([CROSS, CORNER], [EDGE])]
    np.testing.assert_allclose(batch["boxes"][0], want[0], atol=1e-4)
    np.testing.assert_allclose(batch["boxes"][1, :1], want[1], atol=1e-4)
    if image_size == width:  # No resampling: the boxes of bookmarks.measure themselves.
        np.testing.assert_allclose(batch["boxes"][0, 0], [10.0, 16.0, 26.0, 40.0])


@pytest.mark.parametrize("image_size", [35, 100, 112])
def test_resize_is_bilinear_with_one_scale_on_both_axes(image_size):
    """40 x 56 slices at scales 0.625, 1.79 and 2; at 100 the short side (71.4) is rounded."""
    rng = np.random.default_rng(5)
    key = rng.uniform(-1000.0, 3000.0, size=(40, 56)).round().astype(np.float32)
    example = _example(40, 56, [CROSS], ["a"])
    example["image"] = _stored(key)
    batch, = _batches(detector_pipeline.make_detector_dataset(
        _dataset([example]), training=False, batch_size=1, image_size=image_size))
    scale = image_size / 56
    size = [round(40 * scale), round(56 * scale)]
    # ScaleAndTranslate with a triangle kernel is bilinear resampling at exactly `scale`.
    want = tf.raw_ops.ScaleAndTranslate(
        images=key[None, :, :, None], size=size, scale=[scale, scale], translation=[0.0, 0.0],
        kernel_type="triangle", antialias=False)[0, :, :, 0].numpy()
    np.testing.assert_allclose(batch["images"][0, :size[0], :size[1], 1], _wide(want), atol=2e-6)
    np.testing.assert_array_equal(batch["images"][0, size[0]:], 0.0)
    np.testing.assert_array_equal(batch["images"][0, :, size[1]:], 0.0)


def _check_marker_inside_box(image, box, resized_size, scale):
    """The painted lesion (key channel) fills the box, and nothing lies farther from it
    than 2 source pixels (1 for rounding the painted edges outwards, 1 for bilinear)."""
    key = image[..., 1]
    lesion, background = _wide(LESION_HU), _wide(BACKGROUND_HU)
    rows, cols = np.mgrid[:key.shape[0], :key.shape[1]]
    in_content = (rows < resized_size[0]) & (cols < resized_size[1])
    y1, x1, y2, x2 = box
    inside = (rows >= y1) & (rows <= y2) & (cols >= x1) & (cols <= x2)
    reach = 2.0 * scale
    near = ((rows > y1 - reach) & (rows < y2 + reach) & (cols > x1 - reach) & (cols < x2 + reach))
    assert inside.sum() > 0
    np.testing.assert_allclose(key[inside], lesion, atol=1e-5)
    np.testing.assert_allclose(key[in_content & ~near], background, atol=1e-5)
    np.testing.assert_array_equal(image[~in_content], 0.0)


@pytest.mark.parametrize("image_size", [56, 112, 35])
def test_boxes_cover_the_lesion_after_resize_and_flip(image_size):
    height, width, padding = 40, 56, 4.0
    examples = [_example(height, width, [m], [f"l{i}"], paint_padding=padding)
                for i, m in enumerate([CROSS, EDGE, CORNER] * 4)]
    batches = _batches(detector_pipeline.make_detector_dataset(
        _dataset(examples), training=True, batch_size=4, image_size=image_size,
        box_padding_px=padding, deterministic=True, seed=1))
    scale = image_size / width
    resized = (round(height * scale), round(width * scale))
    flipped = 0
    for batch in batches:
        for image, box, lesion_id in zip(batch["images"], batch["boxes"], batch["lesion_ids"]):
            measurement = [CROSS, EDGE, CORNER][int(lesion_id[0][1:]) % 3]
            unflipped = _expected_box(measurement, height, width, padding, scale)
            mirrored = detector_pipeline.flip_boxes_left_right(unflipped[None], resized[1])[0]
            assert np.allclose(box[0], unflipped, atol=1e-4) or np.allclose(box[0], mirrored,
                                                                            atol=1e-4)
            flipped += not np.allclose(box[0], unflipped, atol=1e-4)
            _check_marker_inside_box(image, box[0], resized, scale)
            content = image[:resized[0], :resized[1]]
            np.testing.assert_allclose(content[..., 0], _wide(PREVIOUS_HU), atol=1e-6)
            np.testing.assert_allclose(content[..., 2], _wide(NEXT_HU), atol=1e-6)
    assert 0 < flipped < 12  # both outcomes occur


def test_training_flip_mirrors_the_eval_image():
    """Tall 56 x 40 slices: the content (46 columns at 64 / 56) is mirrored, the padding not."""
    height, width, content_width = 56, 40, 46
    bottom_right = (34.0, 50.0, 38.0, 53.0, 35.0, 54.0, 37.0, 49.0)
    examples = [_example(height, width, [m], [f"l{i}"])
                for i, m in enumerate([CROSS, bottom_right] * 4)]
    common = dict(batch_size=1, image_size=64, box_padding_px=4.0, deterministic=True)
    evaluation = {b["lesion_ids"][0, 0]: b for b in _batches(
        detector_pipeline.make_detector_dataset(_dataset(examples), training=False, **common))}
    outcomes = set()
    for b in _batches(detector_pipeline.make_detector_dataset(
            _dataset(examples), training=True, shuffle_buffer=8, **common)):
        e = evaluation[b["lesion_ids"][0, 0]]
        np.testing.assert_array_equal(b["images"][0, :, content_width:], 0.0)
        if np.array_equal(b["images"], e["images"]):
            outcomes.add("kept")
            np.testing.assert_allclose(b["boxes"], e["boxes"])
        else:
            outcomes.add("flipped")
            np.testing.assert_array_equal(b["images"][0, :, :content_width],
                                          e["images"][0, :, content_width - 1::-1])
            np.testing.assert_allclose(detector_pipeline.flip_boxes_left_right(
                b["boxes"][0], content_width), e["boxes"][0], atol=1e-5)
    assert outcomes == {"kept", "flipped"}


def test_padding_values_and_counts():
    examples = [_example(40, 56, [CROSS, CORNER, EDGE], ["a", "b", "c"]),
                _example(40, 56, [EDGE], ["d"])]
    batch, = _batches(detector_pipeline.make_detector_dataset(
        _dataset(examples), training=False, batch_size=2, image_size=64, deterministic=True))
    np.testing.assert_array_equal(batch["num_lesions"], [3, 1])
    np.testing.assert_array_equal(batch["boxes"][1, 1:], -np.ones((2, 4)))
    np.testing.assert_array_equal(batch["classes"], [[1, 1, 1], [1, -1, -1]])
    np.testing.assert_array_equal(batch["lesion_ids"], [[b"a", b"b", b"c"], [b"d", b"", b""]])
    # 40 x 56 at scale 64/56: 46 rows of content, then zeros.
    np.testing.assert_array_equal(batch["images"][:, 46:], 0.0)
    assert np.all(batch["images"][:, :46] > 0.0)


def test_class_table_maps_lesions():
    examples = [_example(40, 56, [CROSS, EDGE], ["a", "b"]), _example(40, 56, [CORNER], ["c"])]
    batch, = _batches(detector_pipeline.make_detector_dataset(
        _dataset(examples), training=False, batch_size=2, image_size=56, deterministic=True,
        class_table={"a": 3, "b": 1, "c": 5, "unused": 2}))
    np.testing.assert_array_equal(batch["classes"], [[3, 1], [5, -1]])


def test_class_table_missing_lesion_fails_naming_it():
    examples = [_example(40, 56, [CROSS, EDGE], ["a", "lesion_without_label"])]
    dataset = detector_pipeline.make_detector_dataset(
        _dataset(examples), training=False, batch_size=1, image_size=56,
        class_table={"a": 3})
    with pytest.raises(tf.errors.InvalidArgumentError, match="lesion_without_label"):
        _batches(dataset)


@pytest.mark.parametrize("table", [{}, {"a": 0}, {"a": 1.5}])
def test_bad_class_tables_are_refused(table):
    with pytest.raises(ValueError):
        detector_pipeline.make_detector_dataset(_dataset([]), training=False, batch_size=1,
                                                class_table=table)


def test_several_windows_give_window_major_channels():
    examples = [_example(40, 56, [CROSS], ["a"])]
    windows = [hu_windows.LUNG_WINDOW, hu_windows.SOFT_TISSUE_WINDOW]
    batch, = _batches(detector_pipeline.make_detector_dataset(
        _dataset(examples), training=False, batch_size=1, image_size=56, windows=windows))
    corner = batch["images"][0, 0, 0]  # background of the key slice
    lung = lambda hu: np.clip((hu + 1350.0) / 1500.0, 0, 1)  # noqa: E731
    soft = lambda hu: np.clip((hu + 160.0) / 400.0, 0, 1)  # noqa: E731
    np.testing.assert_allclose(corner, [lung(PREVIOUS_HU), lung(BACKGROUND_HU), lung(NEXT_HU),
                                        soft(PREVIOUS_HU), soft(BACKGROUND_HU), soft(NEXT_HU)],
                               atol=1e-6)


# --- On the dummy PACS ----------------------------------------------------------------


def test_dummy_pacs_boxes_images_and_ids(dummy_pacs_builder):
    examples = tfds_helpers.examples(dummy_pacs_builder, "train")
    batches = _batches(detector_pipeline.make_detector_dataset(
        dummy_pacs_builder.as_dataset(split="train"), training=False, batch_size=4, image_size=64,
        box_padding_px=20.0, deterministic=True))
    images = np.concatenate([b["images"] for b in batches])
    assert len(images) == len(examples) == 14
    rows = [(b, i) for b in batches for i in range(len(b["images"]))]
    for example, (batch, i) in zip(examples, rows):
        n = len(example["lesions"]["lesion_id"])
        assert batch["num_lesions"][i] == n
        np.testing.assert_array_equal(batch["lesion_ids"][i, :n], example["lesions"]["lesion_id"])
        want = [bookmarks.measure(bookmarks.Bookmark("m", tuple(m), 64, 64), 20.0).box
                for m in example["lesions"]["measurement"]]
        np.testing.assert_allclose(batch["boxes"][i, :n], want, atol=1e-4)
        # The config pads by 20 px too: the stored boxes agree.
        np.testing.assert_allclose(batch["boxes"][i, :n], tfds_helpers.box_pixels(example),
                                   atol=1e-3)
        slices = [example[k][..., 0].astype(np.float64) - 32768 for k in
                  ("previous_slice", "image", "next_slice")]
        np.testing.assert_allclose(batch["images"][i], np.clip(_wide(np.stack(slices, -1)), 0, 1),
                                   atol=1e-6)


def test_dummy_pacs_deterministic_runs_are_identical_and_png_bytes_agree(dummy_pacs_builder):
    def run(**read):
        return _batches(detector_pipeline.make_detector_dataset(
            dummy_pacs_builder.as_dataset(split="train", **read), training=True, batch_size=4,
            image_size=96, deterministic=True, seed=7))

    first, second = run(), run()
    skip = tfds.decode.SkipDecoding()
    encoded = run(decoders={"image": skip, "previous_slice": skip, "next_slice": skip})
    assert len(first) == 3  # 14 examples, the partial batch dropped in training
    for a, b, c in zip(first, second, encoded):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key], c[key])
    other_seed = _batches(detector_pipeline.make_detector_dataset(
        dummy_pacs_builder.as_dataset(split="train"), training=True, batch_size=4, image_size=96,
        deterministic=True, seed=8))
    assert any(not np.array_equal(a["lesion_ids"], b["lesion_ids"])
               or not np.array_equal(a["images"], b["images"]) for a, b in zip(first, other_seed))


def test_training_and_serving_share_one_network_input_transform():
    # Two slices of one odd size (not square, resized down): the pipeline prepares each
    # alone, the serving module the batch; the images must be the same tensors.
    from deeplesion_tf.serving import detector_module

    rng = np.random.default_rng(0)
    stored = rng.integers(32768 - 1200, 32768 + 1500, size=(2, 3, 75, 61, 1)).astype(np.uint16)
    examples = tf.data.Dataset.from_tensor_slices({
        "image": stored[:, 1], "previous_slice": stored[:, 0], "next_slice": stored[:, 2],
        "lesions": {"measurement": np.tile(np.array([[[10, 10, 20, 20, 10, 20, 20, 10]]],
                                                    np.float32), [2, 1, 1]),
                    "lesion_id": np.array([["a"], ["b"]])}})
    windows = ((-1024.0, 3071.0), (-160.0, 240.0))
    batch = next(iter(detector_pipeline.make_detector_dataset(
        examples, training=False, batch_size=2, image_size=48, box_padding_px=0,
        windows=windows, deterministic=True)))  # In order: the batch is compared row by row.

    class _Model:
        num_classes = 1

    module = detector_module.DetectorModule(_Model(), ["lesion"], image_size=48,
                                            windows=windows, box_padding_px=0)
    hu = np.transpose(stored[..., 0].astype(np.float32) - 32768, [0, 2, 3, 1])  # [B, H, W, 3]
    image, scale = module._network_input(tf.constant(hu))
    np.testing.assert_array_equal(image.numpy(), batch["images"].numpy())
    np.testing.assert_array_equal(np.full([2], scale.numpy()), batch["image_scale"].numpy())
