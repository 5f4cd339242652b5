"""bin/categorize_lesions end to end on the dummy PACS: its outputs parse and agree."""

import csv
import json
import subprocess
import sys

import pytest

from tests import tfds_helpers
from tests.conftest import REPO_ROOT
from tfds_deeplesion.deeplesion import dummy_data_generation as dummy


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds_helpers.build("pacs", data_dir, manual_dir=dummy.DUMMY_DIR)
    out = tmp_path_factory.mktemp("categorize")
    names = out / "names.csv"
    names.write_text("cluster,name\n1,AA\n2,BB\n3,CC\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "categorize_lesions"),
         f"--data_dir={data_dir}", "--dataset=deeplesion/pacs", f"--output_dir={out}",
         "--patch_size=32", "--width_multiplier=0.125", "--fc_units=16", "--k=2,3",
         "--max_iterations=2", "--epochs=1", "--batch_size=4", f"--names={names}"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_pseudo_labels_cover_every_lesion(run):
    with open(dummy.DUMMY_DIR / "bookmarks.csv", newline="") as f:
        lesion_ids = sorted(r["lesion_id"] for r in csv.DictReader(f))
    with open(run / "pseudo_labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["lesion_id"] for r in rows] == lesion_ids
    report = json.loads((run / "report.json").read_text())
    final_k = report["final_k"]
    assert final_k in (2, 3)
    assert {int(r["cluster"]) for r in rows} == set(range(1, final_k + 1))
    assert report["num_lesions"] == len(lesion_ids)


def test_report_montages_plot_and_flags(run):
    report = json.loads((run / "report.json").read_text())
    iterations = report["iterations"]
    assert 1 <= len(iterations) <= 2
    assert iterations[0]["purity"] is None
    assert set(iterations[0]["k_scores"]["silhouette"]) == {"2", "3"}
    assert sum(iterations[-1]["cluster_sizes"]) == report["num_lesions"]
    assert report["cluster_names"] == {"1": "AA", "2": "BB", "3": "CC"}
    montages = sorted(p.name for p in run.glob("montage_cluster_*.png"))
    assert montages == [f"montage_cluster_{c}.png" for c in range(1, report["final_k"] + 1)]
    for path in list(run.glob("*.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "metrics.png").exists()
    assert "--patch_size=32" in (run / "flags.txt").read_text()
    assert (run / "cluster_names.csv").read_text().startswith("cluster,name\n1,AA")
