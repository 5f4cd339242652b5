"""Resampling to a pixel spacing (3DCE's 0.8 mm): hand cases, the pipeline, serving."""

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.serving import detector_module

WIDE = ((-1024.0, 3071.0),)


@pytest.mark.parametrize("height, width, spacing, expected", [
    (512, 512, 0.6, 0.75),     # 0.6 mm -> 0.8 mm: shrink to 384 px
    (512, 512, 1.0, 1.0),      # 1.25 would exceed 512: capped at the size
    (400, 300, 0.5, 0.625),    # 250 x 188 px at 0.8 mm
    (100, 100, 0.7, 0.88),     # 87.5 px across: rounded (half to even) to 88
])
def test_the_scale_is_spacing_over_target_capped_at_the_size(height, width, spacing, expected):
    scale = detector_pipeline.input_scale(height, width, 512, 0.8, tf.constant([spacing, spacing]))
    assert float(scale) == pytest.approx(expected)
    assert float(detector_pipeline.input_scale(height, width, 512)) == pytest.approx(
        512 / max(height, width))
    with pytest.raises(ValueError, match="resamples to 0.8 mm per pixel: it needs"):
        detector_pipeline.input_scale(height, width, 512, 0.8)


def test_boxes_and_pixels_round_trip_to_the_original():
    # A 64 x 64 slice at 0.4 mm, resampled to 0.8 mm: half size, content 32 x 32.
    hu = np.full([64, 64, 3], -1000.0, np.float32)
    hu[20:28, 30:38, :] = 1000.0  # the box [20, 30, 27, 37]
    image, scale, size = detector_pipeline.network_input(
        tf.constant(hu), 64, WIDE, pixel_spacing_mm=0.8, spacing=tf.constant([0.4, 0.4]))
    assert float(scale) == 0.5 and size.numpy().tolist() == [32, 32]
    assert np.all(image.numpy()[32:] == 0.0) and np.all(image.numpy()[:, 32:] == 0.0)
    box = tf.constant([[20.0, 30.0, 27.0, 37.0]])
    resized = detector_pipeline.scale_boxes(box, scale)
    np.testing.assert_allclose(resized.numpy(), [[9.75, 14.75, 13.25, 18.25]])
    np.testing.assert_allclose(detector_pipeline.boxes_to_original(resized, scale).numpy(),
                               box.numpy(), atol=1e-5)
    # The bright block's centre, found in the resampled image and mapped back.
    key = image.numpy()[:32, :32, 1]
    weight = key - key.min()
    rows, columns = np.indices(key.shape)
    centre = np.array([(rows * weight).sum(), (columns * weight).sum()]) / weight.sum()
    back = (centre + 0.5) / 0.5 - 0.5
    np.testing.assert_allclose(back, [23.5, 33.5], atol=0.5)


def _examples(stored, spacings):
    return tf.data.Dataset.from_tensor_slices({
        "image": stored[:, 1], "previous_slice": stored[:, 0], "next_slice": stored[:, 2],
        "spacing_mm": np.asarray(spacings, np.float32),
        "lesions": {"measurement": np.tile(np.array([[[10, 10, 20, 20, 10, 20, 20, 10]]],
                                                    np.float32), [len(stored), 1, 1]),
                    "lesion_id": np.array([[f"l{i}"] for i in range(len(stored))])}})


def test_the_pipeline_and_serving_resample_each_slice_to_its_own_spacing():
    rng = np.random.default_rng(1)
    stored = rng.integers(32768 - 1200, 32768 + 1500, size=(2, 3, 75, 61, 1)).astype(np.uint16)
    spacings = [[0.5, 0.5], [0.9, 0.9]]
    batch = next(iter(detector_pipeline.make_detector_dataset(
        _examples(stored, spacings), training=False, batch_size=2, image_size=64,
        box_padding_px=0, windows=WIDE, deterministic=True, pixel_spacing_mm=0.8)))
    # 75 px * 0.5 / 0.8 = 46.875 -> 47 px; 75 * 0.9 / 0.8 > 64: capped at the size.
    expected = [47 / 75, 64 / 75]
    np.testing.assert_allclose(batch["image_scale"].numpy(), expected, rtol=1e-6)
    box = (np.array([10, 10, 20, 20], np.float64) + 0.5) * expected[0] - 0.5
    np.testing.assert_allclose(batch["boxes"].numpy()[0, 0], box, rtol=1e-5)

    class _Model:
        num_classes = 1

    module = detector_module.DetectorModule(_Model(), ["lesion"], image_size=64, windows=WIDE,
                                            box_padding_px=0, pixel_spacing_mm=0.8)
    hu = np.transpose(stored[..., 0].astype(np.float32) - 32768, [0, 2, 3, 1])
    image, scale = module._network_input(tf.constant(hu), tf.constant(spacings, tf.float32))
    np.testing.assert_array_equal(image.numpy(), batch["images"].numpy())
    np.testing.assert_array_equal(scale.numpy(), batch["image_scale"].numpy())


@pytest.fixture(scope="module")
def spacing_module():
    tf.keras.utils.set_random_seed(2)
    config = config_lib.from_flat(image_size=64, windows=list(WIDE), box_padding_px=4.0,
                                  num_classes=1, width_multiplier=0.0625, fc_units=32,
                                  anchor_sizes=[12.0, 24.0], test_pre_nms_top_k=100,
                                  test_post_nms_top_k=16, score_threshold=0.0,
                                  max_detections=3, pixel_spacing_mm=0.8)
    assert config_lib.from_dict(config.to_dict()) == config
    model = faster_rcnn.build_faster_rcnn(config)
    return detector_module.DetectorModule(
        model, ["lesion"], image_size=64, windows=WIDE, box_padding_px=4.0,
        drop_empty_boxes=False, pixel_spacing_mm=config.inputs.pixel_spacing_mm)


def test_a_spacing_model_maps_boxes_back_and_refuses_slices_without_spacing(spacing_module):
    rng = np.random.default_rng(3)
    hu = rng.uniform(-1000, 1000, size=(1, 64, 64, 3)).astype(np.float32)
    spacing = np.array([[0.6, 0.6]], np.float32)
    outputs = spacing_module.detect_hu_with_spacing(tf.constant(hu), tf.constant(spacing))
    # In Python: the network input at 0.6 / 0.8 = 0.75 (48 of the 64 px), boxes back by it.
    scale = 0.75
    image, _, _ = detector_pipeline.network_input(tf.constant(hu[0]), 64, WIDE,
                                                  pixel_spacing_mm=0.8,
                                                  spacing=tf.constant(spacing[0]))
    detections = spacing_module.model(image[tf.newaxis], training=False)
    num = int(outputs["num_detections"][0])
    expected = np.clip((detections["boxes"].numpy()[0, :num] + 0.5) / scale - 0.5, 0, 63)
    np.testing.assert_allclose(outputs["detection_boxes"].numpy()[0, :num], expected, atol=1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="resamples slices to 0.8 mm per pixel: it needs their spacing"):
        spacing_module.detect_hu(tf.constant(hu))
