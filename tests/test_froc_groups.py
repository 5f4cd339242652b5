"""FROC by lesion size and type, on a case worked by hand, against the overall FROC."""

import numpy as np
import pytest

from deeplesion_tf.evaluation import categories as categories_lib
from deeplesion_tf.evaluation import froc as froc_lib
from deeplesion_tf.evaluation import froc_groups
from deeplesion_tf.evaluation import matching
from deeplesion_tf.evaluation import report
from deeplesion_tf.evaluation import records


def _measurement(box):
    """A bookmark whose extent is `box` `[ymin, xmin, ymax, xmax]` (diagonals as axes)."""
    ymin, xmin, ymax, xmax = box
    return [xmin, ymin, xmax, ymax, xmin, ymax, xmax, ymin]


A, B, C = [10, 10, 20, 20], [60, 60, 90, 90], [30, 30, 50, 50]
TRUTHS = [
    records.ImageTruth(1, "p1_s_x_001", 128, 128, ("A", "B"),
                       np.array([_measurement(A), _measurement(B)], np.float64),
                       np.array([False, False]), np.array([-1, -1]),
                       np.array([[5.0, 4.0], [40.0, 30.0]])),
    records.ImageTruth(2, "p2_s_x_001", 128, 128, ("C",), np.array([_measurement(C)], np.float64),
                       np.array([False]), np.array([-1]), np.array([[20.0, 10.0]])),
]
DETECTIONS = [
    records.ImageDetections(1, np.array([A, B, [0, 100, 5, 105]], np.float64),
                            np.array([0.9, 0.8, 0.5]), np.array([1, 1, 1])),
    records.ImageDetections(2, np.array([[100, 100, 110, 110], C], np.float64),
                            np.array([0.7, 0.6]), np.array([1, 1])),
]
CATEGORIES = categories_lib.Categories("truth", ((1, "liver"), (2, "lung")),
                                       {"A": 1, "B": 1, "C": 2})
SETTINGS = dict(gt_padding=0.0, detection_padding=0.0, iou_convention=matching.CONTINUOUS)


def _sensitivities(result):
    return [result["sensitivity_at_fp"][f"{r:g}"] for r in froc_lib.FP_RATES]


def test_groups_on_a_case_worked_by_hand():
    # Pooled order d1 (hits A), d2 (B), d3 (FP, image 2), d4 (C), d5 (FP, image 1).
    overall = froc_lib.official_froc(TRUTHS, DETECTIONS, **SETTINGS)
    assert overall.sensitivities == pytest.approx((2 / 3, 1, 1, 1, 1, 1))
    groups = froc_groups.froc_by_group(TRUTHS, DETECTIONS, CATEGORIES, resamples=0, seed=0,
                                       **SETTINGS)
    # < 10 mm: only A, on image 1 (N = 1); d2 and d5 are false positives there.
    small = groups["size"]["< 10 mm"]
    assert (small["num_lesions"], small["num_images"]) == (1, 1)
    assert _sensitivities(small) == pytest.approx([1, 1, 1, 1, 1, 1])
    # > 30 mm: B; d1, scored above d2, is a false positive: fewer than 1 FP reads 0.
    assert _sensitivities(groups["size"]["> 30 mm"]) == pytest.approx([0, 0, 1, 1, 1, 1])
    # 10-30 mm: C on image 2; d3 above it is a false positive.
    assert _sensitivities(groups["size"]["10-30 mm"]) == pytest.approx([0, 0, 1, 1, 1, 1])
    assert _sensitivities(groups["type"]["liver"]) == pytest.approx([1, 1, 1, 1, 1, 1])
    assert groups["type"]["lung"]["sensitivity_at_fp"] == \
        groups["size"]["10-30 mm"]["sensitivity_at_fp"]


def test_a_group_holding_every_lesion_is_the_overall_froc():
    overall = froc_lib.official_froc(TRUTHS, DETECTIONS, **SETTINGS)
    one = categories_lib.Categories("truth", ((1, "all"),), {"A": 1, "B": 1, "C": 1})
    group = froc_groups.froc_by_group(TRUTHS, DETECTIONS, one, resamples=0, seed=0,
                                      **SETTINGS)["type"]["all"]
    assert tuple(_sensitivities(group)) == overall.sensitivities
    assert group["mean_0.5_to_4"] == overall.mean_0p5_to_4


def test_size_boundaries_and_missing_diameters():
    truth = TRUTHS[0]._replace(lesion_ids=("a", "b", "c", "d"),
                               diameters_mm=np.array([[9.99, 1], [10, 1], [30, 1], [30.01, 1]]))
    masks = froc_groups.size_masks([truth])
    assert {name: m[0].tolist() for name, m in masks.items()} == {
        "< 10 mm": [True, False, False, False], "10-30 mm": [False, True, True, False],
        "> 30 mm": [False, False, False, True]}
    assert froc_groups.size_masks([TRUTHS[0]._replace(diameters_mm=None)]) == {}
    groups = froc_groups.froc_by_group(TRUTHS, DETECTIONS, None, resamples=0, seed=0,
                                       **SETTINGS)
    assert groups["type"] == {}


def test_group_intervals_are_the_patient_bootstrap_of_the_group():
    groups = froc_groups.froc_by_group(TRUTHS, DETECTIONS, CATEGORIES, resamples=300, seed=1,
                                       **SETTINGS)
    group = groups["type"]["liver"]
    estimate = group["intervals"]["froc_4"]
    assert estimate["value"] == group["sensitivity_at_fp"]["4"] == 1.0
    # Every resample holds patient 1 or not; where it does, liver's sensitivity is 1.
    assert estimate["interval"] == [1.0, 1.0]
    table = report.froc_group_table([("m", {"froc_by_group": groups})])
    assert "| m | long axis < 10 mm | 1 | 1 | 100.0 [100.0, 100.0] |" in table


def test_each_group_has_its_precision_recall_curve():
    groups = froc_groups.froc_by_group(TRUTHS, DETECTIONS, CATEGORIES, resamples=0, seed=0,
                                       **SETTINGS)
    # liver (A and B on image 1): d1 hits A, d2 hits B, d5 is a false positive.
    liver = groups["type"]["liver"]
    assert liver["curve"]["recall"] == pytest.approx([0.5, 1.0, 1.0])
    assert liver["curve"]["precision"] == pytest.approx([1.0, 1.0, 2 / 3])
    assert liver["sensitivity_all_detections"] == liver["curve"]["recall"][-1] == 1.0
    # lung (C on image 2): d3 is a false positive before d4 hits C.
    assert groups["type"]["lung"]["curve"]["precision"] == pytest.approx([0.0, 0.5])
