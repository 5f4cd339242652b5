"""benchmarks/bench_blank_slices.py on two tiny random-weight detectors (seconds, not a figure).

With a score threshold of 0 the detectors always detect, so without the
empty-box rule every blank slice gets boxes, and with it a uniform slice gets
none while a noisy one keeps exactly the same boxes (the rule sees contrast
everywhere there).
"""

import functools
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from deeplesion_tf.detection import classes as classes_lib
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.detection import model_dir as model_dir_lib
from tests.conftest import REPO_ROOT

# Slow tier (trains and exports detectors, runs the script): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

SCRIPT = REPO_ROOT / "benchmarks" / "bench_blank_slices.py"
MODEL_KWARGS = dict(num_classes=1, width_multiplier=0.0625, fc_units=32,
                    anchor_sizes=[12.0, 24.0], test_pre_nms_top_k=300, test_post_nms_top_k=32,
                    score_threshold=0.0, max_detections=3)
SIZE = 64


@functools.lru_cache(maxsize=None)  # once: the script defines absl flags at import
def _bench():
    spec = importlib.util.spec_from_file_location("bench_blank_slices", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """Two random-weight detectors, `tiny_seed0` and `tiny_seed1` (one group, "tiny")."""
    root = tmp_path_factory.mktemp("blank_models")
    dirs = []
    for seed in (0, 1):
        model_dir = root / f"tiny_seed{seed}"
        model_dir.mkdir()
        tf.keras.utils.set_random_seed(seed)
        config = config_lib.from_flat(image_size=64, windows=[(-160.0, 240.0)],
                                      box_padding_px=4.0, **MODEL_KWARGS)
        model = faster_rcnn.build_faster_rcnn(config)
        model_dir_lib.write_model_config(str(model_dir), config)
        classes_lib.write(classes_lib.ClassSpec("test", ["lesion"], None), str(model_dir))
        tf.train.Checkpoint(model=model).save(str(model_dir / "ckpt"))
        dirs.append(str(model_dir))
    return dirs


def test_t_interval_is_students_over_models():
    bench = _bench()
    values = [1.0, 2.0, 4.0]
    mean, low, high = bench.t_interval(values)
    half = scipy.stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    assert bench.t_interval([2.0]) == (2.0, None, None)
    assert bench.group_of("/x/detector_multi_seed3") == "detector_multi"


def test_blank_slices_with_and_without_the_rule(model_dirs, tmp_path):
    bench = _bench()
    inputs = bench.make_inputs(SIZE, noise_hu=10.0)
    assert set(inputs) == set(bench.INPUTS)
    np.testing.assert_array_equal(inputs["soft tissue"], np.full([1, SIZE, SIZE, 3], 40.0))
    # In Python (the graph the export saves): the export itself is the slow test's.
    results = {variant: {d: bench.measure(d, str(tmp_path), inputs, drop, saved_model=False)
                         for d in model_dirs} for variant, drop in bench.VARIANTS.items()}
    for model_dir in model_dirs:
        without = results["without"][model_dir]["inputs"]
        with_rule = results["with"][model_dir]["inputs"]
        assert results["with"][model_dir]["score_threshold"] == 0.0
        for name in bench.BLANK:
            assert without[name]["detections"] == 3, (model_dir, name, without[name])
            assert with_rule[name] == {"detections": 0, "max_score": 0.0, "scores": [],
                                       "boxes": []}
        # Noise puts contrast in every box: the rule removes nothing there.
        assert with_rule["water + noise"] == without["water + noise"]
        assert without["water + noise"]["detections"] == 3
        assert without["air"]["max_score"] == pytest.approx(max(without["air"]["scores"]),
                                                            abs=1e-4)
        assert without["air"]["max_score"] > 0
        for box in without["air"]["boxes"]:  # every returned box has area >= 1 px
            assert box[2] - box[0] >= 1 and box[3] - box[1] >= 1
    summary = bench.summarise(results["without"])
    assert set(summary) == {"tiny", "pooled"}
    blank = summary["pooled"]["blank (mean of the uniform three)"]
    assert blank["detections"] == (3.0, 3.0, 3.0)  # the same for both models: no spread
    max_scores = [max(results["without"][d]["inputs"][k]["max_score"] for k in bench.BLANK)
                  for d in model_dirs]
    assert blank["max_score"] == pytest.approx(bench.t_interval(max_scores))
    assert bench.summarise(results["with"])["tiny"]["air"]["detections"] == (0.0, 0.0, 0.0)
    table = bench.markdown(results["without"], summary)
    assert "| tiny_seed0 | 0 | 3 (" in table
    assert "| pooled (2) | blank (mean of the uniform three) | 3.00 [3.00, 3.00] |" in table
    paired = bench.paired_markdown(results)
    assert "| pooled (2) | air | -3.00 [-3.00, -3.00] |" in paired
    assert "| pooled (2) | water + noise | 0.00 [0.00, 0.00] |" in paired


def test_script_runs_and_writes_json(model_dirs, tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), f"--model_dirs={','.join(model_dirs)}", f"--size={SIZE}",
         f"--work_dir={tmp_path / 'work'}", f"--output_json={tmp_path / 'out.json'}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "out.json").read_text())
    assert figures["summary"]["with"]["pooled"]["air"]["detections"] == [0.0, 0.0, 0.0]
    assert figures["summary"]["without"]["pooled"]["air"]["detections"] == [3.0, 3.0, 3.0]
    assert "### without the empty-box rule" in result.stdout
    assert "| pooled (2) | air | 0.00 [0.00, 0.00] | 0.00 [0.00, 0.00] |" in result.stdout
