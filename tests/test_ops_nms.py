"""NMS against a plain numpy greedy reference, and per-class NMS on a hand-made case."""

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.ops import nms


def _iou_one_to_many(box, others):
    top_left = np.maximum(box[:2], others[:, :2])
    bottom_right = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(others) - inter)


def _greedy_nms(boxes, scores, max_output_size, iou_threshold, score_threshold):
    """Row indices kept by textbook greedy NMS of one image (suppress on IoU > threshold)."""
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] <= score_threshold:
            break
        if keep and np.any(_iou_one_to_many(boxes[i], boxes[keep]) > iou_threshold):
            continue
        keep.append(i)
        if len(keep) == max_output_size:
            break
    return keep


def _random_boxes(rng, n, low, high, min_size, max_size):
    centre = rng.uniform(low, high, (n, 2))
    size = rng.uniform(min_size, max_size, (n, 2))
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1).astype(np.float32)


@pytest.mark.parametrize("score_threshold", [float("-inf"), 0.0])
def test_batched_nms_matches_greedy_reference(score_threshold):
    rng = np.random.default_rng(3)
    n, k = 1100, 150  # 3 tiles of the op's 512
    boxes = np.stack([
        _random_boxes(rng, n, 0., 512., 8., 96.),     # spread: K boxes are kept
        _random_boxes(rng, n, 200., 260., 30., 60.),  # one cluster: fewer than K survive
        _random_boxes(rng, n, -300., -40., 4., 30.),  # every coordinate negative
    ])
    scores = rng.normal(size=(3, n)).astype(np.float32)
    run = tf.function(lambda b, s: nms.batched_nms(b, s, max_output_size=k, iou_threshold=0.5,
                                                   score_threshold=score_threshold))
    result = run(tf.constant(boxes), tf.constant(scores))
    for b in range(3):
        keep = _greedy_nms(boxes[b], scores[b], k, 0.5, score_threshold)
        kept = len(keep)
        assert result.num_valid[b] == kept
        np.testing.assert_array_equal(result.indices[b, :kept], keep)
        np.testing.assert_array_equal(result.boxes[b, :kept], boxes[b, keep])
        np.testing.assert_array_equal(result.scores[b, :kept], scores[b, keep])
        np.testing.assert_array_equal(result.indices[b, kept:], -1)
        np.testing.assert_array_equal(result.boxes[b, kept:], 0.)
        np.testing.assert_array_equal(result.scores[b, kept:], 0.)
    assert int(result.num_valid[0]) == k and int(result.num_valid[1]) < k


def test_batched_nms_hand_made():
    boxes = tf.constant([[[0., 0., 10., 10.],
                          [0., 0., 10., 5.],      # IoU 0.5 with row 0: kept at threshold 0.5
                          [0., 0., 10., 9.],      # IoU 0.9 with row 0: suppressed
                          [-9., -9., -1., -1.],   # every coordinate negative, still kept
                          [50., 50., 60., 60.]]]) # below the score threshold
    scores = tf.constant([[0.9, 0.6, 0.8, 0.7, 0.1]])
    result = nms.batched_nms(boxes, scores, max_output_size=4, iou_threshold=0.5,
                             score_threshold=0.1)
    np.testing.assert_array_equal(result.indices, [[0, 3, 1, -1]])
    np.testing.assert_array_equal(result.num_valid, [3])
    np.testing.assert_allclose(result.scores, [[0.9, 0.7, 0.6, 0.0]])
    np.testing.assert_array_equal(result.boxes, [[[0., 0., 10., 10.], [-9., -9., -1., -1.],
                                                  [0., 0., 10., 5.], [0., 0., 0., 0.]]])


def test_multiclass_nms_hand_made():
    # Two candidate rows (N = 2), each with a box per class (K = 2).
    boxes = tf.constant([[[[0., 0., 10., 10.], [0., 0., 10., 10.]],
                          [[0., 0., 10., 9.], [0., 0., 10., 9.]],
                          [[20., 20., 30., 30.], [40., 40., 50., 50.]]]])  # [1, 3, 2, 4]
    scores = tf.constant([[[0.9, 0.3],
                           [0.8, 0.7],
                           [0.6, 0.05]]])  # [1, 3, 2]
    detections = nms.multiclass_nms(boxes, scores, max_per_class=5, max_total=5,
                                    iou_threshold=0.5, score_threshold=0.1)
    # Class 1: row 1 is suppressed by row 0 (IoU 0.9); class 2: row 0 by row 1, row 2 below
    # the threshold. Class 1's row 0 and class 2's row 1 overlap but do not suppress each other.
    np.testing.assert_array_equal(detections.num_detections, [3])
    np.testing.assert_allclose(detections.scores, [[0.9, 0.7, 0.6, 0., 0.]])
    np.testing.assert_array_equal(detections.classes, [[1, 2, 1, 0, 0]])
    np.testing.assert_array_equal(detections.boxes, [[[0., 0., 10., 10.], [0., 0., 10., 9.],
                                                      [20., 20., 30., 30.], [0.] * 4, [0.] * 4]])

    truncated = nms.multiclass_nms(boxes, scores, max_per_class=5, max_total=2,
                                   iou_threshold=0.5, score_threshold=0.1)
    np.testing.assert_array_equal(truncated.num_detections, [2])
    np.testing.assert_array_equal(truncated.classes, [[1, 2]])
    np.testing.assert_allclose(truncated.scores, [[0.9, 0.7]])

    one_per_class = nms.multiclass_nms(boxes, scores, max_per_class=1, max_total=5,
                                       iou_threshold=0.5, score_threshold=0.1)
    np.testing.assert_array_equal(one_per_class.classes, [[1, 2, 0, 0, 0]])
