"""`flags.txt` repeats the run: the binary's own flags only, replayed in a fresh process."""

import json

import pytest

from tests import binaries
from tests.test_train_detector import TINY_FLAGS

pytestmark = pytest.mark.slow



def _settings(path):
    """`{flag: value}` of a flags.txt (booleans as `--name` / `--noname`)."""
    settings = {}
    for line in path.read_text().splitlines():
        name, _, value = line[2:].partition("=")
        settings[name] = value
    return settings


def test_train_and_evaluate_runs_replay_from_their_flags_txt(dummy_pacs_data_dir, tmp_path):
    first = tmp_path / "first"
    binaries.run("train_detector", f"--data_dir={dummy_pacs_data_dir}", f"--model_dir={first}",
                 "--steps=2", *[f for f in TINY_FLAGS if not f.startswith("--split")],
                 "--split=train")
    recorded = _settings(first / "flags.txt")
    # Only train_detector's flags: none of absl's, TensorFlow's or TFDS's own.
    assert "test_random_seed" not in recorded and "help" not in recorded
    assert recorded["model_dir"] == str(first) and recorded["steps"] == "2"
    assert recorded["width_multiplier"] == "0.125" and "cache" in recorded

    again = tmp_path / "again"
    binaries.run("train_detector", f"--flagfile={first / 'flags.txt'}", f"--model_dir={again}",
                 "--seed=7")
    replayed = _settings(again / "flags.txt")
    assert replayed.pop("model_dir") == str(again) and replayed.pop("seed") == "7"
    assert replayed == {k: v for k, v in recorded.items() if k not in ("model_dir", "seed")}
    assert (again / "model_config.json").read_text() == (first / "model_config.json").read_text(
        ).replace('"seed": 1', '"seed": 7')

    evaluated = tmp_path / "eval"
    binaries.run("evaluate_detector", f"--model_dir={first}", f"--data_dir={dummy_pacs_data_dir}",
                 "--dataset=deeplesion/pacs", "--split=test", f"--output_dir={evaluated}",
                 "--categories=none", "--num_figures=0", "--bootstrap_resamples=50")
    evaluated_again = tmp_path / "eval_again"
    binaries.run("evaluate_detector", f"--flagfile={evaluated / 'flags.txt'}",
                 f"--output_dir={evaluated_again}")
    one, two = _settings(evaluated / "flags.txt"), _settings(evaluated_again / "flags.txt")
    assert two.pop("output_dir") == str(evaluated_again) and one.pop("output_dir")
    assert one == two and one["bootstrap_resamples"] == "50"
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (evaluated, evaluated_again)]
    for m in metrics:
        m.pop("latency_ms_per_image")  # a timing: the rest must be equal
    assert metrics[0] == metrics[1]
