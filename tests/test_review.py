"""The radiologist step: purity sample, answers kept across restarts, purity with intervals."""

import json
import subprocess
import sys

import pytest

from deeplesion_tf.categorize import review as review_lib
from tests.conftest import REPO_ROOT

CLUSTERS = {f"L{i:03d}": 1 + (i % 3) for i in range(30)}  # clusters 1-3, 10 lesions each


def test_the_sample_is_seeded_capped_and_drawn_from_each_cluster():
    sample = review_lib.purity_sample(CLUSTERS, per_cluster=4, seed=3)
    assert sorted(sample) == [1, 2, 3] and all(len(v) == 4 for v in sample.values())
    assert all(CLUSTERS[lesion] == c for c, lesions in sample.items() for lesion in lesions)
    assert sample == review_lib.purity_sample(CLUSTERS, per_cluster=4, seed=3)
    assert sample != review_lib.purity_sample(CLUSTERS, per_cluster=4, seed=4)
    capped = review_lib.purity_sample(CLUSTERS, per_cluster=200)
    assert all(len(v) == 10 for v in capped.values())


def test_answers_survive_a_restart_and_the_last_answer_counts(tmp_path):
    review = review_lib.Review(review_lib.purity_sample(CLUSTERS, per_cluster=5, seed=0))
    review.name(1, "LV")
    first = review.sample[1][0]
    review.answer(first, False)
    review_lib.save(review, str(tmp_path))
    # A new process: what was saved is all there is.
    again = review_lib.load(str(tmp_path))
    assert again.names == {1: "LV"} and again.latest() == {first: False}
    again.answer(first, True)
    assert again.latest() == {first: True} and len(again.answers) == 2
    assert again.next_unanswered(1) == review.sample[1][1]
    assert again.progress()[1] == (1, 5)
    assert [p.name for p in tmp_path.iterdir()] == [review_lib.REVIEW_FILE]  # no temp file left
    with pytest.raises(ValueError, match="not in the purity sample"):
        again.answer("nobody", True)
    with pytest.raises(ValueError, match="without commas"):
        again.name(2, "liver, lesion")


def test_purity_is_the_share_that_belongs_with_an_exact_interval():
    review = review_lib.Review({1: [f"a{i}" for i in range(200)], 2: ["b0", "b1"]})
    for i in range(200):
        review.answer(f"a{i}", i >= 10)  # 190 of 200 belong
    rows = {r.cluster: r for r in review_lib.purity(review)}
    assert (rows[1].belongs, rows[1].reviewed, rows[1].estimate) == (190, 200, 0.95)
    # Clopper-Pearson 95% for 190/200: the 2.5% and 97.5% quantiles of Beta(190, 11), Beta(191, 10).
    assert rows[1].low == pytest.approx(0.909972, abs=1e-6)
    assert rows[1].high == pytest.approx(0.975766, abs=1e-6)
    assert rows[2].reviewed == 0 and rows[2].estimate is None and rows[2].name == "C2"


def test_the_simulated_reviewer_answers_from_the_planted_categories():
    review = review_lib.Review({1: ["a", "b", "c", "d"], 2: ["e", "f"]})
    review.name(1, "LV2")
    review.name(2, review_lib.MIXED)
    planted = {"a": "LV", "b": "LV", "c": "AB", "d": "LV", "e": "LN", "f": "CL"}
    assert review_lib.simulate(review, planted) == 6 and review.simulated
    rows = {r.cluster: r for r in review_lib.purity(review)}
    assert (rows[1].belongs, rows[1].reviewed) == (3, 4)
    assert (rows[2].belongs, rows[2].reviewed) == (2, 2)
    unnamed = review_lib.Review({1: ["a"], 2: ["e"]})
    unnamed.name(1, "LV")
    with pytest.raises(ValueError, match=r"clusters \[2\] have no name"):
        review_lib.simulate(unnamed, planted)


@pytest.mark.slow
def test_the_binary_names_simulates_and_writes_the_three_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pseudo_labels.csv").write_text(
        "lesion_id,cluster\n" + "".join(f"{k},{v}\n" for k, v in sorted(CLUSTERS.items())))
    # Cluster 1 is mostly LV (8 of 10), the others all LN / AB.
    truth = {k: ("LV" if v == 1 else "LN" if v == 2 else "AB") for k, v in CLUSTERS.items()}
    truth["L000"] = truth["L003"] = "CL"  # two of cluster 1's lesions are not LV
    truth_csv = tmp_path / "truth.csv"
    truth_csv.write_text("lesion_id,short_name\n" + "".join(f"{k},{v}\n"
                                                            for k, v in truth.items()))
    command = [sys.executable, str(REPO_ROOT / "bin" / "review_clusters"),
               f"--categorize_dir={run}", f"--names_from={truth_csv}",
               f"--simulate_reviewer={truth_csv}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "names.csv").read_text() == "cluster,name\n1,LV\n2,LN\n3,AB\n"
    purity = {c["cluster"]: c for c in json.loads((run / "purity.json").read_text())["clusters"]}
    assert (purity[1]["belongs"], purity[1]["reviewed"]) == (8, 10)
    assert purity[2]["estimate"] == 1.0 and purity[2]["low"] < 1.0
    assert "cluster 1 LV: 0.800" in result.stdout and "[paper 0.805]" in result.stdout
    answers = json.loads((run / "review.json").read_text())["answers"]
    assert len(answers) == 30 and all(a["time"] for a in answers)
    # A second run continues the review: nothing is redrawn or answered twice.
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(json.loads((run / "review.json").read_text())["answers"]) == 30
    bare = subprocess.run(command[:3], capture_output=True, text=True, timeout=300)
    # Without them it is the review page, which needs the run's dataset (flags.txt).
    assert bare.returncode != 0 and "has no flags.txt naming its dataset" in bare.stderr
    (run / "flags.txt").write_text(f"--dataset=deeplesion/synthetic\n--data_dir={tmp_path}\n")
    moved = subprocess.run(command[:3], capture_output=True, text=True, timeout=300)
    assert moved.returncode != 0 and "is not built in --data_dir" in moved.stderr
