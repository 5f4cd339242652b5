"""Balanced sampling of positive and negative rows (RPN anchors, RoIs).

Faster R-CNN trains the RPN on 256 anchors and the box head on 512 RoIs per
image, at most a given fraction of them positive; the rest are negatives.
Sampling draws uniformly without replacement: every row gets an independent
uniform key and the rows of highest key are taken (`tf.math.top_k`), so
nothing loops over images or rows.

Shape shorthand:
  B: images per batch.
  N: rows per image (anchors or proposals).
  S: `num_samples`, the slots per image.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import tensorflow as tf

from deeplesion_tf.ops.matcher import IGNORE, NEGATIVE, POSITIVE

# The key of a row that is not a candidate: below every uniform key in [0, 1).
_NOT_A_CANDIDATE = -1.0


class Sample(NamedTuple):
    """The outcome of `sample_balanced`.

    Attributes:
      indices: `[B, S]` int32 rows of `labels`: the sampled positives, then
        the sampled negatives, then padding (0).
      labels: `[B, S]` int32 `POSITIVE` or `NEGATIVE`; `IGNORE` on padding.
      valid: `[B, S]` bool, False on padding.
    """

    indices: tf.Tensor
    labels: tf.Tensor
    valid: tf.Tensor


def _top_candidates(is_candidate: tf.Tensor, keys: tf.Tensor, k: int):
    """The `k` candidates of highest key, in random order, and their count.

    Returns `[B, k]` int32 rows (beyond the count: rows of no meaning) and
    `[B, 1]` int32 `min(candidates, k)`.
    """
    candidate_keys = tf.where(is_candidate, keys, _NOT_A_CANDIDATE)
    # Pad by k non-candidates so top_k works for any N, even a dynamic N < k.
    candidate_keys = tf.pad(candidate_keys, [[0, 0], [0, k]],
                            constant_values=_NOT_A_CANDIDATE)
    _, rows = tf.math.top_k(candidate_keys, k=k, sorted=True)
    count = tf.reduce_sum(tf.cast(is_candidate, tf.int32), axis=-1, keepdims=True)
    return rows, tf.minimum(count, k)


def sample_balanced(labels: tf.Tensor, *, num_samples: int, positive_fraction: float,
                    seed: Optional[tf.Tensor] = None) -> Sample:
    """Up to `num_samples` rows per image, a bounded share of them positive.

    Takes `min(#POSITIVE, floor(num_samples * positive_fraction))` positives
    uniformly at random among the `POSITIVE` rows, then fills the remaining
    slots with `NEGATIVE` rows drawn uniformly at random; slots left over when
    there are too few negatives are padding. `IGNORE` rows are never drawn.

    Args:
      labels: `[B, N]` int32 `POSITIVE`, `NEGATIVE` or `IGNORE`
        (`matcher.Match.labels`).
      num_samples: `S`, slots per image.
      positive_fraction: the largest share of positives.
      seed: optional `[2]` int32 seed of a stateless draw (the same seed gives
        the same sample); None draws with `tf.random.uniform`.

    Returns:
      A `Sample` of static shape `[B, S]`.
    """
    labels = tf.convert_to_tensor(labels, tf.int32)
    max_positives = int(num_samples * positive_fraction)
    shape = tf.shape(labels)
    if seed is None:
        keys = tf.random.uniform(shape, dtype=tf.float32)
    else:
        keys = tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)

    # One key per row serves both draws: a row is a positive or a negative, never both.
    slots = tf.range(num_samples)[tf.newaxis, :]  # [1, S]
    if max_positives > 0:
        positive_rows, num_positives = _top_candidates(labels == POSITIVE, keys, max_positives)
        positive_at = tf.minimum(slots, max_positives - 1)
        positive_at = tf.broadcast_to(positive_at, [shape[0], num_samples])
        from_positives = tf.gather(positive_rows, positive_at, batch_dims=1)
    else:
        num_positives = tf.zeros([shape[0], 1], tf.int32)
        from_positives = tf.zeros([shape[0], num_samples], tf.int32)
    negative_rows, num_negatives = _top_candidates(labels == NEGATIVE, keys, num_samples)
    num_negatives = tf.minimum(num_negatives, num_samples - num_positives)
    negative_at = tf.clip_by_value(slots - num_positives, 0, num_samples - 1)  # [B, S]
    from_negatives = tf.gather(negative_rows, negative_at, batch_dims=1)

    is_positive = slots < num_positives
    valid = slots < num_positives + num_negatives
    indices = tf.where(is_positive, from_positives, tf.where(valid, from_negatives, 0))
    sampled_labels = tf.where(is_positive, POSITIVE, tf.where(valid, NEGATIVE, IGNORE))
    return Sample(indices=indices, labels=sampled_labels, valid=valid)
