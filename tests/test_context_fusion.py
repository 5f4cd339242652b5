"""3DCE: the split of M context images, the fusion's shapes and values, and the model."""

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import context_fusion
from deeplesion_tf.detection import faster_rcnn

TINY = dict(image_size=64, windows=[(-1024.0, 3071.0)], box_padding_px=4.0, num_classes=1,
            width_multiplier=0.0625, fc_units=32, anchor_sizes=[12.0, 24.0],
            test_pre_nms_top_k=100, test_post_nms_top_k=16, score_threshold=0.0,
            max_detections=3, rois_per_image=16)


def test_split_puts_image_m_of_example_b_in_row_b_times_m_plus_m():
    # Channel c of example b holds 10 b + c: image m is channels 3m .. 3m + 2.
    images = tf.constant(np.arange(2)[:, None, None, None] * 10.0
                         + np.arange(9)[None, None, None, :] * np.ones([2, 4, 4, 9]),
                         tf.float32)
    split = context_fusion.split_context_images(images, 3).numpy()
    assert split.shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(split[:, 0, 0], [[0, 1, 2], [3, 4, 5], [6, 7, 8],
                                                   [10, 11, 12], [13, 14, 15], [16, 17, 18]])


def test_fusion_keeps_the_central_map_and_mixes_all_maps_by_a_1x1_conv():
    layer = context_fusion.ContextFusion(num_images=3, channels=4)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2 * 3, 5, 7, 4)).astype(np.float32)
    out = layer(tf.constant(features))
    assert out["central"].shape == (2, 5, 7, 4) and out["fused"].shape == (2, 5, 7, 4)
    np.testing.assert_array_equal(out["central"].numpy(), features[[1, 4]])
    kernel, bias = (w.numpy() for w in layer.conv.weights)
    stacked = np.concatenate([features[0::3], features[1::3], features[2::3]], axis=-1)
    np.testing.assert_allclose(out["fused"].numpy(), stacked @ kernel[0, 0] + bias, atol=1e-5)
    again = context_fusion.ContextFusion.from_config(layer.get_config())
    assert (again.num_images, again.channels) == (3, 4)
    with pytest.raises(ValueError, match="odd and >= 3"):
        context_fusion.ContextFusion(num_images=2)


def test_a_3dce_model_takes_3m_channels_and_trains_its_fusion():
    tf.keras.utils.set_random_seed(0)
    config = config_lib.from_flat(num_context_images=3, **TINY)
    model = faster_rcnn.build_faster_rcnn(config)
    assert model.num_context_images == 3
    images = tf.random.uniform([2, 64, 64, 9], seed=1)
    out = model(images)
    assert out["boxes"].shape[0] == 2
    boxes = tf.constant([[[10.0, 10.0, 30.0, 30.0]], [[20.0, 20.0, 40.0, 44.0]]])
    classes, num = tf.constant([[1], [1]]), tf.constant([1, 1])
    before = [w.numpy() for w in model.context_fusion.weights]
    optimizer = tf.keras.optimizers.Adam(1e-2)
    with tf.GradientTape() as tape:
        loss = model.compute_losses(images, boxes, classes, num)["total_loss"]
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before,
                                                               model.context_fusion.weights))
    # The central image alone through an M = 1 model's stages gives the RPN's input.
    central = model.backbone(images[..., 3:6])
    features, _ = model._features(images, False)
    np.testing.assert_allclose(features.numpy(), central.numpy(), atol=1e-5)


def test_a_3dce_checkpoint_exports_and_loads_without_the_package(tmp_path):
    """model dir -> SavedModel (bin/export_detector's path) -> a fresh process that cannot
    import deeplesion_tf: the same boxes as the in-Python model on 9-slice HU."""
    import json
    import subprocess
    import sys

    from deeplesion_tf.data import detector_pipeline
    from deeplesion_tf.detection import classes as classes_lib
    from deeplesion_tf.detection import model_dir as model_dir_lib
    from deeplesion_tf.serving import export

    tf.keras.utils.set_random_seed(4)
    config = config_lib.from_flat(num_context_images=3, **TINY)
    model = faster_rcnn.build_faster_rcnn(config)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model_dir_lib.write_model_config(str(model_dir), config)
    classes_lib.write(classes_lib.ClassSpec("test", ["lesion"], None), str(model_dir))
    tf.train.Checkpoint(model=model).save(str(model_dir / "ckpt"))
    module, _ = export.module_from_model_dir(str(model_dir))
    assert module.num_slices == 9
    path = export.export_module(module, str(tmp_path / "export"), version=1)

    rng = np.random.default_rng(5)
    hu = rng.uniform(-1000, 1000, size=(1, 64, 64, 9)).astype(np.float32)
    np.save(tmp_path / "hu.npy", hu)
    script = (
        "import sys, json; sys.modules['deeplesion_tf'] = None\n"
        "import numpy as np, tensorflow as tf\n"
        f"loaded = tf.saved_model.load({str(path)!r})\n"
        f"out = loaded.signatures['serving_default'](images=tf.constant(np.load("
        f"{str(tmp_path / 'hu.npy')!r})))\n"
        "print(json.dumps({k: v.numpy().tolist() for k, v in out.items() "
        "if v.dtype != tf.string}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    image, scale, _ = detector_pipeline.network_input(tf.constant(hu[0]), 64, TINY["windows"])
    detections = model(image[tf.newaxis], training=False)
    num = int(served["num_detections"][0])
    expected = (detections["boxes"].numpy()[0, :num] + 0.5) / float(scale) - 0.5
    np.testing.assert_allclose(np.asarray(served["detection_boxes"])[0, :num],
                               np.clip(expected, 0, 63), atol=1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[batch, height, width, 9\]"):
        module.detect_hu(tf.constant(hu[..., :3]))
    # The PNG form: 9 16-bit PNGs per key slice give what the HU form gives.
    from deeplesion_tf.data import png16

    whole = np.round(hu)
    pngs = tf.constant([[png16.encode_hu(whole[0, ..., k]) for k in range(9)]])
    from_png = module.detect_png(pngs)
    from_hu = module.detect_hu(tf.constant(whole.astype(np.float32)))
    np.testing.assert_allclose(from_png["detection_boxes"].numpy(),
                               from_hu["detection_boxes"].numpy(), atol=1e-4)

    # bin/detect's path: the export says it takes 9 slices; a DICOM series gets them.
    from deeplesion_tf.serving import detect
    from tests.conftest import REPO_ROOT

    detector = detect.Detector(str(tmp_path / "export"))
    assert detector.num_slices == 9
    series = (REPO_ROOT / "tfds_deeplesion" / "deeplesion" / "dummy_data" / "dicom"
              / "85479032" / "study2" / "series1")
    summary = detect.run(detector, [str(series)], str(tmp_path / "detections"))
    assert not summary.failures
    assert len(summary.written) == len(list(series.glob("*.dcm"))) > 0


def test_bin_detect_gives_a_3dce_export_nine_slices_of_a_dicom_series(tmp_path):
    """The series folder's slices -4 .. +4 around each key slice, clamped at the ends."""
    from deeplesion_tf.serving import slice_inputs

    hus = [np.full([20, 20], 10.0 * k, np.float32) for k in range(6)]
    names = [f"s{k}" for k in range(6)]
    item = slice_inputs._with_context(names, names, hus, 1, None, num_slices=9)
    # Steps -4 .. 4 from slice 1: -4 .. -1 clamp to slice 0, then slices 1 .. 5.
    assert item.hu.shape == (20, 20, 9)
    np.testing.assert_array_equal(item.hu[0, 0], [0, 0, 0, 0, 10, 20, 30, 40, 50])
    assert item.context == ("s0", "s2")
