"""bin/categorize_lesions end to end on the dummy PACS: its outputs parse and agree."""

import csv
import json
import subprocess
import sys

import h5py

import pytest

from tests import tfds_helpers
from tests.conftest import REPO_ROOT
from tfds_deeplesion.deeplesion import dummy_data_generation as dummy

# Slow tier (bin/categorize_lesions in subprocesses): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow


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


def test_the_final_network_is_saved_for_the_detector(run):
    from deeplesion_tf.nets import trunk_file

    spec = trunk_file.read_spec(str(run / "trunk"))
    assert (spec.width_multiplier, spec.norm, spec.fc_units) == (0.125, "none", 16)
    report = json.loads((run / "report.json").read_text())
    assert spec.provenance["iterations"] == len(report["iterations"])
    assert spec.provenance["k"] == report["final_k"]
    assert spec.provenance["splits"] == "train+validation+test"
    assert trunk_file.fc_arrays(str(run / "trunk"))["fc7"][0].shape == (16, 16)


def test_a_saved_trunk_starts_the_next_categorizer(run, tmp_path_factory):
    # --weights=DIR/trunk (bin/pretrain_trunk's, or an earlier run's as here), issue 25.
    from deeplesion_tf.nets import trunk_file

    data_dir = tmp_path_factory.mktemp("tfds_started")
    tfds_helpers.build("pacs", data_dir, manual_dir=dummy.DUMMY_DIR)
    common = [sys.executable, str(REPO_ROOT / "bin" / "categorize_lesions"),
              f"--data_dir={data_dir}", "--dataset=deeplesion/pacs", "--patch_size=32",
              "--fc_units=16", "--k=2", "--max_iterations=1", "--epochs=1", "--batch_size=4",
              f"--weights={run / 'trunk'}"]
    out = tmp_path_factory.mktemp("started")
    result = subprocess.run(common + ["--width_multiplier=0.125", f"--output_dir={out}"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Loaded the trunk" in result.stderr
    spec = trunk_file.read_spec(str(out / "trunk"))
    assert spec.provenance["weights"] == str(run / "trunk")
    # A trunk of another width is refused by name before anything is written.
    never = tmp_path_factory.mktemp("refused_trunk") / "out"
    refused = subprocess.run(common + ["--width_multiplier=0.25", f"--output_dir={never}"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "width_multiplier is 0.125 there but 0.25 here" in refused.stderr
    assert not never.exists()


def test_pooled_block_features_of_an_ensemble_choose_k_by_agreement(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_pooled")
    tfds_helpers.build("pacs", data_dir, manual_dir=dummy.DUMMY_DIR)
    out = tmp_path_factory.mktemp("categorize_pooled")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "categorize_lesions"),
         f"--data_dir={data_dir}", "--dataset=deeplesion/pacs", f"--output_dir={out}",
         "--patch_size=32", "--width_multiplier=0.125", "--fc_units=16", "--k=2,3",
         "--max_iterations=1", "--epochs=1", "--batch_size=4", "--padding_px=60",
         "--feature_layer=block2", "--feature_normalization=standardize",
         "--ensemble_size=3", "--mirror", "--k_criterion=agreement", "--trunk_norm=group"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["feature_layer"] == "block2"
    assert report["settings"]["feature_normalization"] == "standardize"
    assert report["settings"]["mirror"] is True
    # k is the one the members agree on best in the first (only) iteration; the
    # criteria of kmeans are kept beside it for the audit.
    scores = report["iterations"][0]["k_scores"]
    agreement = scores["agreement"]
    assert report["final_k"] == int(max(agreement, key=lambda k: (agreement[k], -int(k))))
    assert set(scores) >= {"agreement", "agreement_standard_error", "pairwise_ari", "bic",
                           "silhouette"}
    assert all(0.0 <= v <= 1.0 for v in agreement.values())
    choice = report["k_choice"]
    assert choice["criterion"] == "agreement" and choice["k"] == report["final_k"]
    assert choice["runner_up"] == 5 - report["final_k"]  # The other of 2 and 3.
    assert choice["at_edge"]  # With k = 2, 3 both are edges.
    # One iteration cannot converge, and the edge is named too.
    assert any("did not converge" in w for w in report["warnings"])
    assert any("edge of the k tried" in w for w in report["warnings"])
    assert (out / "k_selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --trunk_norm: a fourth network, with group normalisation, followed the loop and
    # is the one saved (the encoders have none).
    from deeplesion_tf.nets import trunk_file

    assert trunk_file.read_spec(str(out / "trunk")).norm == "group"
    with h5py.File(out / "trunk" / trunk_file.WEIGHTS_FILE, "r") as f:
        assert "block1_conv1_norm" in f and "block5_conv3_norm" in f
    with open(out / "pseudo_labels.csv", newline="") as f:
        clusters = [int(r["cluster"]) for r in csv.DictReader(f)]
    assert len(clusters) == report["num_lesions"]
    assert set(clusters) == set(range(1, report["final_k"] + 1))
    flags_text = (out / "flags.txt").read_text()
    assert "--ensemble_size=3" in flags_text and "--k_criterion=agreement" in flags_text
    # An unknown layer is refused by the flag, before any work; so is agreement
    # without an ensemble, and an ensemble of identical pretrained networks.
    refused = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "categorize_lesions"),
         f"--output_dir={out}", "--feature_layer=block6"],
        capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "feature_layer" in refused.stderr
    for bad, message in ((["--k_criterion=agreement"], "set --ensemble_size to 2"),
                         (["--ensemble_size=2", "--weights=imagenet"], "would all be the same")):
        refused = subprocess.run(
            [sys.executable, str(REPO_ROOT / "bin" / "categorize_lesions"),
             f"--data_dir={data_dir}", "--dataset=deeplesion/pacs",
             f"--output_dir={tmp_path_factory.mktemp('refused')}"] + bad,
            capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr[-2000:]


def test_a_dataset_that_is_not_built_stops_it_before_anything_is_written(tmp_path):
    out = tmp_path / "never_written"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "categorize_lesions"),
         f"--data_dir={tmp_path / 'empty'}", "--dataset=deeplesion/pacs", f"--output_dir={out}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"deeplesion/pacs is not built in --data_dir={tmp_path / 'empty'}" in result.stderr
    assert not out.exists() and not (tmp_path / "empty").exists()
    missing = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "categorize_lesions"), f"--output_dir={out}"],
        capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "--data_dir" in missing.stderr and not out.exists()
