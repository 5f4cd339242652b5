"""bin/evaluate_detector end to end on a tiny detector trained on the dummy PACS.

The model's own detections (`detections.json`) scored again through
`--detections` must give the same metrics; the files hold the split's boxes;
the report shows the numbers; and two evaluations compare side by side (Table 1).
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from deeplesion_tf.data import png16
from deeplesion_tf.evaluation import runner
from tests.conftest import REPO_ROOT
from tests.test_train_detector import TINY_FLAGS
from tfds_deeplesion import splits

# Slow tier (trains and evaluates through the binaries): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

SPLIT = "test"
TRUTH_CSV = REPO_ROOT / "tfds_deeplesion" / "deeplesion" / "dummy_data" / "truth.csv"
PADDING = 4.0  # TINY_FLAGS' --box_padding_px


def _run(binary, *args):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bin" / binary), *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def evaluated(dummy_pacs_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    flags = [f for f in TINY_FLAGS if not f.startswith("--split")]
    _run("train_detector", f"--data_dir={dummy_pacs_data_dir}", f"--model_dir={root / 'model'}",
         "--steps=20", "--split=train", *flags)
    _run("evaluate_detector", f"--model_dir={root / 'model'}", f"--data_dir={dummy_pacs_data_dir}",
         "--dataset=deeplesion/pacs", f"--split={SPLIT}", f"--output_dir={root / 'eval'}",
         f"--truth_csv={TRUTH_CSV}", "--categories=truth", "--name=tiny")
    return root


def _flat(value, prefix=""):
    """`{"a": {"b": 1}}` -> `{"a/b": 1}` (lists by index), for pytest.approx."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, item in items:
        flat.update(_flat(item, f"{prefix}/{key}"))
    return flat


def _metrics(directory):
    return json.loads((directory / "metrics.json").read_text())


def test_groundtruth_file_holds_the_padded_measurements(evaluated, dummy_pacs_data_dir):
    gt = json.loads((evaluated / "eval" / "groundtruth.json").read_text())
    examples = list(tfds.as_numpy(splits.load_split("deeplesion/pacs", SPLIT,
                                                         str(dummy_pacs_data_dir))))
    assert [i["id"] for i in gt["images"]] == list(range(1, len(examples) + 1))
    annotations = iter(gt["annotations"])
    for image, example in zip(gt["images"], examples):
        header = png16.read_header(example["image"])
        assert (image["height"], image["width"]) == (header.height, header.width)
        for lesion_id, m in zip(example["lesions"]["lesion_id"],
                                example["lesions"]["measurement"]):
            a = next(annotations)
            assert a["image_id"] == image["id"] and a["lesion_id"] == lesion_id.decode()
            x, y = m[0::2], m[1::2]
            xmin, ymin = max(x.min() - PADDING, 0), max(y.min() - PADDING, 0)
            xmax = min(x.max() + PADDING, image["width"] - 1)
            ymax = min(y.max() + PADDING, image["height"] - 1)
            np.testing.assert_allclose(a["bbox"], [xmin, ymin, xmax - xmin, ymax - ymin],
                                       atol=1e-3)


def test_metrics_and_report(evaluated):
    metrics = _metrics(evaluated / "eval")
    assert metrics["num_images"] == 3 and metrics["settings"]["box_padding_px"] == PADDING
    detections = json.loads((evaluated / "eval" / "detections.json").read_text())
    assert metrics["num_detections"] == len(detections) > 0
    # Accuracy, over IoU, is non-increasing, and 0.5's entry is the headline number.
    by_iou = list(metrics["accuracy_by_iou"].values())
    assert by_iou == sorted(by_iou, reverse=True)
    assert metrics["accuracy_by_iou"]["0.5"] == metrics["detection_accuracy"]
    overall = metrics["per_category"][-1]
    assert overall["size"] == 3 and overall["accuracy"] == metrics["detection_accuracy"]
    assert sum(r["size"] for r in metrics["per_category"][:-1]) >= 3
    assert metrics["unbookmarked"]["num_unbookmarked_lesions"] >= 0
    assert metrics["latency_ms_per_image"] > 0
    report = (evaluated / "eval" / "report.md").read_text()
    assert f"| tiny | 3 | {100 * metrics['detection_accuracy']:.2f} |" in report
    assert f"{100 * metrics['ap50']:.2f}" in report
    for png in ["accuracy_by_iou.png", "precision_recall.png", "froc.png", "detections/00001.png"]:
        assert (evaluated / "eval" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in report


def test_rescoring_its_coco_results_gives_the_same_metrics(evaluated, dummy_pacs_data_dir):
    _run("evaluate_detector", f"--detections={evaluated / 'eval' / 'detections.json'}",
         f"--box_padding_px={PADDING}", f"--data_dir={dummy_pacs_data_dir}",
         "--dataset=deeplesion/pacs", f"--split={SPLIT}", f"--output_dir={evaluated / 'again'}",
         f"--truth_csv={TRUTH_CSV}", "--categories=truth", "--num_figures=0")
    ours, again = _metrics(evaluated / "eval"), _metrics(evaluated / "again")
    for key in ("detection_accuracy", "accuracy_by_iou", "per_category", "froc", "ap50",
                "unbookmarked", "num_detections", "froc_by_group"):
        assert _flat(again[key]) == pytest.approx(_flat(ours[key]), abs=1e-4), key

    runner.write_comparison([str(evaluated / "eval"), str(evaluated / "again")],
                            ["model", "rescored"], str(evaluated / "table1"))
    report = (evaluated / "table1" / "report.md").read_text()
    accuracy = f"{100 * ours['detection_accuracy']:.2f}"
    assert f"| model | 3 | {accuracy} |" in report and f"| rescored | 3 | {accuracy} |" in report
    assert "| Accuracy (%): model |" in report and "| Accuracy (%): rescored |" in report


def test_intervals_and_the_paired_comparison_through_the_binary(evaluated, dummy_pacs_data_dir):
    # The train split holds several patients: every figure gets an interval; the model
    # compared with its own rescored detections differs by exactly nothing.
    common = [f"--data_dir={dummy_pacs_data_dir}", "--dataset=deeplesion/pacs", "--split=train",
              f"--truth_csv={TRUTH_CSV}", "--categories=truth", "--num_figures=0",
              "--bootstrap_resamples=300", "--bootstrap_seed=4"]
    first, second = evaluated / "train_eval", evaluated / "train_again"
    _run("evaluate_detector", f"--model_dir={evaluated / 'model'}", f"--output_dir={first}",
         *common)
    _run("evaluate_detector", f"--detections={first / 'detections.json'}",
         f"--box_padding_px={PADDING}", f"--output_dir={second}", *common)
    metrics = _metrics(first)
    assert metrics["num_patients"] >= 3
    accuracy = metrics["intervals"]["detection_accuracy"]
    assert accuracy["value"] == metrics["detection_accuracy"]
    low, high = accuracy["interval"]
    assert low <= accuracy["value"] <= high and high - low > 0.0
    assert _flat(_metrics(second)["intervals"]) == pytest.approx(_flat(metrics["intervals"]))
    report = (first / "report.md").read_text()
    assert f"{100 * accuracy['value']:.1f} [{100 * low:.1f}, {100 * high:.1f}]" in report
    # By size and type: every scored lesion in exactly one group of each kind.
    groups = metrics["froc_by_group"]
    for kind in ("size", "type"):
        scored = [g for g in groups[kind].values() if g is not None]
        assert sum(g["num_lesions"] for g in scored) == metrics["froc"]["num_lesions"], kind
        assert all(g["intervals"]["froc_4"]["value"] == g["sensitivity_at_fp"]["4"]
                   for g in scored)
    assert "## FROC by lesion size and type" in report and " | long axis 10-30 mm | " in report
    # The figures' data, by value: the FROC curve read at the six rates is metrics.json's,
    # and each category's precision-recall curve ends at that category's recall.
    curves = json.loads((first / "curves.json").read_text())
    froc = curves["froc"]
    fps, sensitivity = np.asarray(froc["fps_per_image"]), np.asarray(froc["sensitivity"])
    for rate, value in metrics["froc"]["sensitivity_at_fp"].items():
        assert sensitivity[fps < float(rate)].max() == pytest.approx(value), rate
    by_category = curves["precision_recall_by_category"]
    scored = {n: g for n, g in groups["type"].items() if g is not None}
    assert set(by_category) == set(scored)
    for name, curve in by_category.items():
        assert curve["recall"][-1] == pytest.approx(scored[name]["sensitivity_all_detections"])
    assert "](precision_recall_by_category.png)" in report
    assert (first / "precision_recall_by_category.png").read_bytes()[:4] == b"\x89PNG"

    table = evaluated / "train_table1"
    _run("evaluate_detector", f"--compare={first},{second}", "--compare_names=model,rescored",
         f"--output_dir={table}", "--bootstrap_resamples=300")
    comparison = json.loads((table / "comparison.json").read_text())
    difference = comparison["differences"][0]["detection_accuracy"]
    assert difference == {"value": 0.0, "interval": [0.0, 0.0], "method": "BCa", "p_value": 1.0}
    report = (table / "report.md").read_text()
    assert "| rescored - model | Accuracy | +0.0 [+0.0, +0.0] | 1.000 | undecided at this size |" \
        in report
