"""The composed detector: one training step moves every stage, configs round-trip.

The overfitting, checkpoint and binary tests are in `test_train_detector.py`.
"""

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.detection import training

SIZE = 64


def _tiny(num_classes=2, **overrides):
    kwargs = dict(num_classes=num_classes, width_multiplier=1 / 16, fc_units=32,
                  anchor_sizes=(12., 18., 24.), train_pre_nms_top_k=300,
                  train_post_nms_top_k=64, test_pre_nms_top_k=300, test_post_nms_top_k=32,
                  rpn_num_samples=64, rois_per_image=16, score_threshold=0.0,
                  image_size=SIZE)
    kwargs.update(overrides)
    return faster_rcnn.build_faster_rcnn(config_lib.from_flat(**kwargs))


def _batch():
    """Two images, a bright square lesion in each (the second image has two)."""
    images = np.zeros([2, SIZE, SIZE, 3], np.float32)
    boxes = -np.ones([2, 2, 4], np.float32)
    classes = -np.ones([2, 2], np.int32)
    for i, (box, cls) in enumerate([([10, 12, 26, 30], 1), ([30, 30, 50, 46], 2)]):
        y1, x1, y2, x2 = box
        images[i, y1:y2 + 1, x1:x2 + 1] = 0.8
        boxes[i, 0], classes[i, 0] = box, cls
    images[1, 5:15, 40:52] = 0.6
    boxes[1, 1], classes[1, 1] = [5, 40, 14, 51], 1
    return (tf.constant(images), tf.constant(boxes), tf.constant(classes),
            tf.constant([1, 2], tf.int32))


def _variables_by_stage(model):
    return {stage: getattr(model, stage).trainable_variables
            for stage in ("backbone", "rpn_head", "box_head")}


def test_every_stage_changes_after_one_step():
    tf.keras.utils.set_random_seed(0)
    model = _tiny()
    optimizer = training.make_optimizer(config_lib.TrainingConfig(steps=1, learning_rate=0.01))
    before = {stage: [v.numpy().copy() for v in variables]
              for stage, variables in _variables_by_stage(model).items()}
    images, boxes, classes, counts = _batch()
    with tf.GradientTape() as tape:
        values = model.compute_losses(images, boxes, classes, counts, seed=tf.constant([0, 1]))
    for name in faster_rcnn.LOSS_NAMES:
        assert np.isfinite(values[name].numpy()) and values[name].numpy() > 0, name
    gradients = tape.gradient(values["total_loss"], model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    for stage, variables in _variables_by_stage(model).items():
        assert variables, stage
        for old, variable in zip(before[stage], variables):
            assert not np.allclose(old, variable.numpy()), f"{stage}: {variable.path} unchanged"


def test_losses_are_seeded():
    tf.keras.utils.set_random_seed(0)
    model = _tiny()
    images, boxes, classes, counts = _batch()
    first = model.compute_losses(images, boxes, classes, counts, seed=tf.constant([3, 4]))
    second = model.compute_losses(images, boxes, classes, counts, seed=tf.constant([3, 4]))
    for name in faster_rcnn.LOSS_NAMES:
        assert first[name].numpy() == second[name].numpy()


def test_inference_detections_are_consistent():
    tf.keras.utils.set_random_seed(0)
    model = _tiny(max_detections=4)
    images = _batch()[0]
    result = model(images)
    again = model(images)
    np.testing.assert_array_equal(result["boxes"].numpy(), again["boxes"].numpy())
    boxes, scores = result["boxes"].numpy(), result["scores"].numpy()
    counts, classes = result["num_detections"].numpy(), result["classes"].numpy()
    assert boxes.shape == (2, 4, 4)
    for i in range(2):
        n = counts[i]
        assert np.all(np.diff(scores[i, :n]) <= 0)
        assert np.all((classes[i, :n] >= 1) & (classes[i, :n] <= 2))
        assert np.all(classes[i, n:] == 0) and np.all(scores[i, n:] == 0)
        assert np.all(boxes[i, :n] >= 0) and np.all(boxes[i, :n] <= SIZE - 1)


def test_config_round_trip_gives_the_same_detections():
    tf.keras.utils.set_random_seed(0)
    model = _tiny(max_detections=4)
    images = _batch()[0]
    clone = faster_rcnn.FasterRCNN.from_config(model.get_config())
    clone(images)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(images)["scores"].numpy(), model(images)["scores"].numpy(),
                               atol=1e-6)
    assert clone.get_config() == model.get_config()


def test_pretrained_weights_need_the_full_width():
    with pytest.raises(ValueError, match="width"):
        faster_rcnn.build_faster_rcnn(config_lib.from_flat(
            num_classes=1, weights="imagenet", width_multiplier=0.5))
