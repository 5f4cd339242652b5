"""benchmarks/bench_categorizer.py's scoring and grid table, on hand-made runs."""

import importlib.util
import json

import pytest

from tests.conftest import REPO_ROOT

_SPEC = importlib.util.spec_from_file_location(
    "bench_categorizer", REPO_ROOT / "benchmarks" / "bench_categorizer.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def _run_dir(tmp_path, clusters, warnings=()):
    out = tmp_path / "run"
    out.mkdir()
    (out / "pseudo_labels.csv").write_text(
        "lesion_id,cluster\n" + "".join(f"L{i},{c}\n" for i, c in enumerate(clusters)))
    (out / "report.json").write_text(json.dumps(
        {"final_k": max(clusters), "converged": True, "warnings": list(warnings),
         "iterations": [{"iteration": 1}, {"iteration": 2}]}))
    return out


def test_score_against_the_planted_categories(tmp_path):
    truth = tmp_path / "truth.csv"
    planted = [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    truth.write_text("lesion_id,category\n" + "".join(f"L{i},{c}\n" for i, c in
                                                      enumerate(planted)))
    # One lesion of category 3 sits in the cluster of category 2: purity 9/10.
    result = bench.score(_run_dir(tmp_path, [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]), str(truth))
    assert result["purity"] == pytest.approx(0.9)
    assert result["k"] == 3 and result["iterations"] == 2 and result["converged"]
    assert 0.7 < result["nmi"] < 0.9
    assert result["reached"] == (result["nmi"] >= 0.8)
    truth.write_text("lesion_id,category\nL0,1\n")
    with pytest.raises(ValueError, match="9 lesions of .* are not in"):
        bench.score(tmp_path / "run", str(truth))


def test_summary_counts_runs_that_reach_both_targets_per_size():
    rows = [
        {"group": "other draws, 40 patients", "k": 5, "iterations": 2, "converged": True,
         "purity": 0.95, "nmi": 0.85, "reached": True, "wall_seconds": 60.0},
        {"group": "other draws, 40 patients", "k": 7, "iterations": 4, "converged": False,
         "purity": 0.91, "nmi": 0.75, "reached": False, "wall_seconds": 80.0},
        {"group": "other draws, 100 patients", "k": 5, "iterations": 2, "converged": True,
         "purity": 0.93, "nmi": 0.81, "reached": True, "wall_seconds": 120.0},
        {"group": "default, 100 patients", "k": 6, "iterations": 3, "converged": True,
         "purity": 0.89, "nmi": 0.79, "reached": False, "wall_seconds": 100.0},
    ]
    for row in rows:
        row["patients"] = int(row["group"].split(", ")[1].split()[0])
    table = bench.summarize(rows).splitlines()
    assert len(table) == 6  # Header, rule, three groups, and the two groups at 100 pooled.
    assert table[5].startswith("| all runs at 100 patients | 2 | **1 of 2** (50%, 95% CI 1-99%) "
                               "| 5: 1, 6: 1 | 2, 3 (2 of 2) | 0.910 (0.890-0.930) |")
    assert table[2] == ("| other draws, 40 patients | 2 | **1 of 2** (50%, 95% CI 1-99%) "
                        "| 5: 1, 7: 1 | 2, 4 "
                        "(1 of 2) | 0.930 (0.910-0.950) | 0.800 (0.750-0.850) "
                        "| 70 (60-80) |")
    assert table[3].startswith("| other draws, 100 patients | 1 | **1 of 1** (100%, 95% CI "
                               "3-100%) | 5: 1 |")
