"""95% intervals by bootstrap over patients, and paired comparisons of detectors.

The key slices of one patient are not independent (one anatomy, often one
lesion on several slices), so the unit of resampling is the patient: a
resample draws patients with replacement and takes every image of each.

Every metric is a function of per-image quantities that do not depend on
which other images are in the set (`ImageScores`):
  * top-1 accuracy and Table 1: whether each image's top-1 box hits one of
    its lesions (of each category);
  * FROC: each detection's outcome in its image, false positive or how many
    lesions it newly hits (`froc.FrocOutcomes`), in the pooled score order;
  * AP@0.5: each detection's match in pycocotools' per-image evaluation
    (`coco_format.CocoMatches`).
A resample is then a vector of image weights (how often each image was
drawn), and each metric a weighted mean, or a weighted cumulative sum over the
pooled detections in their fixed order, vectorised over resamples. That is
why a few thousand resamples of the FROC and AP take seconds, where as many
runs of pycocotools would take an hour. With all weights 1 the formulas give
the point estimates of `accuracy`, `froc` and pycocotools exactly (tested).

`scipy.stats.bootstrap` draws the resamples and forms BCa intervals;
`scipy.stats.permutation_test` gives the paired p-value (patients' two
models swapped at random). Where some resamples hold no image of a Table 1
row, the row's interval is the percentile interval of the resamples that do
(BCa needs the statistic on every resample); `method` records which.

Shape shorthand: I images, C categories, P pooled FROC detections, Q pooled
COCO detections, B resamples.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import scipy.stats
from absl import logging

from deeplesion_tf.evaluation import accuracy
from deeplesion_tf.evaluation import coco_format
from deeplesion_tf.evaluation import froc as froc_lib
from deeplesion_tf.evaluation import records

CONFIDENCE = 0.95
# Resampling one patient says nothing about the spread.
MIN_PATIENTS = 2
SCORES_FILE = "image_scores.npz"
FROC_METRICS = tuple(f"froc_{r:g}" for r in froc_lib.FP_RATES)
FROC_SUMMARY_METRICS = FROC_METRICS + ("froc_mean_0.5_to_4", "froc_mean_0.5_to_16")
SUMMARY_METRICS = ("detection_accuracy", "ap50") + FROC_SUMMARY_METRICS
# Fig. 5a's points: accuracy with the top-1 IoU above each threshold.
ACCURACY_BY_IOU_METRICS = tuple(f"accuracy_iou_{t:g}" for t in accuracy.ACCURACY_IOU_THRESHOLDS)
_CATEGORY_PREFIX = "category/"
_LOW_RATES = np.array([r <= 4.0 for r in froc_lib.FP_RATES])


def category_metric(name: str) -> str:
    """The metric name of Table 1's row `name`."""
    return _CATEGORY_PREFIX + name


class ImageScores(NamedTuple):
    """The per-image quantities of one model's evaluation on one split.

    Attributes:
      file_names: `[I]` str, `records.ImageTruth.file_name` (to pair models).
      patients: `[I]` int, the image's patient (0..patients - 1).
      top1_correct: `[I]` bool.
      top1_iou: `[I]` float, the top-1 box's best IoU with the image's lesions.
      category_names: `[C]` str, Table 1's rows without `overall`.
      category_member: `[C, I]` bool, the image holds a lesion of the row.
      category_correct: `[C, I]` bool, its top-1 box hits one of them.
      froc_image, froc_scores, froc_false_positive, froc_new_hits: `[P]`, the
        FROC outcomes (`froc.FrocOutcomes`), `froc_image` indexing the I images.
      froc_lesions: `[I]` int, lesions the FROC scores (0: the image is not scored).
      froc_scored: `[I]` bool, the FROC scores the image (step 1 of its rule).
      coco_image, coco_scores, coco_true_positive: `[Q]`, pycocotools' matches
        in its pooling order (image order, then descending score).
      coco_positives: `[I]` int.
    """

    file_names: np.ndarray
    patients: np.ndarray
    top1_correct: np.ndarray
    top1_iou: np.ndarray
    category_names: np.ndarray
    category_member: np.ndarray
    category_correct: np.ndarray
    froc_image: np.ndarray
    froc_scores: np.ndarray
    froc_false_positive: np.ndarray
    froc_new_hits: np.ndarray
    froc_lesions: np.ndarray
    froc_scored: np.ndarray
    coco_image: np.ndarray
    coco_scores: np.ndarray
    coco_true_positive: np.ndarray
    coco_positives: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.file_names)

    @property
    def num_patients(self) -> int:
        return int(self.patients.max()) + 1 if len(self.patients) else 0

    def category_sizes(self):
        """`[(name, images)]` of Table 1's rows."""
        return [(str(n), int(m.sum())) for n, m in zip(self.category_names,
                                                       self.category_member)]


def image_scores(truths: Sequence[records.ImageTruth], top1_ious: Sequence[np.ndarray],
                 categories, froc: froc_lib.FrocResult, coco: coco_format.CocoAP,
                 iou_threshold: float = accuracy.IOU_THRESHOLD) -> ImageScores:
    """`ImageScores` from what `runner.evaluate` computed.

    Args:
      truths: the I images.
      top1_ious: `accuracy.top1_ious` of them.
      categories: `categories.Categories` of Table 1's rows.
      froc: `froc.official_froc` of them.
      coco: `coco_format.coco_ap50` of them.
      iou_threshold: the accuracy's (it must *exceed* it, as `accuracy`).
    """
    position = {t.image_id: k for k, t in enumerate(truths)}
    hits = accuracy.category_hits(truths, top1_ious, categories, iou_threshold)
    of_froc = froc_scores(truths, froc)
    return ImageScores(
        file_names=np.array([t.file_name for t in truths], str),
        patients=of_froc.patients,
        top1_correct=np.array([bool(np.any(iou > iou_threshold)) for iou in top1_ious], bool),
        top1_iou=np.array([float(np.max(iou, initial=0.0)) for iou in top1_ious], np.float64),
        category_names=np.array([name for _, name in categories.rows], str),
        category_member=hits.member, category_correct=hits.correct,
        froc_image=of_froc.froc_image, froc_scores=of_froc.froc_scores,
        froc_false_positive=of_froc.froc_false_positive, froc_new_hits=of_froc.froc_new_hits,
        froc_lesions=of_froc.froc_lesions, froc_scored=of_froc.froc_scored,
        coco_image=np.array([position[int(i)] for i in coco.matches.image_ids], np.int64),
        coco_scores=coco.matches.scores, coco_true_positive=coco.matches.true_positive,
        coco_positives=np.array([coco.matches.positives.get(t.image_id, 0) for t in truths],
                                np.int64))


def save_image_scores(path: str, scores: ImageScores) -> None:
    np.savez_compressed(path, **scores._asdict())


def load_image_scores(directory: str) -> ImageScores:
    """The `ImageScores` that `runner.write_outputs` saved in an evaluation directory."""
    with np.load(os.path.join(directory, SCORES_FILE)) as data:
        return ImageScores(**{name: data[name] for name in ImageScores._fields})


# --- Weighted metrics -----------------------------------------------------------------


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-300), np.nan)


def _froc(s: ImageScores, weights: np.ndarray) -> np.ndarray:
    """`[R + 2, B]`: sensitivity at each FP rate, then the means over 0.5-4 and 0.5-16."""
    w = weights[:, s.froc_image]  # [B, P]
    false_positives = np.cumsum(w * s.froc_false_positive, axis=1)
    hits = np.cumsum(w * s.froc_new_hits, axis=1)
    zeros = np.zeros([len(weights), 1])
    false_positives = np.concatenate([zeros, false_positives], axis=1)  # [B, P + 1]
    hits = np.concatenate([zeros, hits], axis=1)
    images = weights @ s.froc_scored.astype(np.float64)  # [B]
    lesions = weights @ s.froc_lesions.astype(np.float64)
    rows = []
    for rate in froc_lib.FP_RATES:
        # Both cumulative sums grow along the order: the best sensitivity with fewer
        # than r * N false positives is the one at the last such position.
        last = np.sum(false_positives < rate * images[:, None], axis=1) - 1  # [B]
        rows.append(_ratio(hits[np.arange(len(weights)), last], lesions))
    sensitivity = np.array(rows)  # [R, B]
    return np.concatenate([sensitivity, sensitivity[_LOW_RATES].mean(0, keepdims=True),
                           sensitivity.mean(0, keepdims=True)])


def _ap50(s: ImageScores, weights: np.ndarray) -> np.ndarray:
    """`[B]`: pycocotools' `accumulate` at IoU 0.5 (area all), each image weighted."""
    order = np.argsort(-s.coco_scores, kind="mergesort")  # pycocotools' own sort
    w = weights[:, s.coco_image[order]]  # [B, Q]
    tp = s.coco_true_positive[order]
    true_positives = np.cumsum(w * tp, axis=1)
    false_positives = np.cumsum(w * ~tp, axis=1)
    positives = weights @ s.coco_positives.astype(np.float64)  # [B]
    recall = true_positives / np.maximum(positives, 1e-300)[:, None]
    precision = true_positives / (true_positives + false_positives + np.spacing(1))
    # pycocotools' envelope: precision made non-increasing from the right.
    precision = np.flip(np.maximum.accumulate(np.flip(precision, axis=1), axis=1), axis=1)
    result = np.zeros([len(weights)])
    if not len(tp):
        return np.where(positives > 0, 0.0, np.nan)
    points = coco_format.RECALL_POINTS
    for b in range(len(weights)):
        # Recall points beyond the last recall reached get precision 0.
        at = np.searchsorted(recall[b], points, side="left")
        q = np.where(at < len(tp), precision[b, np.minimum(at, len(tp) - 1)], 0.0)
        result[b] = q.mean() if positives[b] > 0 else np.nan
    return result


def weighted_metrics(s: ImageScores, weights: np.ndarray) -> Dict[str, np.ndarray]:
    """Every metric of `s` with images weighted by `weights` `[B, I]`: `{name: [B]}`.

    Names: `SUMMARY_METRICS`, `category_metric(name)` per Table 1 row, then
    `ACCURACY_BY_IOU_METRICS`. NaN where a resample has no image for a metric.
    """
    weights = np.asarray(weights, np.float64)
    images = weights.sum(axis=1)
    values = {"detection_accuracy": _ratio(weights @ s.top1_correct.astype(np.float64), images),
              "ap50": _ap50(s, weights)}
    values.update(zip(FROC_SUMMARY_METRICS, _froc(s, weights)))
    for name, member, correct in zip(s.category_names, s.category_member, s.category_correct):
        values[category_metric(str(name))] = _ratio(
            weights @ (member & correct).astype(np.float64), weights @ member.astype(np.float64))
    for name, threshold in zip(ACCURACY_BY_IOU_METRICS, accuracy.ACCURACY_IOU_THRESHOLDS):
        values[name] = _ratio(weights @ (s.top1_iou > threshold).astype(np.float64), images)
    return values


# --- Bootstrap and permutation --------------------------------------------------------


def _patient_counts(indices: np.ndarray, num: int) -> np.ndarray:
    """`[B, num]`: how often each of `num` units appears in each row of `indices` `[B, n]`."""
    indices = np.atleast_2d(indices)
    counts = np.zeros([indices.shape[0], num])
    np.add.at(counts, (np.arange(indices.shape[0])[:, None], indices), 1.0)
    return counts


def _vectorized(function, metrics_last: bool = False):
    """A scipy statistic from `function(*samples [B, n]) -> [M, B]`.

    scipy calls it with samples `[..., n]` (resampled along the last axis) and
    with the original 1-D samples. `bootstrap` wants `[M, ...]` back,
    `permutation_test` (which stacks batches on the first axis) `[..., M]`.
    """
    def statistic(*samples, axis=-1):
        samples = [np.moveaxis(np.asarray(x), axis, -1) for x in samples]
        lead = samples[0].shape[:-1]
        flat = [x.reshape([-1, x.shape[-1]]) for x in samples]
        out = function(*flat)  # [M, prod(lead)]
        if metrics_last:
            return out.T.reshape(lead + out.shape[:1])
        return out.reshape(out.shape[:1] + lead)
    return statistic


def _estimate(value: float, distribution: np.ndarray, interval, confidence: float) -> Dict:
    """`{"value", "interval", "method"}`: scipy's BCa interval, or percentile where NaN."""
    value = float(value)
    if math.isnan(value):
        return {"value": None, "interval": None, "method": None}
    low, high = float(interval[0]), float(interval[1])
    method = "BCa"
    finite = distribution[np.isfinite(distribution)]
    if not len(finite):
        return {"value": value, "interval": None, "method": None}
    if np.all(finite == finite[0]) and len(finite) == len(distribution):
        low = high = float(finite[0])  # BCa is undefined without spread.
    elif math.isnan(low) or math.isnan(high) or len(finite) < len(distribution):
        tail = 100.0 * (1.0 - confidence) / 2.0
        low, high = (float(v) for v in np.percentile(finite, [tail, 100.0 - tail]))
        method = "percentile"
    return {"value": value, "interval": [low, high], "method": method}


class Comparison(NamedTuple):
    """Two groups of models on the same images (`compare`).

    Attributes:
      a, b: `{metric: estimate}` of each group (the mean over its models).
      difference: `{metric: estimate}` of b - a, with `p_value`.
    """

    a: Dict[str, Dict]
    b: Dict[str, Dict]
    difference: Dict[str, Dict]


def _metric_names(s: ImageScores) -> List[str]:
    return (list(SUMMARY_METRICS) + [category_metric(str(n)) for n in s.category_names]
            + list(ACCURACY_BY_IOU_METRICS))


def _mean_metrics(group: Sequence[ImageScores], weights: np.ndarray) -> np.ndarray:
    """`[M, B]`: each metric averaged over the models of `group`."""
    names = _metric_names(group[0])
    per_model = [weighted_metrics(s, weights) for s in group]
    return np.array([np.mean([m[n] for m in per_model], axis=0) for n in names])


def _check_same_images(groups: Sequence[Sequence[ImageScores]]) -> ImageScores:
    first = groups[0][0]
    for s in (s for g in groups for s in g):
        if not (np.array_equal(s.file_names, first.file_names)
                and np.array_equal(s.category_names, first.category_names)):
            raise ValueError("the evaluations are not of the same images and category rows")
    return first


def bootstrap(group: Sequence[ImageScores], *, resamples: int, seed: int,
              confidence: float = CONFIDENCE) -> Dict[str, Dict]:
    """Every metric of the mean of `group`'s models with its patient-bootstrap interval.

    Returns:
      `{metric: {"value", "interval": [low, high], "method"}}`; the value is the
      metric on all images (None and no interval where no image has it).
    """
    group = list(group)
    first = _check_same_images([group])
    num = first.num_patients

    @_vectorized
    def statistic(indices):
        return _mean_metrics(group, _patient_counts(indices, num)[:, first.patients])

    return _intervals(statistic, _metric_names(first), first.num_patients,
                      group_values=_mean_metrics(group, np.ones([1, first.num_images]))[:, 0],
                      resamples=resamples, seed=seed, confidence=confidence)


class FrocScores(NamedTuple):
    """The FROC part of `ImageScores`, for a FROC on a subset of the lesions (`froc_groups`)."""

    patients: np.ndarray
    froc_image: np.ndarray
    froc_scores: np.ndarray
    froc_false_positive: np.ndarray
    froc_new_hits: np.ndarray
    froc_lesions: np.ndarray
    froc_scored: np.ndarray


def froc_scores(truths: Sequence[records.ImageTruth], froc: froc_lib.FrocResult) -> FrocScores:
    """`FrocScores` of `froc.official_froc(truths, ...)`, patients numbered as `image_scores`."""
    position = {t.image_id: k for k, t in enumerate(truths)}
    names = sorted({records.patient_id(t) for t in truths})
    patient_index = {p: k for k, p in enumerate(names)}
    scored = np.array([position[int(i)] for i in froc.image_ids], np.int64)
    lesions = np.zeros([len(truths)], np.int64)
    lesions[scored] = froc.outcomes.lesions
    is_scored = np.zeros([len(truths)], bool)
    is_scored[scored] = True
    return FrocScores(np.array([patient_index[records.patient_id(t)] for t in truths], np.int64),
                      scored[froc.outcomes.image], froc.outcomes.scores,
                      froc.outcomes.false_positive, froc.outcomes.new_hits, lesions, is_scored)



def froc_bootstrap(scores: FrocScores, *, resamples: int, seed: int,
                   confidence: float = CONFIDENCE) -> Dict[str, Dict]:
    """`FROC_SUMMARY_METRICS` of `scores` with patient-bootstrap intervals, as `bootstrap`."""
    num = int(scores.patients.max()) + 1 if len(scores.patients) else 0

    @_vectorized
    def statistic(indices):
        return _froc(scores, _patient_counts(indices, num)[:, scores.patients])

    return _intervals(statistic, list(FROC_SUMMARY_METRICS), num,
                      group_values=_froc(scores, np.ones([1, len(scores.patients)]))[:, 0],
                      resamples=resamples, seed=seed, confidence=confidence)


def _intervals(statistic, names: Sequence[str], num_patients: int, group_values: np.ndarray, *,
               resamples: int, seed: int, confidence: float) -> Dict[str, Dict]:
    if num_patients < MIN_PATIENTS:
        logging.warning("%d patient(s): too few to resample, the figures have no interval",
                        num_patients)
        return {n: {"value": None if math.isnan(v) else float(v), "interval": None,
                    "method": None} for n, v in zip(names, group_values)}
    with warnings.catch_warnings():
        # Degenerate (constant) and NaN statistics are handled in `_estimate`.
        warnings.simplefilter("ignore")
        result = scipy.stats.bootstrap(
            (np.arange(num_patients),), statistic, n_resamples=resamples,
            confidence_level=confidence, vectorized=True, rng=np.random.default_rng(seed),
            batch=min(resamples, 256))
    distribution = np.atleast_2d(result.bootstrap_distribution)
    return {n: _estimate(group_values[k], distribution[k],
                         (np.atleast_1d(result.confidence_interval.low)[k],
                          np.atleast_1d(result.confidence_interval.high)[k]), confidence)
            for k, n in enumerate(names)}


def compare(a: Sequence[ImageScores], b: Sequence[ImageScores], *, resamples: int, seed: int,
            confidence: float = CONFIDENCE) -> Comparison:
    """Groups `a` and `b` (one model each, or several seeds each) on the same images.

    The difference b - a of the groups' mean metrics is bootstrapped over
    patients, every model scored on the same resample (a paired bootstrap).
    Its p-value is two-sided, by `scipy.stats.permutation_test`: each patient's
    images are scored with group a's or b's detections, swapped at random
    (the same swap for every model of a group), `resamples` times.
    """
    a, b = list(a), list(b)
    if len(a) != len(b) or not a:
        raise ValueError(f"compare needs as many models in a as in b, at least one "
                         f"({len(a)} and {len(b)})")
    first = _check_same_images([a, b])
    num = first.num_patients
    ones = np.ones([1, first.num_images])
    values_a = _mean_metrics(a, ones)[:, 0]
    values_b = _mean_metrics(b, ones)[:, 0]

    @_vectorized
    def difference(indices):
        weights = _patient_counts(indices, num)[:, first.patients]
        return _mean_metrics(b, weights) - _mean_metrics(a, weights)

    names = _metric_names(first)
    estimates = _intervals(difference, _metric_names(first), first.num_patients,
                           values_b - values_a, resamples=resamples,
                           seed=seed, confidence=confidence)
    p_values = (_permutation_p_values(a, b, first, resamples=resamples, seed=seed)
                if first.num_patients >= MIN_PATIENTS else [None] * len(names))
    for k, name in enumerate(names):
        estimates[name]["p_value"] = (None if estimates[name]["value"] is None
                                      or p_values[k] is None else float(p_values[k]))
    boot = dict(resamples=resamples, seed=seed, confidence=confidence)
    return Comparison(bootstrap(a, **boot), bootstrap(b, **boot), estimates)


def _joined(first: ImageScores, second: ImageScores) -> ImageScores:
    """One set of 2I images: `first`'s, then `second`'s, each patient of `second` shifted
    by the number of patients, the pooled detections merged in score order."""
    shift_p, shift_i = first.num_patients, first.num_images

    def merge(image_a, image_b, scores_a, scores_b, *columns):
        order = np.argsort(-np.concatenate([scores_a, scores_b]), kind="stable")
        joined = [np.concatenate([image_a, image_b + shift_i]),
                  np.concatenate([scores_a, scores_b])]
        joined += [np.concatenate(pair) for pair in columns]
        return [c[order] for c in joined]

    f_image, f_scores, f_fp, f_hits = merge(
        first.froc_image, second.froc_image, first.froc_scores, second.froc_scores,
        (first.froc_false_positive, second.froc_false_positive),
        (first.froc_new_hits, second.froc_new_hits))

    def both(x, y):
        return np.concatenate([x, y], axis=-1)

    # pycocotools pools in image order: kept (`_ap50` sorts by score itself).
    return ImageScores(
        file_names=both(first.file_names, second.file_names),
        patients=both(first.patients, second.patients + shift_p),
        top1_correct=both(first.top1_correct, second.top1_correct),
        top1_iou=both(first.top1_iou, second.top1_iou),
        category_names=first.category_names,
        category_member=both(first.category_member, second.category_member),
        category_correct=both(first.category_correct, second.category_correct),
        froc_image=f_image, froc_scores=f_scores, froc_false_positive=f_fp,
        froc_new_hits=f_hits, froc_lesions=both(first.froc_lesions, second.froc_lesions),
        froc_scored=both(first.froc_scored, second.froc_scored),
        coco_image=both(first.coco_image, second.coco_image + shift_i),
        coco_scores=both(first.coco_scores, second.coco_scores),
        coco_true_positive=both(first.coco_true_positive, second.coco_true_positive),
        coco_positives=both(first.coco_positives, second.coco_positives))


def _permutation_p_values(a: Sequence[ImageScores], b: Sequence[ImageScores],
                          first: ImageScores, *, resamples: int, seed: int) -> np.ndarray:
    """`[M]` two-sided p-values of the paired difference, patients swapped between groups."""
    num = first.num_patients
    joined = [_joined(x, y) for x, y in zip(a, b)]  # patients 0..num-1 of a, num.. of b

    @functools.partial(_vectorized, metrics_last=True)
    def difference(x, y):
        # x, y: [B, num] the pseudo-patients scored as group a and as group b.
        wx = _patient_counts(x, 2 * num)[:, joined[0].patients]
        wy = _patient_counts(y, 2 * num)[:, joined[0].patients]
        return _mean_metrics(joined, wy) - _mean_metrics(joined, wx)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scipy.stats.permutation_test(
            (np.arange(num), np.arange(num) + num), difference, permutation_type="samples",
            vectorized=True, n_resamples=resamples, alternative="two-sided",
            rng=np.random.default_rng(seed + 1), batch=min(resamples, 256))
    return np.atleast_1d(result.pvalue)


def seed_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> Optional[Dict]:
    """Student's t interval of the mean of per-seed differences (training runs as the unit).

    The patient bootstrap of `compare` holds the seeds fixed: it says how sure the
    figure is for these training runs, not for the next one. Each seed's paired
    difference on the same images is one draw of the training's randomness; their
    t interval (`scipy.stats.ttest_1samp`) says how sure the mean is over runs.
    None for fewer than two seeds.
    """
    values = np.asarray([d for d in differences if d is not None], np.float64)
    if len(values) < 2:
        return None
    if np.all(values == values[0]):
        return {"value": float(values[0]), "interval": [float(values[0])] * 2,
                "sd": 0.0, "p_value": 1.0 if values[0] == 0 else None}
    test = scipy.stats.ttest_1samp(values, 0.0)
    interval = test.confidence_interval(confidence_level=confidence)
    return {"value": float(values.mean()), "interval": [float(interval.low), float(interval.high)],
            "sd": float(values.std(ddof=1)), "p_value": float(test.pvalue)}


def pooled_verdict(patients: Mapping, seeds: Optional[Mapping], b_better: str,
                   a_better: str) -> str:
    """A winner only when the patient interval and the seed interval agree on its side."""
    first = verdict_words(patients, b_better, a_better)
    if seeds is None:
        return first
    return first if verdict_words(seeds, b_better, a_better) == first else \
        "undecided at this size"


def verdict_words(difference: Mapping, b_better: str, a_better: str,
                  confidence: float = CONFIDENCE) -> str:
    """`b_better`, `a_better` or "undecided at this size", for the difference b - a.

    A winner needs the interval to exclude 0 and, where the difference has a
    `p_value`, the permutation test to agree (p < 1 - confidence): with few
    patients a bootstrap interval can be too short (it resamples only the
    patients there are), and the two can disagree near the edge.
    """
    if difference.get("interval") is None:
        return "undecided at this size"
    p_value = difference.get("p_value")
    if p_value is not None and p_value >= 1.0 - confidence:
        return "undecided at this size"
    low, high = difference["interval"]
    if low > 0:
        return b_better
    if high < 0:
        return a_better
    return "undecided at this size"


def as_percent(estimate: Optional[Mapping], signed: bool = False) -> str:
    """`83.3 [72.9, 91.7]` (percentage points), `-` without a value."""
    if not estimate or estimate.get("value") is None:
        return "-"
    sign = "+" if signed else ""
    value = f"{100.0 * estimate['value']:{sign}.1f}"
    if estimate.get("interval") is None:
        return value
    low, high = estimate["interval"]
    return f"{value} [{100.0 * low:{sign}.1f}, {100.0 * high:{sign}.1f}]"
