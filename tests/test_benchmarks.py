"""benchmarks/run_all (a quick subset) and benchmarks/gpu_check.sh (smoke mode on the CPU)."""

import math
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# Slow tier (the benchmark scripts run end to end in subprocesses): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

RUN_ALL = REPO_ROOT / "benchmarks" / "run_all"
GPU_CHECK = REPO_ROOT / "benchmarks" / "gpu_check.sh"


def _section(report: str, name: str) -> str:
    """The text of report section `## name`, up to the next section."""
    match = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", report, re.M | re.S)
    assert match, f"no section {name!r} in:\n{report}"
    return match.group(1)


def _table_rows(text: str):
    """Data rows of the markdown tables in `text`, as lists of cell strings."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines()
            if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows
            if not all(set(cell.strip()) <= set("-:") for cell in row)]


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_run_all_quick_writes_report_with_machine_commit_and_tables(tmp_path):
    output = tmp_path / "results" / "r.md"  # The folder does not exist yet.
    result = subprocess.run(
        [sys.executable, str(RUN_ALL), "--quick", "--only=detector,kmeans",
         f"--output={output}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = output.read_text()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                            capture_output=True, text=True).stdout.strip()
    assert re.search(rf"^- Commit: {commit}( \(dirty\))?$", report, re.M)
    assert re.search(rf"`os.cpu_count\(\)` = {os.cpu_count()}$", report, re.M)
    ram_gib = float(re.search(r"^- RAM: ([\d.]+) GiB$", report, re.M).group(1))
    assert ram_gib > 0.5
    assert re.search(r"^- Python [\d.]+, TensorFlow \d+\.\d+", report, re.M)
    assert re.search(r"^- Load average \(1, 5, 15 min\) at start: [\d.]+, [\d.]+, [\d.]+$",
                     report, re.M)
    assert re.search(r"^- Failed: none$", report, re.M)
    # Sections in BENCHMARKS.md's order, whatever the order of --only.
    assert report.index("## kmeans") < report.index("## detector") < report.index("## Summary")

    kmeans = _section(report, "kmeans")
    assert "`python benchmarks/bench_kmeans.py --num_items=2000 --num_features=256" in kmeans
    wall = float(re.search(r"`: ([\d.]+) s wall, exit 0", kmeans).group(1))
    assert wall > 0
    header, row = _table_rows(kmeans)
    assert header[:4] == ["PCA dims", "n_init", "median s", "runs (s)"]
    median_s, k, purity = _number(row[2]), int(row[4]), _number(row[5])
    assert math.isfinite(median_s) and 0 < median_s <= wall
    assert 2 <= k <= 4  # --quick searches k = 2..4
    assert 0 < purity <= 1

    detector = _section(report, "detector")
    assert "bench_detector.py --repeats=1 --skip_paper" in detector
    rows = _table_rows(detector)
    assert rows[0][2] == "inference ms/image (median)"
    assert [r[0] for r in rows[1:]] == ["quickstart 256px"]  # --skip_paper
    batch, ms_per_image, images_per_s = int(rows[1][1]), _number(rows[1][2]), _number(rows[1][3])
    assert batch == 4
    assert math.isfinite(ms_per_image) and ms_per_image > 0
    assert math.isfinite(images_per_s) and images_per_s > 0
    assert "run_all: kmeans started" in result.stderr
    assert re.search(r"run_all: detector done in [\d.]+ s", result.stderr)


def test_run_all_rejects_unknown_names_listing_the_valid_ones(tmp_path):
    result = subprocess.run([sys.executable, str(RUN_ALL), "--only=kmeans,nonsense",
                             f"--output={tmp_path / 'r.md'}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "nonsense" in result.stderr
    for name in ("synthetic_pacs", "tfds_build", "pipelines", "kmeans", "categorizer",
                 "detector", "serving", "quickstart", "multi_vs_single"):
        assert name in result.stderr
    assert not (tmp_path / "r.md").exists()


def test_gpu_check_smoke_on_cpu_writes_timings_and_finite_losses(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable,
               TMPDIR=str(tmp_path))
    env.pop("GPU_CHECK_DATA_DIR", None)  # Builds its own tiny dataset.
    env.pop("GPU_CHECK_MIXED", None)
    result = subprocess.run(["bash", str(GPU_CHECK), "--allow_cpu", "--smoke"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert result.stdout.strip() == report.strip()  # Printed as well as written.
    assert "mode: smoke" in report

    devices = _section(report, "Step 0: devices")
    if "GPUs: []" in devices:
        assert "No GPU: running on the CPU (--allow_cpu); mixed precision policy " \
               "mixed_bfloat16" in devices
        mixed = "mixed_bfloat16"
    else:
        mixed = "mixed_float16"

    bench = _table_rows(_section(report, "Step 1: benchmarks/bench_detector.py (random "
                                         "inputs, random initialisation)"))
    assert [r[0] for r in bench[1:]] == ["quickstart 128px", f"quickstart 128px, {mixed}"]
    for row in bench[1:]:
        assert int(row[1]) == 2  # --batch_size=2
        assert 0 < _number(row[2]) < math.inf and 0 < _number(row[3]) < math.inf
        assert len(row[4].split(",")) == 2  # --repeats=2

    dataset = _section(report, "Step 2: dataset")
    counts = dict(re.findall(r"(train|validation|test) (\d+)", dataset))
    assert int(counts["train"]) > 0

    train = _table_rows(_section(report, "Step 3: bin/train_detector, "
                                         "configs/paper_single_class.flags with random "
                                         "initialisation"))
    assert [r[0] for r in train[1:]] == ["float32", mixed]
    for row in train[1:]:
        steps, steps_per_s, images_per_s, total = (int(row[1]), _number(row[2]),
                                                   _number(row[3]), _number(row[4]))
        assert steps == 4
        assert 0 < steps_per_s < math.inf
        assert images_per_s == pytest.approx(2 * steps_per_s, rel=0.01, abs=0.06)
        assert math.isfinite(total) and total > 0
        losses = dict(item.rsplit(" ", 1) for item in row[5].split(", "))
        assert set(losses) == {"rpn_class", "rpn_box", "rcnn_class", "rcnn_box", "rpn_recall"}
        assert all(math.isfinite(float(v)) and float(v) >= 0 for v in losses.values())
    assert "Result: all steps passed." in report


def test_bench_multi_vs_single_end_to_end_on_the_dummy_pacs(dummy_pacs_data_dir, tmp_path):
    # A smoke run (2 steps, one seed) on the dummy PACS's train split, several patients:
    # every step runs, and the pooled figures are the evaluations' own.
    import csv
    import json

    truth = REPO_ROOT / "tfds_deeplesion" / "deeplesion" / "dummy_data" / "truth.csv"
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_multi_vs_single.py"),
         f"--work_dir={work}", f"--data_dir={dummy_pacs_data_dir}", "--dataset=deeplesion/pacs",
         f"--truth_csv={truth}", "--split=train", "--seeds=3", "--steps=2",
         "--categorizer_k=2", "--resamples=100"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    verdict = json.loads((work / "verdict.json").read_text())
    assert verdict["seeds"] == [3] and verdict["categorizer"]["k"] == 2
    assert verdict["num_patients"] >= 3
    for arm in ("single", "multi"):
        metrics = json.loads((work / f"eval_{arm}_seed3" / "metrics.json").read_text())
        assert "--seed=3" in (work / f"detector_{arm}_seed3" / "flags.txt").read_text()
        pooled = verdict["pooled"]["detection_accuracy"][arm]
        assert pooled["value"] == metrics["detection_accuracy"]
        assert pooled["interval"] == metrics["intervals"]["detection_accuracy"]["interval"]
    one_seed = verdict["per_seed"][0]["difference"]["detection_accuracy"]["value"]
    assert verdict["pooled"]["detection_accuracy"]["difference"]["value"] == one_seed
    # Table 1's sizes: the train split's images holding each planted category.
    with open(truth, newline="") as f:
        names = {r["lesion_id"]: r["category_name"] for r in csv.DictReader(f)}
    gt = json.loads((work / "eval_single_seed3" / "groundtruth.json").read_text())
    per_image = {}
    for a in gt["annotations"]:
        per_image.setdefault(a["image_id"], set()).add(names[a["lesion_id"]])
    for row in verdict["table1"]:
        assert row["size"] == sum(row["name"] in c for c in per_image.values()), row["name"]
    assert "| detection_accuracy |" in result.stdout and "undecided at this size" in result.stdout
