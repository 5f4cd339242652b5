#!/usr/bin/env python3
"""Detections per blank slice: what the exported detector says where there is nothing to see.

    python benchmarks/bench_blank_slices.py \
        --model_dirs=/work/bench_out/detector_multi_seed0,/work/bench_out/detector_single_seed0 \
        [--work_dir=DIR] [--size=512] [--variants=without,with] [--output_json=PATH] \
        [--data_dir=TFDS_DATA_DIR --dataset=deeplesion/synthetic_benchmark --split=test \
         --num_reference=64]

Every model dir (written by `bin/train_detector`) is exported as bin/export_detector
does (`DetectorModule` of the model dir at its own score threshold, the one
`model_config.json` holds) into `--work_dir`, once per variant of the module's
rule that drops boxes holding a single value (`DetectorModule(drop_empty_boxes=...)`:
`without` it and `with` it), loaded with `tf.saved_model.load`, and its
`serving_default` signature is run on `--size` square slices (the previous,
key and next slice all the same):
  * `air`: uniform -1000 HU;
  * `water`: uniform 0 HU;
  * `soft tissue`: uniform 40 HU;
  * `water + noise`: 0 HU plus Gaussian noise of `--noise_hu` (a water phantom
    as a scanner shows it: blank, but not uniform, so out of the rule's reach);
  * `disc` (not blank): a disc of 40 HU in air (`export.warmup_slice`), a body
    without lesions.
Reported per model and input: the number of detections and the highest score;
then per group of models (the model dir's name without `_seed<N>`) and pooled
over all, the mean over models with a Student's t 95% interval over models
(`scipy.stats.t`; the models are the unit, each input is one deterministic
slice). The headline, "detections per blank slice", is the mean over the three
uniform blanks. With `--num_reference` > 0, also the first slices of `--split`
of `--dataset`: detections, false positives (no lesion box at IoU >= 0.5) per
slice and the lesions found, per variant and paired (with - without) per model,
so that a rule that removes blank-slice boxes is seen not to remove lesions.
"""

import json
import os
import platform
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

_MODEL_DIRS = flags.DEFINE_list("model_dirs", None, "Model dirs of bin/train_detector.",
                                required=True)
_WORK_DIR = flags.DEFINE_string("work_dir", None,
                                "Where the exports go (default: a temporary folder).")
_SIZE = flags.DEFINE_integer("size", 512, "Side of the square slices, pixels.")
_NOISE_HU = flags.DEFINE_float("noise_hu", 10.0, "Standard deviation of `water + noise`.")
_VARIANTS = flags.DEFINE_list("variants", ["without", "with"],
                              "Exports without and/or with the rule dropping boxes of one value.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir of the reference slices.")
_DATASET = flags.DEFINE_string("dataset", "deeplesion/synthetic_benchmark", "Reference dataset.")
_SPLIT = flags.DEFINE_string("split", "test", "Reference split.")
_NUM_REFERENCE = flags.DEFINE_integer("num_reference", 0,
                                      "Reference slices with lesions (0: none).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the figures here.")

BLANK = ("air", "water", "soft tissue")
INPUTS = BLANK + ("water + noise", "disc")
VARIANTS = {"without": False, "with": True}  # name -> drop_empty_boxes
CONFIDENCE = 0.95
MATCH_IOU = 0.5
_REFERENCE_BATCH = 8


def reference_slices(data_dir: str, dataset: str, split: str, count: int):
    """The first `count` examples of a split: `([N, H, W, 3]` HU, [`[M, 4]` lesion boxes px])."""
    import tensorflow_datasets as tfds

    import tfds_deeplesion  # noqa: F401  Registers `deeplesion`.
    from deeplesion_tf.data import detector_pipeline
    from deeplesion_tf.data.release_format import HU_OFFSET

    hus, boxes = [], []
    for example in tfds.as_numpy(tfds.load(dataset, split=f"{split}[:{count}]",
                                           data_dir=data_dir)):
        stored = np.concatenate([example[k] for k in detector_pipeline.SLICE_KEYS], axis=-1)
        hus.append(stored.astype(np.float32) - HU_OFFSET)
        height, width = stored.shape[:2]
        boxes.append(example["lesions"]["bbox"] * np.array([height, width] * 2))  # REL_YXYX
    return np.stack(hus), boxes


def _iou(a, b):
    """`[N, 4]` x `[M, 4]` IoU of `[ymin, xmin, ymax, xmax]` boxes."""
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def reference_figures(served, hus, lesion_boxes):
    """Detections and false positives per slice, lesions found / lesions, on reference slices."""
    import tensorflow as tf

    detections = false_positives = found = 0
    for start in range(0, len(hus), _REFERENCE_BATCH):
        out = served(images=tf.constant(hus[start:start + _REFERENCE_BATCH]))
        for i, n in enumerate(out["num_detections"].numpy()):
            boxes = out["detection_boxes"][i, :n].numpy()
            truth = lesion_boxes[start + i]
            iou = _iou(boxes, truth) if len(truth) and n else np.zeros([n, len(truth)])
            detections += n
            false_positives += int(np.sum(~np.any(iou >= MATCH_IOU, axis=1)))
            found += int(np.sum(np.any(iou >= MATCH_IOU, axis=0)))
    lesions = sum(len(b) for b in lesion_boxes)
    return {"detections": detections / len(hus), "false_positives": false_positives / len(hus),
            "sensitivity": found / max(lesions, 1), "lesions": lesions, "slices": len(hus)}


def make_inputs(size: int, noise_hu: float, seed: int = 0):
    """{name: `[1, size, size, 3]` float32 HU}, the inputs of the module docstring."""
    from deeplesion_tf.serving import export

    rng = np.random.default_rng(seed)
    slices = {"air": np.full([size, size], -1000.0), "water": np.zeros([size, size]),
              "soft tissue": np.full([size, size], 40.0),
              "water + noise": rng.normal(0.0, noise_hu, [size, size]),
              "disc": export.warmup_slice(size)}
    return {name: np.repeat(hu.astype(np.float32)[None, :, :, None], 3, axis=-1)
            for name, hu in slices.items()}


def t_interval(values, confidence: float = CONFIDENCE):
    """`(mean, low, high)`: Student's t interval of the mean of `values` (None for one value)."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None, None
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, len(values) - 1)
                 * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def group_of(model_dir: str) -> str:
    return re.sub(r"_?seed\d+$", "", os.path.basename(os.path.normpath(model_dir))) or "models"


def measure(model_dir: str, work_dir: str, inputs, drop_empty_boxes: bool = True,
            reference=None, saved_model: bool = True):
    """Figures of one model exported with or without the empty-box rule (module docstring).

    With `saved_model=False` the module's `detect_hu` (the graph `serving_default`
    saves) runs in Python instead, without the export's tracing of every signature.
    """
    import tensorflow as tf

    from deeplesion_tf.detection import model_dir as model_dir_lib
    from deeplesion_tf.serving import detector_module
    from deeplesion_tf.serving import export

    loaded = model_dir_lib.load_model(model_dir)
    module = detector_module.DetectorModule(
        loaded.model, loaded.class_names, image_size=loaded.inputs.image_size,
        windows=loaded.inputs.windows, box_padding_px=loaded.inputs.box_padding_px,
        drop_empty_boxes=drop_empty_boxes)
    variant = "with" if drop_empty_boxes else "without"
    name = f"{os.path.basename(os.path.normpath(model_dir))}_{variant}"
    if saved_model:
        path = export.export_module(module, os.path.join(work_dir, name),
                                    export.checkpoint_step(loaded.checkpoint), overwrite=True,
                                    write_warmup=False)
        served = tf.saved_model.load(path).signatures[detector_module.SERVING_DEFAULT]
    else:
        def served(images):
            return module.detect_hu(images)
    result = {"score_threshold": float(loaded.model.detection_generator.score_threshold),
              "checkpoint": loaded.checkpoint, "inputs": {}}
    for name, hu in inputs.items():
        out = served(images=tf.constant(hu))
        n = int(out["num_detections"][0])
        scores = out["detection_scores"][0, :n].numpy()
        result["inputs"][name] = {
            "detections": n, "max_score": float(scores.max()) if n else 0.0,
            "scores": [round(float(s), 4) for s in scores],
            "boxes": [[round(float(v), 1) for v in box]
                      for box in out["detection_boxes"][0, :n].numpy()]}
    if reference is not None:
        result["reference"] = reference_figures(served, *reference)
    return result


def _cell(values, digits=2):
    mean, low, high = t_interval(values)
    if low is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summarise(per_model):
    """Groups and the pool: mean over models with t intervals, per input and over the blanks."""
    groups = {}
    for model_dir in per_model:
        groups.setdefault(group_of(model_dir), []).append(model_dir)
    groups["pooled"] = list(per_model)
    summary = {}
    for group, members in groups.items():
        rows = {}
        for name in INPUTS + ("blank (mean of the uniform three)",):
            names = BLANK if name.startswith("blank") else (name,)
            detections = [np.mean([per_model[m]["inputs"][k]["detections"] for k in names])
                          for m in members]
            max_scores = [max(per_model[m]["inputs"][k]["max_score"] for k in names)
                          for m in members]
            rows[name] = {"detections": t_interval(detections), "max_score": t_interval(max_scores),
                          "detections_cell": _cell(detections), "max_score_cell": _cell(max_scores),
                          "models": len(members)}
        summary[group] = rows
    return summary


REFERENCE = ("detections", "false_positives", "sensitivity")


def paired_markdown(results) -> str:
    """Per input, with - without the rule per model: mean and t interval over models."""
    lines = ["| models | input | detections per slice, with - without |", "|---|---|---|"]
    groups = {}
    for model_dir in results["without"]:
        groups.setdefault(group_of(model_dir), []).append(model_dir)
    groups["pooled"] = list(results["without"])
    for group, members in groups.items():
        for name in INPUTS + ("blank (mean of the uniform three)",):
            names = BLANK if name.startswith("blank") else (name,)
            differences = [np.mean([results["with"][m]["inputs"][k]["detections"]
                                    - results["without"][m]["inputs"][k]["detections"]
                                    for k in names]) for m in members]
            lines.append(f"| {group} ({len(members)}) | {name} | {_cell(differences)} |")
    return "\n".join(lines)


def reference_summary(results):
    """{variant or "with - without": {group: {figure: (mean, low, high)}}} on the reference."""
    if not all("reference" in r for by_model in results.values() for r in by_model.values()):
        return {}
    out = {}
    pairs = {"with - without": ("with", "without")} if {"with", "without"} <= set(results) else {}
    for label in list(results) + list(pairs):
        first = results[pairs[label][0]] if label in pairs else results[label]
        groups = {}
        for model_dir in first:
            groups.setdefault(group_of(model_dir), []).append(model_dir)
        groups["pooled"] = list(first)
        out[label] = {}
        for group, members in groups.items():
            out[label][group] = {}
            for figure in REFERENCE:
                values = [first[m]["reference"][figure] for m in members]
                if label in pairs:
                    values = [v - results[pairs[label][1]][m]["reference"][figure]
                              for v, m in zip(values, members)]
                out[label][group][figure] = {"interval": t_interval(values),
                                             "cell": _cell(values, 3)}
    return out


def markdown(per_model, summary) -> str:
    lines = ["| model | threshold | " + " | ".join(INPUTS) + " |",
             "|---|---|" + "---|" * len(INPUTS)]
    for model_dir, result in per_model.items():
        cells = [f"{r['detections']} ({r['max_score']:.2f})"
                 for r in (result["inputs"][k] for k in INPUTS)]
        lines.append(f"| {os.path.basename(model_dir)} | {result['score_threshold']:g} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Mean over models [Student's t 95% interval over models]: detections per "
              "slice; highest score.", "",
              "| models | input | detections per slice | highest score |", "|---|---|---|---|"]
    for group, rows in summary.items():
        for name, row in rows.items():
            lines.append(f"| {group} ({row['models']}) | {name} | {row['detections_cell']} | "
                         f"{row['max_score_cell']} |")
    return "\n".join(lines)


def reference_markdown(reference) -> str:
    lines = ["| variant | models | detections per slice | false positives per slice | "
             "sensitivity (IoU >= 0.5) |", "|---|---|---|---|---|"]
    for label, groups in reference.items():
        for group, figures in groups.items():
            lines.append(f"| {label} | {group} | " + " | ".join(
                figures[f]["cell"] for f in REFERENCE) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    unknown = set(_VARIANTS.value) - set(VARIANTS)
    if unknown or not _VARIANTS.value:
        raise app.UsageError(f"--variants: from {', '.join(VARIANTS)}; got {_VARIANTS.value}")
    if _NUM_REFERENCE.value and not _DATA_DIR.value:
        raise app.UsageError("--num_reference needs --data_dir")
    started = time.time()
    inputs = make_inputs(_SIZE.value, _NOISE_HU.value)
    reference = None
    if _NUM_REFERENCE.value:
        reference = reference_slices(_DATA_DIR.value, _DATASET.value, _SPLIT.value,
                                     _NUM_REFERENCE.value)
    work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="bench_blank_")
    results = {}
    for variant in _VARIANTS.value:
        results[variant] = {}
        for model_dir in _MODEL_DIRS.value:
            result = measure(model_dir, work_dir, inputs, VARIANTS[variant], reference)
            results[variant][model_dir] = result
            blank = np.mean([result["inputs"][k]["detections"] for k in BLANK])
            print(f"{variant} rule, {model_dir}: {blank:.2f} detections per uniform blank slice",
                  file=sys.stderr, flush=True)
    summaries = {variant: summarise(per_model) for variant, per_model in results.items()}
    references = reference_summary(results)
    print(f"{platform.machine()}, {os.cpu_count()} cores; {_SIZE.value}x{_SIZE.value} slices; "
          f"{time.time() - started:.0f} s")
    for variant, per_model in results.items():
        print(f"\n### {variant} the empty-box rule\n")
        print(markdown(per_model, summaries[variant]))
    if {"with", "without"} <= set(results):
        print("\n### Paired: with - without the rule, same models and slices\n")
        print(paired_markdown(results))
    if references:
        print(f"\n### Reference: the first {_NUM_REFERENCE.value} slices of {_DATASET.value} "
              f"{_SPLIT.value}\n")
        print(reference_markdown(references))
    if _OUTPUT_JSON.value:
        with open(_OUTPUT_JSON.value, "w") as f:
            json.dump({"results": results, "summary": summaries, "reference": references,
                       "size": _SIZE.value, "noise_hu": _NOISE_HU.value}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
