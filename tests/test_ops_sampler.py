"""The balanced sampler: exact counts, labels of the drawn rows, seeds, uniformity."""

import numpy as np
import tensorflow as tf

from deeplesion_tf.ops import sampler
from deeplesion_tf.ops.matcher import IGNORE, NEGATIVE, POSITIVE

SEED = tf.constant([7, 11], tf.int32)


def _labels(*counts_per_image, n=100, seed=0):
    """`[B, n]` labels, image b with `(positives, negatives)` rows in random places, the rest IGNORE."""
    rng = np.random.default_rng(seed)
    rows = []
    for positives, negatives in counts_per_image:
        row = np.full(n, IGNORE, np.int32)
        places = rng.permutation(n)
        row[places[:positives]] = POSITIVE
        row[places[positives:positives + negatives]] = NEGATIVE
        rows.append(row)
    return np.stack(rows)


def _check_consistent(labels, sample):
    """Drawn rows carry the sampled label, none twice; padding is (0, IGNORE, False)."""
    indices, got_labels, valid = (np.asarray(t) for t in sample)
    for b in range(labels.shape[0]):
        drawn = indices[b][valid[b]]
        assert len(set(drawn.tolist())) == len(drawn)
        np.testing.assert_array_equal(labels[b][drawn], got_labels[b][valid[b]])
        np.testing.assert_array_equal(indices[b][~valid[b]], 0)
        np.testing.assert_array_equal(got_labels[b][~valid[b]], IGNORE)


def _expected_labels(positives, negatives, slots):
    return [POSITIVE] * positives + [NEGATIVE] * negatives + [IGNORE] * (slots - positives - negatives)


def test_counts_with_plenty_too_few_positives_too_few_of_both():
    labels = _labels((30, 50), (2, 40), (2, 5), (0, 0))
    sample = sampler.sample_balanced(labels, num_samples=16, positive_fraction=0.25, seed=SEED)
    _check_consistent(labels, sample)
    # floor(16 * 0.25) = 4 positives at most; negatives fill up to 16.
    np.testing.assert_array_equal(sample.labels, [_expected_labels(4, 12, 16),
                                                  _expected_labels(2, 14, 16),
                                                  _expected_labels(2, 5, 16),
                                                  _expected_labels(0, 0, 16)])
    np.testing.assert_array_equal(sample.valid, np.asarray(sample.labels) != IGNORE)


def test_positive_fraction_is_floored():
    labels = _labels((50, 50))
    sample = sampler.sample_balanced(labels, num_samples=10, positive_fraction=0.35, seed=SEED)
    np.testing.assert_array_equal(sample.labels, [_expected_labels(3, 7, 10)])
    sample = sampler.sample_balanced(labels, num_samples=10, positive_fraction=0.0, seed=SEED)
    np.testing.assert_array_equal(sample.labels, [_expected_labels(0, 10, 10)])


def test_more_slots_than_rows_in_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def run(labels):
        return sampler.sample_balanced(labels, num_samples=8, positive_fraction=0.5, seed=SEED)

    labels = np.array([[NEGATIVE, POSITIVE, IGNORE]], np.int32)
    sample = run(labels)
    assert sample.indices.shape.as_list() == [1, 8]
    np.testing.assert_array_equal(sample.indices, [[1, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(sample.labels, [_expected_labels(1, 1, 8)])


def test_same_seed_same_sample_other_seed_other_sample():
    labels = _labels((30, 60), (30, 60))
    first = sampler.sample_balanced(labels, num_samples=32, positive_fraction=0.5, seed=SEED)
    again = sampler.sample_balanced(labels, num_samples=32, positive_fraction=0.5, seed=SEED)
    other = sampler.sample_balanced(labels, num_samples=32, positive_fraction=0.5,
                                    seed=tf.constant([8, 11], tf.int32))
    np.testing.assert_array_equal(first.indices, again.indices)
    assert not np.array_equal(first.indices, other.indices)
    unseeded = sampler.sample_balanced(labels, num_samples=32, positive_fraction=0.5)
    _check_consistent(labels, unseeded)
    np.testing.assert_array_equal(unseeded.labels, [_expected_labels(16, 16, 32)] * 2)


def test_rows_are_drawn_uniformly():
    # 2000 draws as a batch of one image: 10 positives and 40 negatives, 2 slots of each.
    draws = 2000
    row = np.array([POSITIVE] * 10 + [NEGATIVE] * 40 + [IGNORE] * 10, np.int32)
    labels = np.tile(row, (draws, 1))
    sample = sampler.sample_balanced(labels, num_samples=4, positive_fraction=0.5, seed=SEED)
    _check_consistent(labels[:50], sampler.Sample(*(t[:50] for t in sample)))
    counts = np.bincount(np.asarray(sample.indices).ravel(), minlength=60)
    # Each positive: 2000 * 2 / 10 = 400 expected (std 18); each negative 100 (std 10).
    np.testing.assert_array_less(np.abs(counts[:10] - 400), 90)
    np.testing.assert_array_less(np.abs(counts[10:50] - 100), 50)
    np.testing.assert_array_equal(counts[50:], 0)
