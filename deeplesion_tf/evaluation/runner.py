"""Evaluation end to end: detections of a split -> metrics, COCO files, figures, report.

The core takes detections as `records.ImageDetections` in original pixels,
whatever made them. `predict_split` makes them with any *predictor*: a
function from network inputs `images` `[B, S, S, C]` (in [0, 1], as
`detector_pipeline.make_detector_dataset` makes them) to a dict of `boxes`
`[B, D, 4]` (network-input pixels), `scores` `[B, D]`, `classes` `[B, D]` and
`num_detections` `[B]`, as `FasterRCNN.__call__` returns (`keras_predictor`).

Outputs of `write_outputs` in `output_dir`:
  metrics.json       the numbers (see `evaluate`)
  curves.json        the FROC and precision-recall curves
  groundtruth.json   COCO ground truth (`coco_format`)
  detections.json    COCO results
  image_scores.npz   the per-image outcomes the intervals resample (`intervals`)
  accuracy_by_iou.png, precision_recall.png, froc.png (95% intervals where
                     there are), detections/<image_id>.png
  report.md
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.evaluation import accuracy
from deeplesion_tf.evaluation import categories as categories_lib
from deeplesion_tf.evaluation import coco_format
from deeplesion_tf.evaluation import figures
from deeplesion_tf.evaluation import froc as froc_lib
from deeplesion_tf.evaluation import froc_groups
from deeplesion_tf.evaluation import intervals
from deeplesion_tf.evaluation import matching
from deeplesion_tf.evaluation import records
from deeplesion_tf.evaluation import report as report_lib
from deeplesion_tf.evaluation import unbookmarked as unbookmarked_lib

Predictor = Callable[[tf.Tensor], Mapping[str, object]]
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.json"
GROUNDTRUTH_FILE = "groundtruth.json"
DETECTIONS_FILE = "detections.json"
REPORT_FILE = "report.md"
COMPARISON_FILE = "comparison.json"
# The figures of `write_outputs` and `write_comparison`, relative to the report.
FIGURES = {"accuracy_by_iou": "accuracy_by_iou.png", "precision_recall": "precision_recall.png",
           "precision_recall_by_category": "precision_recall_by_category.png",
           "froc": "froc.png"}


def keras_predictor(model: tf.keras.Model) -> Predictor:
    """A predictor of a `FasterRCNN` (inference mode, one traced graph per batch shape)."""
    return tf.function(lambda images: model(images, training=False), reduce_retracing=True)


class Predictions(NamedTuple):
    """Detections of a split and how long the predictor took.

    Attributes:
      detections: one entry per image, in original pixels.
      latency_ms_per_image: predictor time per image, without the first batch
        (tracing) unless it is the only one; None for no images.
    """

    detections: List[records.ImageDetections]
    latency_ms_per_image: Optional[float]


def predict_split(predict: Predictor, ds: tf.data.Dataset,
                  truths: Sequence[records.ImageTruth], *, image_size: int,
                  windows: Sequence[Sequence[float]], batch_size: int,
                  pixel_spacing_mm: Optional[float] = None,
                  slice_interval_mm: Optional[float] = None,
                  num_context_images: int = 1) -> Predictions:
    """Runs `predict` over `ds` (from `tfds_deeplesion.splits.load_split`) in its stored order.

    Boxes go back to original pixels (`detector_pipeline.boxes_to_original`)
    and are clipped to the slice.

    Raises:
      ValueError: the examples are not those of `truths` (another split or order).
    """
    batches = detector_pipeline.make_detector_dataset(
        ds, training=False, batch_size=batch_size, image_size=image_size, windows=windows,
        deterministic=True, pixel_spacing_mm=pixel_spacing_mm,
        slice_interval_mm=slice_interval_mm, num_context_images=num_context_images)
    detections: List[records.ImageDetections] = []
    timings = []
    for batch in tqdm(batches, desc="Detecting", unit=" batches"):
        start = time.perf_counter()
        out = {k: np.asarray(v) for k, v in predict(batch["images"]).items()}
        timings.append((time.perf_counter() - start, len(out["num_detections"])))
        scale = batch["image_scale"].numpy()
        size = batch["original_size"].numpy()
        lesion_ids = batch["lesion_ids"].numpy()
        for b in range(len(scale)):
            image_id = len(detections) + 1
            truth = truths[image_id - 1] if image_id <= len(truths) else None
            ids = tuple(i.decode() for i in lesion_ids[b] if i)
            if truth is None or ids != truth.lesion_ids:
                raise ValueError(f"example {image_id} holds lesions {ids}, the ground truth "
                                 f"{truth.lesion_ids if truth else 'nothing'}")
            n = int(out["num_detections"][b])
            boxes = detector_pipeline.boxes_to_original(
                tf.constant(out["boxes"][b, :n], tf.float32), float(scale[b])).numpy()
            limits = np.array([size[b, 0] - 1, size[b, 1] - 1] * 2, np.float64)
            detections.append(records.ImageDetections(
                image_id, np.clip(boxes.astype(np.float64), 0.0, limits),
                out["scores"][b, :n].astype(np.float64), out["classes"][b, :n].astype(np.int64)))
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} examples detected, {len(truths)} in the ground truth")
    timed = timings[1:] if len(timings) > 1 else timings
    images = sum(n for _, n in timed)
    latency = 1000.0 * sum(t for t, _ in timed) / images if images else None
    return Predictions(detections, latency)


class EvalSettings(NamedTuple):
    """How detections are scored.

    Attributes:
      dataset, split: what was evaluated (recorded only).
      box_padding_px: padding of the lesion boxes for accuracy, AP and the
        figures, in original pixels; also the padding the detections carry
        (the detector's training padding).
      froc_box_padding_px: padding of the lesion boxes of the FROC (5: the
        release's `Bounding_boxes`, as the NIH script); detections are
        re-padded to it (`records.change_padding`).
      iou_convention: `matching.CONTINUOUS` (default) or `INCLUSIVE_PIXELS`.
      categories: the source of Table 1's rows (`categories.SOURCES`).
      bootstrap_resamples: resamples of the patient bootstrap of the 95%
        intervals (`intervals`); 0 leaves the intervals out.
      bootstrap_seed: its seed.
    """

    dataset: str
    split: str
    box_padding_px: float
    froc_box_padding_px: float = 5.0
    iou_convention: str = matching.CONTINUOUS
    categories: str = "none"
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0


class Evaluation(NamedTuple):
    metrics: Dict[str, object]
    curves: Dict[str, object]
    groundtruth: Dict[str, object]
    results: List[Dict[str, object]]
    image_scores: intervals.ImageScores


def evaluate(truths: Sequence[records.ImageTruth],
             detections: Sequence[records.ImageDetections], settings: EvalSettings, *,
             categories: Optional[categories_lib.Categories] = None,
             class_names: Sequence[str] = (),
             unbookmarked: Optional[Mapping[int, np.ndarray]] = None,
             latency_ms_per_image: Optional[float] = None) -> Evaluation:
    """Every metric of `detections` against `truths`.

    Returns:
      An `Evaluation` whose `metrics` hold `detection_accuracy`,
      `accuracy_by_iou`, `per_category` (Table 1 rows; one `overall` row when
      `categories` is None), `froc`, `froc_by_group` (`froc_groups.froc_by_group`: by
      lesion size and by the categories' rows), `ap50`, `num_images`, `num_lesions`,
      `num_noisy_lesions`, `num_detections`, `num_patients`,
      `latency_ms_per_image`, `unbookmarked` (None without synthetic truth),
      `settings`, and `intervals`: `{metric: {"value", "interval", "method"}}`
      by patient bootstrap (`intervals.bootstrap`; None when
      `settings.bootstrap_resamples` is 0), whose `category/<name>` entries
      also stand in their `per_category` rows as `interval`.
    """
    if categories is None:
        categories = categories_lib.Categories("none", (), {})
    ious = accuracy.top1_ious(truths, detections, box_padding_px=settings.box_padding_px,
                              iou_convention=settings.iou_convention)
    froc = froc_lib.official_froc(truths, detections, gt_padding=settings.froc_box_padding_px,
                                  detection_padding=settings.box_padding_px,
                                  iou_convention=settings.iou_convention)
    groundtruth = coco_format.groundtruth_dict(
        truths, box_padding_px=settings.box_padding_px, iou_convention=settings.iou_convention,
        categories=categories if categories.rows else None)
    results = coco_format.results_list(detections, iou_convention=settings.iou_convention,
                                       class_names=class_names)
    coco = coco_format.coco_ap50(groundtruth, results)
    metrics = {
        "detection_accuracy": accuracy.detection_accuracy(ious),
        "accuracy_by_iou": accuracy.accuracy_by_iou(ious),
        "per_category": accuracy.per_category_accuracy(truths, ious, categories),
        "froc": froc.as_dict(),
        "ap50": coco.ap50,
        "num_images": len(truths),
        "num_lesions": int(sum(len(t.lesion_ids) for t in truths)),
        "num_noisy_lesions": int(sum(np.sum(t.noisy) for t in truths)),
        "num_detections": len(results),
        "num_patients": len({records.patient_id(t) for t in truths}),
        "latency_ms_per_image": latency_ms_per_image,
        "unbookmarked": None,
        "settings": dict(settings._asdict()),
    }
    if unbookmarked is not None:
        metrics["unbookmarked"] = unbookmarked_lib.unbookmarked_metrics(
            truths, detections, unbookmarked, box_padding_px=settings.box_padding_px,
            iou_convention=settings.iou_convention)
    # By size and by type (the NIH papers' tables), each group with its own intervals.
    metrics["froc_by_group"] = froc_groups.froc_by_group(
        truths, detections, categories, gt_padding=settings.froc_box_padding_px,
        detection_padding=settings.box_padding_px, iou_convention=settings.iou_convention,
        resamples=settings.bootstrap_resamples, seed=settings.bootstrap_seed)
    # The groups' precision-recall curves go with the curves, not the metrics.
    by_category = {}
    for kind, groups in metrics["froc_by_group"].items():
        for name, group in groups.items():
            if group is not None:
                curve = group.pop("curve")
                if kind == "type":
                    by_category[name] = curve
    scores = intervals.image_scores(truths, ious, categories, froc, coco)
    metrics["intervals"] = None
    if settings.bootstrap_resamples:
        estimates = intervals.bootstrap([scores], resamples=settings.bootstrap_resamples,
                                        seed=settings.bootstrap_seed)
        metrics["intervals"] = estimates
        for row in metrics["per_category"]:
            if row["cluster"] is not None:
                row["interval"] = estimates[intervals.category_metric(row["name"])]["interval"]
            else:
                row["interval"] = estimates["detection_accuracy"]["interval"]
    curves = {"froc": {"fps_per_image": froc.curve.fps_per_image.tolist(),
                       "sensitivity": froc.curve.sensitivity.tolist()},
              "precision_recall": {"recall": coco.recall.tolist(),
                                   "precision": coco.precision.tolist()},
              "precision_recall_by_category": by_category}
    logging.info("Accuracy %.4f, AP@0.5 %.4f, FROC %s on %d images",
                 metrics["detection_accuracy"], coco.ap50,
                 metrics["froc"]["sensitivity_at_fp"], len(truths))
    return Evaluation(metrics, curves, groundtruth, results, scores)


def _write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=1)


def write_outputs(output_dir: str, evaluation: Evaluation, *, model_name: str,
                  truths: Sequence[records.ImageTruth],
                  detections: Sequence[records.ImageDetections],
                  slices: Mapping[int, np.ndarray], class_names: Sequence[str],
                  window: Sequence[float], figure_score_threshold: float = 0.5) -> None:
    """Writes the files of the module docstring; detection images for `slices`."""
    os.makedirs(output_dir, exist_ok=True)
    _write_json(os.path.join(output_dir, METRICS_FILE), evaluation.metrics)
    _write_json(os.path.join(output_dir, CURVES_FILE), evaluation.curves)
    _write_json(os.path.join(output_dir, GROUNDTRUTH_FILE), evaluation.groundtruth)
    _write_json(os.path.join(output_dir, DETECTIONS_FILE), evaluation.results)
    intervals.save_image_scores(os.path.join(output_dir, intervals.SCORES_FILE),
                                evaluation.image_scores)
    _plot_curves(output_dir, [model_name], [evaluation.metrics], [evaluation.curves])
    qualitative = draw_qualitative(output_dir, truths, detections, slices, class_names, window,
                                   evaluation.metrics["settings"]["box_padding_px"],
                                   figure_score_threshold)
    text = report_lib.render([(model_name, evaluation.metrics)], _drawn(output_dir), qualitative)
    with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
        f.write(text)
    logging.info("Wrote the evaluation to %s", output_dir)


def _drawn(output_dir: str) -> Dict[str, str]:
    """`FIGURES` that are in `output_dir` (the per-category one needs categories)."""
    return {k: v for k, v in FIGURES.items() if os.path.exists(os.path.join(output_dir, v))}


def _plot_curves(output_dir: str, names: Sequence[str], runs: Sequence[Mapping],
                 curves: Sequence[Mapping]) -> None:
    """`FIGURES` of one model or several, with their 95% intervals where the metrics have them."""
    bands, points = {}, {}
    for name, m in zip(names, runs):
        estimates = m.get("intervals") or {}
        iou = [estimates.get(k, {}).get("interval") for k in intervals.ACCURACY_BY_IOU_METRICS]
        if iou and all(iou):
            bands[name] = ([v[0] for v in iou], [v[1] for v in iou])
        froc = [estimates.get(k, {}).get("interval") for k in intervals.FROC_METRICS]
        if froc and all(froc):
            points[name] = (froc_lib.FP_RATES, list(m["froc"]["sensitivity_at_fp"].values()),
                            ([v[0] for v in froc], [v[1] for v in froc]))
    figures.plot_accuracy_by_iou({n: m["accuracy_by_iou"] for n, m in zip(names, runs)},
                                 os.path.join(output_dir, FIGURES["accuracy_by_iou"]), bands)
    figures.plot_precision_recall(
        {n: (c["precision_recall"]["recall"], c["precision_recall"]["precision"])
         for n, c in zip(names, curves)}, os.path.join(output_dir, FIGURES["precision_recall"]))
    figures.plot_froc({n: (c["froc"]["fps_per_image"], c["froc"]["sensitivity"])
                       for n, c in zip(names, curves)},
                      os.path.join(output_dir, FIGURES["froc"]), points)
    by_category = {n: c.get("precision_recall_by_category") or {} for n, c in zip(names, curves)}
    if any(by_category.values()):
        figures.plot_precision_recall_by_category(
            by_category, os.path.join(output_dir, FIGURES["precision_recall_by_category"]))


def draw_qualitative(output_dir: str, truths: Sequence[records.ImageTruth],
                     detections: Sequence[records.ImageDetections],
                     slices: Mapping[int, np.ndarray], class_names: Sequence[str],
                     window: Sequence[float], box_padding_px: float,
                     score_threshold: float) -> List[str]:
    """`detections/<image_id>.png` for each slice; their paths relative to `output_dir`."""
    if not slices:
        return []
    os.makedirs(os.path.join(output_dir, "detections"), exist_ok=True)
    dets = accuracy.by_image(detections)
    low, high = float(window[0]), float(window[1])
    paths = []
    for truth in truths:
        if truth.image_id not in slices:
            continue
        d = dets.get(truth.image_id, records.empty_detections(truth.image_id))
        windowed = np.clip((slices[truth.image_id] - low) / (high - low), 0.0, 1.0)
        path = os.path.join("detections", f"{truth.image_id:05d}.png")
        figures.draw_detections(windowed, records.truth_boxes(truth, box_padding_px), d.boxes,
                                d.scores, d.classes, class_names,
                                os.path.join(output_dir, path), score_threshold=score_threshold,
                                title=truth.file_name)
        paths.append(path)
    return paths


def write_comparison(eval_dirs: Sequence[str], names: Sequence[str], output_dir: str, *,
                     resamples: int = 2000, seed: int = 0) -> str:
    """`report.md`, `comparison.json` and figures comparing earlier evaluations (Table 1).

    Each model after the first is compared with the first on the same images:
    the paired difference of every metric with its patient-bootstrap interval
    and permutation p-value (`intervals.compare`, `resamples` each).
    `comparison.json` holds `{"names", "models": [{metric: estimate}],
    "differences": [{metric: estimate with p_value}]}` (model k minus model 0;
    `differences[k - 1]`).

    Returns:
      The report's path.

    Raises:
      ValueError: the evaluations differ in split, images or category rows.
    """
    if len(eval_dirs) != len(names):
        raise ValueError("one name per evaluation directory")
    runs, curves = [], []
    for directory in eval_dirs:
        with open(os.path.join(directory, METRICS_FILE)) as f:
            runs.append(json.load(f))
        with open(os.path.join(directory, CURVES_FILE)) as f:
            curves.append(json.load(f))
    first = runs[0]
    for directory, m in zip(eval_dirs[1:], runs[1:]):
        for key in ("dataset", "split", "categories"):
            if m["settings"][key] != first["settings"][key]:
                raise ValueError(f"{directory}: {key} {m['settings'][key]!r} differs from "
                                 f"{first['settings'][key]!r}")
        if ([r["name"] for r in m["per_category"]] != [r["name"] for r in first["per_category"]]
                or m["num_images"] != first["num_images"]):
            raise ValueError(f"{directory}: other images or category rows than {eval_dirs[0]}")
    os.makedirs(output_dir, exist_ok=True)
    _plot_curves(output_dir, names, runs, curves)
    scores = [intervals.load_image_scores(d) for d in eval_dirs]
    comparisons = [intervals.compare([scores[0]], [other], resamples=resamples, seed=seed)
                   for other in scores[1:]]
    comparison = {"names": list(names), "reference": names[0],
                  "models": ([comparisons[0].a] if comparisons else []) +
                            [c.b for c in comparisons],
                  "differences": [c.difference for c in comparisons],
                  "resamples": resamples, "seed": seed}
    _write_json(os.path.join(output_dir, COMPARISON_FILE), comparison)
    text = report_lib.render(list(zip(names, runs)), _drawn(output_dir), comparison=comparison)
    path = os.path.join(output_dir, REPORT_FILE)
    with open(path, "w") as f:
        f.write(text)
    return path
