"""Evaluation metrics on hand-made lesions and detections whose answers are worked out here.

Boxes are `[ymin, xmin, ymax, xmax]` original pixels; with padding 0 a lesion's
box is its measurement's extent, so `_truth` builds lesions from boxes.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.evaluation import accuracy
from deeplesion_tf.evaluation import categories as categories_lib
from deeplesion_tf.evaluation import coco_format
from deeplesion_tf.evaluation import froc
from deeplesion_tf.evaluation import matching
from deeplesion_tf.evaluation import records
from deeplesion_tf.evaluation import unbookmarked


def _measurement(box):
    """Long axis along the box's diagonal, short axis along the other: extent == box."""
    y0, x0, y1, x1 = box
    return [x0, y0, x1, y1, x0, y1, x1, y0]


def _truth(image_id, boxes, lesion_ids=None, noisy=None, coarse_types=None, size=100):
    n = len(boxes)
    return records.ImageTruth(
        image_id=image_id, file_name=f"p{image_id}_s1_r1_{image_id:03d}", height=size,
        width=size, lesion_ids=tuple(lesion_ids or [f"L{image_id}-{k}" for k in range(n)]),
        measurements=np.array([_measurement(b) for b in boxes], np.float64).reshape([-1, 8]),
        noisy=np.array(noisy or [False] * n, bool),
        coarse_types=np.array(coarse_types or [-1] * n, np.int64))


def _dets(image_id, boxes, scores, classes=None):
    return records.ImageDetections(image_id, np.array(boxes, np.float64).reshape([-1, 4]),
                                   np.array(scores, np.float64),
                                   np.array(classes or [1] * len(scores), np.int64))


# --- Box conventions ---------------------------------------------------------------


def test_iou_conventions():
    a, b = [[0, 0, 9, 9]], [[0, 5, 9, 14]]
    # Continuous: 9 x 4 = 36 over 81 + 81 - 36. Inclusive: 10 x 5 = 50 over 100 + 100 - 50.
    assert matching.pairwise_iou(a, b, matching.CONTINUOUS)[0, 0] == pytest.approx(36 / 126)
    assert matching.pairwise_iou(a, b, matching.INCLUSIVE_PIXELS)[0, 0] == pytest.approx(1 / 3)
    assert matching.pairwise_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0
    assert matching.pairwise_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]],
                                 matching.INCLUSIVE_PIXELS)[0, 0] == 1.0
    with pytest.raises(ValueError, match="unknown IoU convention"):
        matching.pairwise_iou(a, b, "nih")


def test_truth_boxes_pad_clip_and_agree_with_the_pipeline():
    truth = records.ImageTruth(1, "p_s_r_001", 50, 60, ("a", "b"),
                               np.array([[10, 20, 30, 24, 18, 15, 22, 28],
                                         [1, 2, 58, 3, 30, 1, 31, 48]], np.float64),
                               np.zeros(2, bool), np.array([-1, -1]))
    expected = [[15 - 5, 10 - 5, 28 + 5, 30 + 5], [0, 0, 49, 59]]
    np.testing.assert_allclose(records.truth_boxes(truth, 5.0), expected)
    ours = detector_pipeline.measurement_boxes(tf.constant(truth.measurements), 50, 60, 5.0)
    np.testing.assert_allclose(records.truth_boxes(truth, 5.0), ours.numpy(), atol=1e-5)


def test_change_padding_moves_sides_and_collapses_small_boxes():
    boxes = [[10, 10, 60, 80], [10, 10, 30, 20]]
    # 20 px -> 5 px: 15 px in on each side; the second box is 10 wide: x collapses to 15.
    np.testing.assert_allclose(records.change_padding(boxes, 20, 5),
                               [[25, 25, 45, 65], [20, 15, 20, 15]])
    np.testing.assert_allclose(records.change_padding(boxes, 5, 7), [[8, 8, 62, 82],
                                                                      [8, 8, 32, 22]])


# --- Accuracy (Sec. 3, Fig. 5a, Table 1) -----------------------------------------------


def _accuracy_case():
    lesion = [0, 0, 10, 10]
    truths = [
        _truth(1, [lesion], ["L1"]),
        _truth(2, [lesion], ["L2"]),
        _truth(3, [[20, 20, 30, 30], lesion], ["L3a", "L3b"]),
        _truth(4, [lesion], ["L4"]),
    ]
    detections = [
        # Top-1 IoU 60/100 = 0.6; the lower box is exact but not top-1.
        _dets(1, [[0, 0, 10, 6], lesion], [0.9, 0.5]),
        # Equal scores: the first is top-1, IoU exactly 0.5 (not above it).
        _dets(2, [[0, 0, 10, 5], lesion], [0.7, 0.7]),
        # Top-1 hits L3b exactly; L3a only by the second box.
        _dets(3, [lesion, [20, 20, 30, 30]], [0.9, 0.8]),
        # Image 4: no detections.
    ]
    categories = categories_lib._build(
        "test", [(1, "A"), (2, "B"), (3, "C")], {"L1": 1, "L2": 2, "L3a": 1, "L3b": 2},
        ["L1", "L2", "L3a", "L3b", "L4"])
    return truths, detections, categories


def test_detection_accuracy_and_over_iou():
    truths, detections, _ = _accuracy_case()
    ious = accuracy.top1_ious(truths, detections, box_padding_px=0.0)
    np.testing.assert_allclose(ious[0], [0.6])
    np.testing.assert_allclose(ious[1], [0.5])
    np.testing.assert_allclose(ious[2], [0.0, 1.0])
    np.testing.assert_allclose(ious[3], [0.0])
    assert accuracy.detection_accuracy(ious) == 0.5  # images 1 and 3
    assert accuracy.accuracy_by_iou(ious) == {
        "0.1": 0.75, "0.2": 0.75, "0.3": 0.75, "0.4": 0.75, "0.5": 0.5,
        "0.6": 0.25, "0.7": 0.25, "0.8": 0.25, "0.9": 0.25}


def test_per_category_table():
    truths, detections, categories = _accuracy_case()
    assert categories.rows == ((1, "A"), (2, "B"), (3, "C"), (0, "unknown"))
    ious = accuracy.top1_ious(truths, detections, box_padding_px=0.0)
    rows = accuracy.per_category_accuracy(truths, ious, categories)
    assert rows == [
        # A: images 1 (right) and 3 (its top-1 hits L3b, not L3a).
        {"cluster": 1, "name": "A", "size": 2, "correct": 1, "accuracy": 0.5},
        # B: images 2 (IoU 0.5 is not above 0.5) and 3 (right).
        {"cluster": 2, "name": "B", "size": 2, "correct": 1, "accuracy": 0.5},
        {"cluster": 3, "name": "C", "size": 0, "correct": 0, "accuracy": None},
        {"cluster": 0, "name": "unknown", "size": 1, "correct": 0, "accuracy": 0.0},
        {"cluster": None, "name": "overall", "size": 4, "correct": 2, "accuracy": 0.5},
    ]


def test_category_sources():
    truths = [_truth(1, [[0, 0, 5, 5], [9, 9, 19, 19]], ["a", "b"], coarse_types=[4, -1])]
    coarse = categories_lib.from_coarse_types(truths)
    assert coarse.rows[3] == (4, "LV") and coarse.rows[-1] == (0, "unknown")
    assert (coarse.category("a"), coarse.category("b")) == (4, 0)
    rows = [{"lesion_id": "a", "category": "2", "category_name": "lung nodule"},
            {"lesion_id": "b", "category": "1", "category_name": "liver lesion"}]
    truth = categories_lib.from_truth_rows(truths, rows)
    assert truth.rows == ((1, "liver lesion"), (2, "lung nodule"))
    assert truth.of_lesion == {"a": 2, "b": 1}


# --- The official FROC -------------------------------------------------------------------


def _froc_case():
    a, b, far = [0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70]
    truths = [
        _truth(1, [a, b]),
        _truth(2, [a, [40, 40, 50, 50]], noisy=[True, False]),
        _truth(3, [a], noisy=[True]),  # left without a lesion: dropped
        _truth(4, [a]),
        _truth(5, [a, [0, 0, 10, 9]]),  # two lesions, IoU 0.9 with each other
    ]
    detections = [
        _dets(3, [a], [0.95]),  # on a dropped image: takes no part
        _dets(1, [a, a, b], [0.9, 0.85, 0.4]),  # hit A; A again (neither); hit B
        # On the noisy lesion only (a false positive); far; hit D.
        _dets(2, [a, far, [40, 40, 50, 50]], [0.8, 0.5, 0.2]),
        # Far; IoU exactly 0.5 with F (a hit); far.
        _dets(4, [far, [0, 0, 10, 5], far], [0.7, 0.6, 0.3]),
        _dets(5, [a], [0.65]),  # hits both lesions at once
    ]
    return truths, detections


def test_official_froc_rule():
    truths, detections = _froc_case()
    result = froc.official_froc(truths, detections, gt_padding=0.0, detection_padding=0.0)
    # Order: 0.9 hit, 0.85 neither, 0.8 FP, 0.7 FP, 0.65 +2, 0.6 hit, 0.5 FP, 0.4 hit,
    # 0.3 FP, 0.2 hit.
    np.testing.assert_array_equal(result.curve.false_positives, [0, 0, 0, 1, 2, 2, 2, 3, 3, 4, 4])
    np.testing.assert_array_equal(result.curve.hits, [0, 1, 1, 1, 1, 3, 4, 4, 5, 5, 6])
    assert (result.curve.num_images, result.curve.num_lesions) == (4, 6)
    assert (result.num_noisy_lesions_dropped, result.num_images_dropped) == (2, 1)
    # N = 4. r = 0.5: fewer than 2 FPs -> before the 0.7 FP: 1 hit. r = 1: fewer than 4
    # -> before the 0.3 FP: 5 hits. r >= 2: fewer than 8 -> all 6.
    assert result.sensitivities == pytest.approx((1 / 6, 5 / 6, 1, 1, 1, 1))
    assert result.mean_0p5_to_4 == pytest.approx(0.75)
    assert result.mean_all == pytest.approx(5 / 6)
    summary = result.as_dict()
    assert summary["sensitivity_at_fp"]["0.5"] == pytest.approx(1 / 6)
    assert summary["num_lesions"] == 6


def test_froc_false_positive_on_an_image_without_lesions():
    curve = froc.froc_curve([np.zeros([0, 4]), np.array([[0, 0, 10, 10]])],
                            [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10]])],
                            [np.array([0.9]), np.array([0.8])])
    np.testing.assert_array_equal(curve.false_positives, [0, 1, 1])
    np.testing.assert_array_equal(curve.hits, [0, 0, 1])
    # N = 2: at 0.5 FP/image fewer than 1 FP is allowed: before the first detection.
    assert froc.sensitivity_at(curve, (0.5, 1.0)) == (0.0, 1.0)


def test_froc_repads_detections_and_takes_the_iou_convention():
    truth = _truth(1, [[30, 30, 40, 40]])
    # Trained on 20 px: the detector's box of the lesion is 20 px wider on each side.
    detections = [_dets(1, [[10, 10, 60, 60]], [0.9])]
    shrunk = froc.official_froc([truth], detections, gt_padding=5.0, detection_padding=20.0)
    assert shrunk.sensitivities[0] == 1.0  # [25, 25, 45, 45] == the 5 px lesion box
    as_is = froc.official_froc([truth], detections, gt_padding=5.0, detection_padding=5.0)
    assert as_is.sensitivities[-1] == 0.0  # IoU 400 / 2500
    small = [_truth(1, [[0, 0, 3, 3]])]
    det = [_dets(1, [[0, 0, 3, 1]], [0.9])]  # continuous 3 / 9; inclusive 8 / 16
    assert froc.official_froc(small, det, gt_padding=0, detection_padding=0).sensitivities[-1] == 0
    assert froc.official_froc(small, det, gt_padding=0, detection_padding=0,
                              iou_convention=matching.INCLUSIVE_PIXELS).sensitivities[-1] == 1


# --- COCO files and AP@0.5 ----------------------------------------------------------------


def _numpy_coco_ap50(gt_boxes, det_boxes, det_scores):
    """An independent COCO AP at IoU 0.5 (continuous IoU; 101-point interpolation)."""
    matched, scores = [], []
    for gts, boxes, s in zip(gt_boxes, det_boxes, det_scores):
        order = np.argsort(-s, kind="stable")[:100]
        taken = np.zeros(len(gts), bool)
        iou = matching.pairwise_iou(boxes, gts)
        for k in order:
            best, best_iou = -1, 0.5 - 1e-10
            for g in range(len(gts)):
                if not taken[g] and iou[k, g] >= best_iou:
                    best, best_iou = g, iou[k, g]
            if best >= 0:
                taken[best] = True
            matched.append(best >= 0)
            scores.append(s[k])
    order = np.argsort(-np.array(scores), kind="mergesort")
    tp = np.cumsum(np.array(matched)[order])
    fp = np.cumsum(~np.array(matched)[order])
    recall = tp / sum(len(g) for g in gt_boxes)
    precision = tp / (tp + fp)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    ap = 0.0
    for r in np.linspace(0, 1, 101):
        i = np.searchsorted(recall, r, side="left")
        ap += precision[i] if i < len(precision) else 0.0
    return ap / 101


def test_coco_ap50_by_hand():
    truths = [_truth(1, [[0, 0, 10, 10]]), _truth(2, [[0, 0, 10, 10]])]
    detections = [_dets(1, [[0, 0, 10, 10]], [0.9]),
                  _dets(2, [[50, 50, 60, 60], [0, 0, 10, 10]], [0.8, 0.7])]
    gt = coco_format.groundtruth_dict(truths, box_padding_px=0.0,
                                      iou_convention=matching.CONTINUOUS)
    results = coco_format.results_list(detections, iou_convention=matching.CONTINUOUS)
    coco = coco_format.coco_ap50(gt, results)
    # TP, FP, TP: precision 1 up to recall 0.5 (51 points), then 2/3 (50 points).
    assert coco.ap50 == pytest.approx((51 + 50 * 2 / 3) / 101)
    np.testing.assert_allclose(coco.precision[:51], 1.0)
    np.testing.assert_allclose(coco.precision[51:], 2 / 3)


def test_coco_ap50_equals_an_independent_implementation_on_random_detections():
    rng = np.random.default_rng(0)
    truths, detections, gt_boxes, det_boxes, det_scores = [], [], [], [], []
    for image_id in range(1, 21):
        n = int(rng.integers(1, 4))
        corner = rng.uniform(0, 60, [n, 2])
        boxes = np.concatenate([corner, corner + rng.uniform(5, 30, [n, 2])], axis=1)
        truths.append(_truth(image_id, boxes.tolist()))
        gt_boxes.append(records.truth_boxes(truths[-1], 0.0))
        d = int(rng.integers(0, 8))
        jitter = boxes[rng.integers(0, n, d)] + rng.normal(0, 4, [d, 4])
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)
        scores = rng.uniform(0, 1, d).round(3)
        detections.append(_dets(image_id, jitter, scores))
        det_boxes.append(detections[-1].boxes)
        det_scores.append(scores)
    gt = coco_format.groundtruth_dict(truths, box_padding_px=0.0,
                                      iou_convention=matching.CONTINUOUS)
    results = coco_format.results_list(detections, iou_convention=matching.CONTINUOUS)
    ours = coco_format.coco_ap50(gt, results).ap50
    assert 0.05 < ours < 0.95
    assert ours == pytest.approx(_numpy_coco_ap50(gt_boxes, det_boxes, det_scores), abs=1e-3)


def test_coco_files_round_trip(tmp_path):
    truths = [_truth(1, [[2, 3, 12, 23]], ["les"], coarse_types=[4])]
    categories = categories_lib.from_coarse_types(truths)
    gt = coco_format.groundtruth_dict(truths, box_padding_px=1.0,
                                      iou_convention=matching.INCLUSIVE_PIXELS,
                                      categories=categories)
    # [1, 2, 13, 24] padded; inclusive: w = 24 - 2 + 1, h = 13 - 1 + 1.
    assert gt["annotations"][0]["bbox"] == [2.0, 1.0, 23.0, 13.0]
    assert gt["annotations"][0]["area"] == 23.0 * 13.0
    assert gt["annotations"][0]["lesion_category"] == "LV"
    assert gt["images"][0]["file_name"] == "p1_s1_r1_001"
    assert gt["images"][0]["slice_index"] == 1
    detections = [_dets(1, [[1.5, 2.5, 10.25, 20.75]], [0.5], [2])]
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(coco_format.results_list(
        detections, iou_convention=matching.INCLUSIVE_PIXELS, class_names=["a", "b"])))
    back = coco_format.read_results(str(path), [1, 2], iou_convention=matching.INCLUSIVE_PIXELS)
    np.testing.assert_allclose(back[0].boxes, detections[0].boxes)
    assert back[0].classes.tolist() == [2] and back[1].scores.size == 0
    with pytest.raises(ValueError, match="not in the split"):
        coco_format.read_results(str(path), [2], iou_convention=matching.INCLUSIVE_PIXELS)


# --- Unbookmarked lesions (synthetic truth) -------------------------------------------------


def test_unbookmarked_lesions():
    truths = [_truth(1, [[0, 0, 10, 10]], ["P1-L1"]), _truth(2, [[0, 0, 10, 10]], ["P2-L1"])]

    def row(lesion_id, patient, box, bookmarked):
        return {"lesion_id": lesion_id, "patient_index": patient, "study_index": "1",
                "series_index": "1", "slice_index": "4", "bookmarked": str(bookmarked),
                **dict(zip(("ymin", "xmin", "ymax", "xmax"), map(str, box)))}

    rows = [row("P1-L1", 1, [0, 0, 10, 10], 1), row("P1-L2", 1, [41, 41, 49, 49], 0),
            row("P2-L1", 2, [0, 0, 10, 10], 1), row("P2-L2", 2, [70, 70, 80, 80], 0),
            row("P3-L1", 3, [0, 0, 10, 10], 0)]
    boxes = unbookmarked.unbookmarked_boxes(truths, rows, box_padding_px=1.0)
    np.testing.assert_allclose(boxes[1], [[40, 40, 50, 50]])
    np.testing.assert_allclose(boxes[2], [[69, 69, 81, 81]])
    detections = [
        # Top-1 on the unbookmarked lesion; the bookmark found below the threshold.
        _dets(1, [[40, 40, 50, 50], [0, 0, 10, 10]], [0.9, 0.3]),
        # Top-1 on the bookmark; a false positive elsewhere.
        _dets(2, [[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.6]),
    ]
    metrics = unbookmarked.unbookmarked_metrics(truths, detections, boxes, box_padding_px=0.0)
    assert metrics == {
        "num_unbookmarked_lesions": 2, "score_threshold": 0.5, "sensitivity": 0.5,
        "num_false_positives": 2, "false_positives_on_unbookmarked": 1,
        "top1_wrong": 1, "top1_wrong_on_unbookmarked": 1,
        "detection_accuracy_with_unbookmarked": 1.0}
    with pytest.raises(ValueError, match="knows none"):
        unbookmarked.unbookmarked_boxes([_truth(3, [[0, 0, 1, 1]], ["X"])], rows, 0.0)
