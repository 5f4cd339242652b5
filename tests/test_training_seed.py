"""`--seed` is one knob: it moves the initialisation, the shuffle and flips, and the samples.

A benchmark that varies the seed must vary all of them together, with or
without `--deterministic` (which only adds ordered maps and deterministic kernels).
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras

from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.detection import training


class _SeedRecorder(keras.Model):
    """A stand-in detector whose 'losses' report the sampling seed it was given."""

    def build(self, input_shape=None):
        self.w = self.add_weight(shape=(), initializer="ones", name="w")
        super().build(input_shape)

    def compute_losses(self, images, boxes, classes, num_lesions, training=True, seed=None):
        loss = tf.square(self.w) * tf.reduce_mean(images)
        values = {name: tf.zeros([]) for name in faster_rcnn.LOSS_NAMES}
        values["total_loss"] = loss
        # The seed [run seed, step] the anchor and RoI samplers would get.
        values["rpn_recall"] = tf.cast(seed[0], tf.float32)
        values["rcnn_box_loss"] = tf.cast(seed[1], tf.float32)
        return values


def _train(tmp_path, seed):
    def build_model():
        model = _SeedRecorder()
        model.build()
        return model

    def make_dataset(context):
        return tf.data.Dataset.from_tensors({
            "images": tf.ones([1, 8, 8, 3]), "boxes": tf.zeros([1, 1, 4]),
            "classes": tf.ones([1, 1], tf.int32), "num_lesions": tf.ones([1], tf.int32)}).repeat()

    settings = config_lib.TrainingConfig(steps=3, optimizer="sgd", learning_rate=0.01,
                                      log_every=1, checkpoint_every=10, seed=seed)
    return training.train(build_model, make_dataset, tf.distribute.get_strategy(),
                          str(tmp_path / f"seed{seed}"), settings, progress=False)


def test_the_samplers_get_the_run_seed_and_the_step_without_deterministic(tmp_path):
    last = _train(tmp_path, seed=7)
    assert last["step"] == 3
    assert last["rpn_recall"] == 7.0
    assert last["rcnn_box_loss"] == 2.0  # the third step's seed is [7, 2]
    assert _train(tmp_path, seed=11)["rpn_recall"] == 11.0


def _examples(n):
    return tf.data.Dataset.from_tensor_slices({
        "image": np.full([n, 16, 16, 1], 32768, np.uint16),
        "previous_slice": np.full([n, 16, 16, 1], 32768, np.uint16),
        "next_slice": np.full([n, 16, 16, 1], 32768, np.uint16),
        "lesions": {
            # Lesion k: a box in the left half, so a flip moves it to the right.
            "measurement": np.tile(np.array([[[1, 2, 5, 6, 1, 6, 5, 2]]], np.float32), [n, 1, 1]),
            "lesion_id": np.array([[f"L{k}"] for k in range(n)]),
        }})


def _order_and_flips(seed, deterministic):
    batches = detector_pipeline.make_detector_dataset(
        _examples(24), training=True, batch_size=1, image_size=16, box_padding_px=0,
        windows=((-100.0, 100.0),), deterministic=deterministic, shuffle_buffer=24, seed=seed)
    return [(b["lesion_ids"].numpy()[0, 0].decode(), float(b["boxes"].numpy()[0, 0, 1]) > 8)
            for b in batches]


def test_the_seed_moves_the_shuffle_and_the_flips_with_or_without_deterministic():
    for deterministic in (True, False):
        first, again, other = (_order_and_flips(s, deterministic) for s in (1, 1, 2))
        assert sorted(i for i, _ in first) == sorted(f"L{k}" for k in range(24))
        assert {f for _, f in first} == {True, False}  # some flipped, some not
        assert [i for i, _ in first] != [i for i, _ in other]
        assert [f for _, f in first] != [f for _, f in other]
        # The same seed: the same flip for each example (without `deterministic` the
        # parallel map may hand them out in another order).
        assert set(first) == set(again)
        if deterministic:
            assert first == again
