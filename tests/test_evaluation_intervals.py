"""Intervals by bootstrap over patients and paired comparisons (`evaluation.intervals`).

The weighted metrics must be the metrics: with all weights 1 they equal
`accuracy`, `froc` and pycocotools, and with a resample's counts they equal the
metrics of the images drawn, duplicated. The intervals must cover: on 1,000
simulated test sets of a known accuracy, 93-97% of the 95% intervals hold it.
"""

import numpy as np
import pytest

from deeplesion_tf.evaluation import categories as categories_lib
from deeplesion_tf.evaluation import intervals
from deeplesion_tf.evaluation import records
from deeplesion_tf.evaluation import runner
from tests.test_evaluation_metrics import _dets, _truth

NO_INTERVALS = runner.EvalSettings("synthetic", "test", box_padding_px=0.0,
                                   froc_box_padding_px=0.0, bootstrap_resamples=0)
FROC_KEYS = dict(zip(intervals.FROC_METRICS, ("0.5", "1", "2", "4", "8", "16")))


def _case(seed, num_images=60, images_per_patient=3, hit_rate=0.7, size=256, detector_seed=None):
    """Random lesions (1-2 per image, some noisy) and detections: hits near them and noise.

    The lesions depend on `seed` alone, the detections also on `detector_seed`.
    """
    rng = np.random.default_rng(seed)
    detector = np.random.default_rng(seed if detector_seed is None else detector_seed)
    truths, detections = [], []
    for i in range(1, num_images + 1):
        boxes = []
        for _ in range(rng.integers(1, 3)):
            y, x = rng.uniform(10, size - 80, 2)
            h, w = rng.uniform(15, 50, 2)
            boxes.append([y, x, y + h, x + w])
        truth = _truth(i, boxes, noisy=[bool(rng.random() < 0.1) for _ in boxes], size=size)
        truths.append(truth._replace(
            file_name=f"pat{(i - 1) // images_per_patient}_s1_r1_{i:03d}"))
        det_boxes, scores = [], []
        for box in boxes:
            if detector.random() < hit_rate:
                det_boxes.append(np.array(box) + detector.normal(0, 2, 4))
                scores.append(detector.uniform(0.3, 1.0))
        for _ in range(detector.integers(0, 12)):
            y, x = detector.uniform(0, size - 40, 2)
            det_boxes.append([y, x, y + 30, x + 30])
            scores.append(detector.uniform(0.0, 0.9))
        detections.append(_dets(i, det_boxes, scores))
    of_lesion = {lesion: 1 + (i % 2) for i, t in enumerate(truths) for lesion in t.lesion_ids}
    categories = categories_lib.Categories("truth", ((1, "odd"), (2, "even")), of_lesion)
    return truths, detections, categories


def _evaluate(truths, detections, categories, settings=NO_INTERVALS):
    return runner.evaluate(truths, detections, settings, categories=categories)


def test_weighted_metrics_with_unit_weights_are_the_point_estimates():
    truths, detections, categories = _case(0)
    evaluation = _evaluate(truths, detections, categories)
    m = evaluation.metrics
    values = intervals.weighted_metrics(evaluation.image_scores, np.ones([1, len(truths)]))
    assert values["detection_accuracy"][0] == pytest.approx(m["detection_accuracy"], abs=1e-12)
    assert values["ap50"][0] == pytest.approx(m["ap50"], abs=1e-12)  # pycocotools' own
    for key, rate in FROC_KEYS.items():
        assert values[key][0] == pytest.approx(m["froc"]["sensitivity_at_fp"][rate], abs=1e-12)
    assert values["froc_mean_0.5_to_4"][0] == pytest.approx(m["froc"]["mean_0.5_to_4"])
    assert values["froc_mean_0.5_to_16"][0] == pytest.approx(m["froc"]["mean_0.5_to_16"])
    for row in m["per_category"][:-1]:
        assert values[intervals.category_metric(row["name"])][0] == pytest.approx(row["accuracy"])
    for name, threshold in zip(intervals.ACCURACY_BY_IOU_METRICS, m["accuracy_by_iou"]):
        assert values[name][0] == pytest.approx(m["accuracy_by_iou"][threshold])
    assert 0.2 < m["detection_accuracy"] < 0.9 and 0.1 < m["ap50"] < 0.9  # not a trivial case


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_resample_as_weights_equals_the_metrics_of_the_duplicated_images(seed):
    truths, detections, categories = _case(seed)
    scores = _evaluate(truths, detections, categories).image_scores
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, scores.num_patients, scores.num_patients)  # patients, with repeats
    # The resample written out: every image of every drawn patient, renumbered.
    new_truths, new_detections = [], []
    for copy, patient in enumerate(drawn):
        for k in np.flatnonzero(scores.patients == patient):
            image_id = len(new_truths) + 1
            t, d = truths[k], detections[k]
            new_truths.append(t._replace(image_id=image_id,
                                         file_name=f"copy{copy}_{t.file_name}"))
            new_detections.append(d._replace(image_id=image_id))
    expected = _evaluate(new_truths, new_detections, categories).metrics
    weights = np.bincount(drawn, minlength=scores.num_patients)[scores.patients][np.newaxis]
    values = intervals.weighted_metrics(scores, weights)
    assert values["detection_accuracy"][0] == pytest.approx(expected["detection_accuracy"])
    assert values["ap50"][0] == pytest.approx(expected["ap50"], abs=1e-9)
    for key, rate in FROC_KEYS.items():
        assert values[key][0] == pytest.approx(expected["froc"]["sensitivity_at_fp"][rate])
    for row in expected["per_category"][:-1]:
        assert values[intervals.category_metric(row["name"])][0] == pytest.approx(row["accuracy"])
    for name, threshold in zip(intervals.ACCURACY_BY_IOU_METRICS, expected["accuracy_by_iou"]):
        assert values[name][0] == pytest.approx(expected["accuracy_by_iou"][threshold])


def _accuracy_scores(correct, patients):
    """`ImageScores` of top-1 outcomes alone (no lesions for FROC or AP)."""
    n = len(correct)
    none = np.zeros([0], np.int64)
    return intervals.ImageScores(
        file_names=np.array([f"image{k}" for k in range(n)]), patients=np.asarray(patients),
        top1_correct=np.asarray(correct, bool),
        top1_iou=np.where(np.asarray(correct, bool), 0.75, 0.0),
        category_names=np.array([], str),
        category_member=np.zeros([0, n], bool), category_correct=np.zeros([0, n], bool),
        froc_image=none, froc_scores=np.zeros([0]), froc_false_positive=np.zeros([0], bool),
        froc_new_hits=none, froc_lesions=np.zeros([n], np.int64),
        froc_scored=np.zeros([n], bool), coco_image=none, coco_scores=np.zeros([0]),
        coco_true_positive=np.zeros([0], bool), coco_positives=np.zeros([n], np.int64))


def test_the_patient_is_the_unit_a_copied_slice_adds_no_information():
    # 10 patients, 7 right. With one slice each, the interval is scipy's BCa interval
    # of the ten 0/1 outcomes (same resamples); with every slice shown three times it
    # is the same interval, where resampling slices would narrow it by sqrt(3).
    correct = np.array([1, 1, 0, 1, 1, 1, 0, 1, 0, 1], bool)
    one = intervals.bootstrap([_accuracy_scores(correct, np.arange(10))], resamples=999,
                              seed=3)["detection_accuracy"]
    three = intervals.bootstrap([_accuracy_scores(np.repeat(correct, 3),
                                                  np.repeat(np.arange(10), 3))],
                                resamples=999, seed=3)["detection_accuracy"]
    import scipy.stats
    reference = scipy.stats.bootstrap((correct.astype(float),), np.mean, n_resamples=999,
                                      rng=np.random.default_rng(3))
    assert one["value"] == three["value"] == 0.7
    assert one["interval"] == pytest.approx([reference.confidence_interval.low,
                                             reference.confidence_interval.high])
    assert three["interval"] == pytest.approx(one["interval"])
    assert one["method"] == "BCa" and 0.0 < one["interval"][0] < 0.7 < one["interval"][1] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("accuracy,seed", [(0.8, 0), (0.5, 1)])
def test_95_percent_intervals_cover_a_known_accuracy_93_to_97_percent_of_the_time(accuracy,
                                                                                  seed):
    # 1,000 test sets of 80 patients with 1-5 key slices each; a patient's slices share
    # a success rate drawn around the known accuracy (slices of one patient agree more
    # than slices of two), as the detectors' do.
    rng = np.random.default_rng(seed)
    covered, draws = 0, 1000
    for draw in range(draws):
        sizes = rng.integers(1, 6, 80)
        rates = rng.beta(4 * accuracy, 4 * (1 - accuracy), 80)
        patients = np.repeat(np.arange(80), sizes)
        correct = rng.random(len(patients)) < rates[patients]
        low, high = intervals.bootstrap([_accuracy_scores(correct, patients)], resamples=999,
                                        seed=draw)["detection_accuracy"]["interval"]
        covered += low <= accuracy <= high
    assert 0.93 <= covered / draws <= 0.97


def test_paired_permutation_p_value_by_hand():
    # Four patients of one slice: model a gets none right, model b the first three. The
    # difference b - a is 3/4; swapping the models within each patient gives 2^4 equally
    # likely differences of (+-1 +-1 +-1 + 0) / 4; two of the 16 are as far from 0 as
    # 3/4 on either side: p = 2 * 2/16 = 0.25 (exact: 16 <= resamples).
    a = _accuracy_scores([0, 0, 0, 0], np.arange(4))
    b = _accuracy_scores([1, 1, 1, 0], np.arange(4))
    comparison = intervals.compare([a], [b], resamples=999, seed=0)
    difference = comparison.difference["detection_accuracy"]
    assert difference["value"] == 0.75
    assert difference["p_value"] == pytest.approx(0.25)
    assert comparison.a["detection_accuracy"]["value"] == 0.0
    assert comparison.b["detection_accuracy"]["value"] == 0.75


def test_a_model_compared_with_itself_differs_by_nothing():
    truths, detections, categories = _case(4)
    scores = _evaluate(truths, detections, categories).image_scores
    comparison = intervals.compare([scores], [scores], resamples=200, seed=0)
    for name, d in comparison.difference.items():
        assert d["value"] == 0.0 and d["interval"] == [0.0, 0.0], name
        assert d["p_value"] == 1.0, name
        assert intervals.verdict_words(d, "b better", "a better") == "undecided at this size"


def test_a_better_model_is_found_better_and_seeds_pool():
    truths, detections, categories = _case(5, num_images=90, hit_rate=0.4)
    _, better, _ = _case(5, num_images=90, hit_rate=0.95, detector_seed=6)  # more hits
    worse = _evaluate(truths, detections, categories).image_scores
    good = _evaluate(truths, better, categories).image_scores
    single = intervals.compare([worse], [good], resamples=500, seed=0).difference
    assert single["detection_accuracy"]["interval"][0] > 0
    assert single["detection_accuracy"]["p_value"] < 0.01
    froc = single["froc_mean_0.5_to_4"]
    assert intervals.verdict_words(froc, "good better", "worse better") == "good better"
    # Two "seeds" per group: the pooled difference is the mean of the per-seed ones.
    pooled = intervals.compare([worse, good], [good, good], resamples=500, seed=0).difference
    assert pooled["detection_accuracy"]["value"] == pytest.approx(
        single["detection_accuracy"]["value"] / 2)


def test_other_images_cannot_be_compared():
    truths, detections, categories = _case(6)
    scores = _evaluate(truths, detections, categories).image_scores
    other = scores._replace(file_names=np.roll(scores.file_names, 1))
    with pytest.raises(ValueError, match="not of the same images"):
        intervals.compare([scores], [other], resamples=10, seed=0)


def test_evaluate_puts_intervals_in_the_metrics_and_the_table_rows():
    truths, detections, categories = _case(7)
    settings = NO_INTERVALS._replace(bootstrap_resamples=500, bootstrap_seed=1)
    m = _evaluate(truths, detections, categories, settings).metrics
    assert m["num_patients"] == 20
    accuracy = m["intervals"]["detection_accuracy"]
    assert accuracy["value"] == m["detection_accuracy"]
    assert accuracy["interval"][0] < accuracy["value"] < accuracy["interval"][1]
    assert m["per_category"][-1]["interval"] == accuracy["interval"]
    odd = m["intervals"]["category/odd"]
    assert m["per_category"][0]["interval"] == odd["interval"]
    # The same seed, the same interval.
    again = _evaluate(truths, detections, categories, settings).metrics
    assert again["intervals"] == m["intervals"]


def test_one_patient_has_values_but_no_intervals():
    truths, detections, categories = _case(8, num_images=3)
    settings = NO_INTERVALS._replace(bootstrap_resamples=100)
    m = _evaluate(truths, detections, categories, settings).metrics
    assert m["num_patients"] == 1
    assert m["intervals"]["detection_accuracy"] == {
        "value": m["detection_accuracy"], "interval": None, "method": None}


def test_as_percent_and_patient_ids():
    assert intervals.as_percent({"value": 0.8333, "interval": [0.729, 0.917]}) == \
        "83.3 [72.9, 91.7]"
    assert intervals.as_percent({"value": -0.021, "interval": [-0.07, 0.03]}, signed=True) == \
        "-2.1 [-7.0, +3.0]"
    assert intervals.as_percent(None) == "-"
    truth = _truth(1, [[0, 0, 5, 5]])._replace(file_name="abc123_st9_se2_004")
    assert records.patient_id(truth) == "abc123"


@pytest.mark.slow
def test_under_no_difference_the_paired_interval_holds_0_and_p_is_rarely_small():
    # 400 pairs of equally good models on test sets of 60 patients (1-5 slices each, a
    # success rate per patient shared by both models, as two detectors share hard cases).
    rng = np.random.default_rng(11)
    covered = small = 0
    draws = 400
    for draw in range(draws):
        patients = np.repeat(np.arange(60), rng.integers(1, 6, 60))
        rates = rng.beta(3.2, 0.8, 60)[patients]
        a, b = (_accuracy_scores(rng.random(len(patients)) < rates, patients) for _ in "ab")
        d = intervals.compare([a], [b], resamples=499, seed=draw).difference["detection_accuracy"]
        covered += d["interval"][0] <= 0.0 <= d["interval"][1]
        small += d["p_value"] < 0.05
    assert 0.92 <= covered / draws <= 0.98
    assert 0.01 <= small / draws <= 0.09


def test_seed_interval_by_hand_and_the_pooled_verdict():
    # Differences +0.07, -0.09, -0.40: mean -0.14; squared deviations 0.0441 + 0.0025 +
    # 0.0676 = 0.1142, sd sqrt(0.1142 / 2) = 0.2390; t(0.975, 2 df) = 4.3027, so the
    # interval is -0.14 +- 4.3027 * 0.2390 / sqrt(3) = -0.14 +- 0.5936.
    seeds = intervals.seed_interval([0.07, -0.09, -0.40])
    assert seeds["value"] == pytest.approx(-0.14)
    assert seeds["sd"] == pytest.approx(0.2390, abs=1e-4)
    assert seeds["interval"] == pytest.approx([-0.7336, 0.4536], abs=1e-3)
    assert intervals.seed_interval([0.1]) is None
    patients = {"value": -0.14, "interval": [-0.17, -0.11]}
    assert intervals.pooled_verdict(patients, None, "b", "a") == "a"
    # The interval alone says a; a permutation test that does not agree leaves it open.
    assert intervals.verdict_words(dict(patients, p_value=0.12), "b", "a") == \
        "undecided at this size"
    assert intervals.verdict_words(dict(patients, p_value=0.01), "b", "a") == "a"
    assert intervals.pooled_verdict(patients, seeds, "b", "a") == "undecided at this size"
    steady = intervals.seed_interval([-0.12, -0.15, -0.13])
    assert intervals.pooled_verdict(patients, steady, "b", "a") == "a"
