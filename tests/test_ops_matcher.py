"""The matcher on hand-made IoU matrices: each rule, low-quality matches, padding."""

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.ops import matcher
from deeplesion_tf.ops.matcher import IGNORE, NEGATIVE, POSITIVE

RPN = dict(positive_threshold=0.7, negative_threshold=0.3)
FAST_RCNN = dict(positive_threshold=0.5, negative_threshold=0.5, negative_lower_bound=0.1)

# 5 rows, 2 real ground-truth columns and a padded third column whose IoUs
# would win every max it entered.
IOU = [[0.80, 0.10, 0.95],   # >= 0.7: positive of gt 0
       [0.20, 0.50, 0.90],   # between the thresholds
       [0.10, 0.29, 0.00],   # < 0.3: negative
       [0.00, 0.00, 0.00],   # overlaps nothing
       [0.30, 0.69, 0.00]]   # between; the best row of gt 1
VALID = [True, True, False]


def _match(iou, valid, **kwargs):
    result = matcher.match(tf.constant(iou, tf.float32), tf.constant(valid), **kwargs)
    return tuple(np.asarray(t) for t in result)


def test_thresholds_without_low_quality_matches():
    gt_index, labels, max_iou = _match([IOU], [VALID], **RPN, allow_low_quality_matches=False)
    np.testing.assert_array_equal(labels, [[POSITIVE, IGNORE, NEGATIVE, NEGATIVE, IGNORE]])
    np.testing.assert_array_equal(gt_index, [[0, 1, 1, 0, 1]])
    np.testing.assert_allclose(max_iou, [[0.80, 0.50, 0.29, 0.0, 0.69]])


def test_low_quality_matches_make_the_best_row_of_each_gt_positive():
    gt_index, labels, _ = _match([IOU], [VALID], **RPN, allow_low_quality_matches=True)
    # Row 4 is gt 1's best; row 1 would be the padded column's best, but it is invalid.
    np.testing.assert_array_equal(labels, [[POSITIVE, IGNORE, NEGATIVE, NEGATIVE, POSITIVE]])
    np.testing.assert_array_equal(gt_index, [[0, 1, 1, 0, 1]])


def test_low_quality_ties_and_rows_best_matched_elsewhere():
    iou = [[0.40, 0.55],   # best of gt 0, but overlaps gt 1 more
           [0.10, 0.60],   # tied best of gt 1
           [0.05, 0.60],   # tied best of gt 1
           [0.40, 0.00],   # tied best of gt 0
           [0.20, 0.10]]
    gt_index, labels, max_iou = _match([iou], [[True, True]], **RPN, allow_low_quality_matches=True)
    np.testing.assert_array_equal(labels, [[POSITIVE, POSITIVE, POSITIVE, POSITIVE, NEGATIVE]])
    # As torchvision: a low-quality positive keeps its own argmax.
    np.testing.assert_array_equal(gt_index, [[1, 1, 1, 0, 0]])
    np.testing.assert_allclose(max_iou, [[0.55, 0.6, 0.6, 0.4, 0.2]])


def test_gt_overlapping_nothing_adds_no_low_quality_match():
    iou = [[0.0, 0.2],
           [0.0, 0.0]]
    _, labels, _ = _match([iou], [[True, True]], **RPN, allow_low_quality_matches=True)
    # Gt 1's best row becomes positive; gt 0's "best" IoU is 0, which adds nothing.
    np.testing.assert_array_equal(labels, [[POSITIVE, NEGATIVE]])


def test_fast_rcnn_background_range():
    iou = [[0.60], [0.50], [0.30], [0.10], [0.05], [0.0]]
    gt_index, labels, _ = _match([iou], [[True]], **FAST_RCNN, allow_low_quality_matches=False)
    # [0.5, 1]: foreground; [0.1, 0.5): background; below 0.1: ignored.
    np.testing.assert_array_equal(labels, [[POSITIVE, POSITIVE, NEGATIVE, NEGATIVE, IGNORE, IGNORE]])
    np.testing.assert_array_equal(gt_index, [[0] * 6])


def test_batch_with_an_image_without_valid_gt():
    first = [[0.9, 0.0], [0.2, 0.0], [0.05, 0.0]]
    second = [[0.0, 0.0], [0.3, 0.7], [0.0, 0.0]]  # IoUs with padding only
    gt_index, labels, max_iou = _match([first, second], [[True, False], [False, False]],
                                       **FAST_RCNN, allow_low_quality_matches=True)
    np.testing.assert_array_equal(labels, [[POSITIVE, NEGATIVE, IGNORE],
                                           [NEGATIVE, NEGATIVE, NEGATIVE]])
    np.testing.assert_array_equal(gt_index, [[0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(max_iou, [[0.9, 0.2, 0.05], [0.0, 0.0, 0.0]])


def test_match_in_tf_function_with_unknown_sizes():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32),
                                  tf.TensorSpec([None, None], tf.bool)])
    def run(iou, valid):
        return matcher.match(iou, valid, **RPN, allow_low_quality_matches=True)

    result = run(tf.constant([IOU]), tf.constant([VALID]))
    np.testing.assert_array_equal(result.labels, [[POSITIVE, IGNORE, NEGATIVE, NEGATIVE, POSITIVE]])
    assert result.labels.dtype == tf.int32 and result.gt_index.dtype == tf.int32


def test_inconsistent_thresholds_raise():
    with pytest.raises(ValueError, match="negative_threshold"):
        matcher.match(tf.zeros([1, 1, 1]), tf.ones([1, 1], tf.bool), positive_threshold=0.3,
                      negative_threshold=0.7, allow_low_quality_matches=False)
    with pytest.raises(ValueError, match="negative_lower_bound"):
        matcher.match(tf.zeros([1, 1, 1]), tf.ones([1, 1], tf.bool), positive_threshold=0.5,
                      negative_threshold=0.5, negative_lower_bound=0.6,
                      allow_low_quality_matches=False)
