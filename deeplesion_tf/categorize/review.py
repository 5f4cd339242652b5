"""The paper's radiologist step (Sec. 3): clusters named, and their purity estimated by review.

In the paper a radiologist inspected the five clusters, named four and left the fifth
as mixed, and an experienced radiologist judged 800 randomly chosen lesion patches
(200 per category) as belonging to their cluster or not, which gave the per-cluster
purity. Here a review is kept in the categorizer's run directory:

  review.json   every answer with its time (and the reviewer's name if given), the
                seeded purity sample, the names; rewritten atomically after each
                answer, so a closed page or a killed process loses nothing;
  names.csv     `cluster,name`, as `bin/train_detector --class_names` reads it;
  purity.json   per cluster: lesions judged to belong, of those reviewed, the
                estimate and its exact (Clopper-Pearson) 95% interval.

A simulated reviewer (`simulate`) answers from the synthetic PACS' planted truth, so
that scripts and the quickstart can report per-cluster purity as the paper does,
labelled as simulated. Only pseudonymous lesion ids are stored, never patient data.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Dict, List, Mapping, Optional

import numpy as np
from scipy import stats

from deeplesion_tf.categorize import naming
from deeplesion_tf.data import atomic_file

REVIEW_FILE = "review.json"
NAMES_FILE = "names.csv"
PURITY_FILE = "purity.json"
MIXED = "mixed"
# The paper's per-cluster purity (Sec. 3: 200 patches per category, one radiologist), by the
# short names of `data.lesion_categories`.
PAPER_PURITY = {"LN": 0.980, "CL": 0.955, "LV": 0.805, "AB": 0.995}
PAPER_SAMPLE_PER_CLUSTER = 200
CONFIDENCE = 0.95


def purity_sample(clusters: Mapping[str, int], per_cluster: int = PAPER_SAMPLE_PER_CLUSTER,
                  seed: int = 0) -> Dict[int, List[str]]:
    """A seeded random sample of each cluster's lesions, at most `per_cluster` of each.

    Args:
      clusters: `{lesion_id: cluster}` (`label_files.read_pseudo_labels`).
      per_cluster: lesions per cluster (the paper: 200), capped at the cluster's size.
      seed: the same seed and clusters give the same sample, in the same order.
    """
    if per_cluster < 1:
        raise ValueError(f"per_cluster must be >= 1, got {per_cluster}")
    rng = np.random.default_rng(seed)
    sample = {}
    for cluster in sorted(set(clusters.values())):
        members = sorted(lesion for lesion, c in clusters.items() if c == cluster)
        chosen = rng.permutation(len(members))[:per_cluster]
        sample[cluster] = [members[i] for i in chosen]
    return sample


@dataclasses.dataclass(frozen=True)
class ClusterPurity:
    cluster: int
    name: str
    belongs: int
    reviewed: int
    sample_size: int
    estimate: Optional[float]
    low: Optional[float]
    high: Optional[float]
    paper: Optional[float]  # The paper's purity of the category the cluster is named after.


@dataclasses.dataclass
class Review:
    """A review of one categorizer run (`review.json`).

    Attributes:
      sample: `{cluster: [lesion_id, ...]}` to judge, in the order shown.
      names: `{cluster: name}` given so far (`MIXED` for a mixed / noisy cluster).
      answers: every answer in the order given: `{"lesion_id", "cluster",
        "belongs", "time"}`; a lesion answered twice counts by its last answer.
      reviewer: optional name of the reviewer.
      simulated: the answers come from a planted truth, not from a person.
      seed, per_cluster: how `sample` was drawn.
    """

    sample: Dict[int, List[str]]
    names: Dict[int, str] = dataclasses.field(default_factory=dict)
    answers: List[dict] = dataclasses.field(default_factory=list)
    reviewer: Optional[str] = None
    simulated: bool = False
    seed: int = 0
    per_cluster: int = PAPER_SAMPLE_PER_CLUSTER

    def name(self, cluster: int, name: str) -> None:
        if cluster not in self.sample:
            raise ValueError(f"no cluster {cluster}; the run has {sorted(self.sample)}")
        name = name.strip()
        if not name or "," in name or "\n" in name:
            raise ValueError(f"a cluster name must be non-empty, without commas or line breaks: "
                             f"{name!r}")
        self.names[cluster] = name

    def answer(self, lesion_id: str, belongs: bool, when: Optional[str] = None) -> None:
        cluster = self.cluster_of(lesion_id)
        self.answers.append({"lesion_id": lesion_id, "cluster": cluster, "belongs": bool(belongs),
                             "time": when or _now()})

    def cluster_of(self, lesion_id: str) -> int:
        for cluster, lesions in self.sample.items():
            if lesion_id in lesions:
                return cluster
        raise ValueError(f"lesion {lesion_id!r} is not in the purity sample")

    def latest(self) -> Dict[str, bool]:
        """`{lesion_id: belongs}`, each lesion's last answer."""
        return {a["lesion_id"]: a["belongs"] for a in self.answers}

    def next_unanswered(self, cluster: int) -> Optional[str]:
        done = self.latest()
        return next((lesion for lesion in self.sample[cluster] if lesion not in done), None)

    def progress(self) -> Dict[int, tuple]:
        """`{cluster: (answered, sample size)}`."""
        done = self.latest()
        return {c: (sum(lesion in done for lesion in lesions), len(lesions))
                for c, lesions in self.sample.items()}

    def to_dict(self) -> dict:
        return {"reviewer": self.reviewer, "simulated": self.simulated, "seed": self.seed,
                "per_cluster": self.per_cluster,
                "sample": {str(c): list(v) for c, v in sorted(self.sample.items())},
                "names": {str(c): n for c, n in sorted(self.names.items())},
                "answers": list(self.answers)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Review":
        return cls(sample={int(c): list(v) for c, v in data["sample"].items()},
                   names={int(c): n for c, n in data.get("names", {}).items()},
                   answers=list(data.get("answers", [])), reviewer=data.get("reviewer"),
                   simulated=bool(data.get("simulated", False)), seed=int(data.get("seed", 0)),
                   per_cluster=int(data.get("per_cluster", PAPER_SAMPLE_PER_CLUSTER)))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def save(review: Review, run_dir: str) -> None:
    """Writes `review.json` atomically (a killed process leaves the old file or the new one)."""
    atomic_file.write_atomically(os.path.join(run_dir, REVIEW_FILE),
                      json.dumps(review.to_dict(), indent=1, sort_keys=True))


def load(run_dir: str) -> Optional[Review]:
    path = os.path.join(run_dir, REVIEW_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return Review.from_dict(json.load(f))


def purity(review: Review) -> List[ClusterPurity]:
    """Per cluster: the share of its reviewed lesions judged to belong, exact 95% interval."""
    done = review.latest()
    rows = []
    for cluster, lesions in sorted(review.sample.items()):
        answered = [done[lesion] for lesion in lesions if lesion in done]
        belongs, reviewed = int(sum(answered)), len(answered)
        estimate = low = high = None
        if reviewed:
            interval = stats.binomtest(belongs, reviewed).proportion_ci(CONFIDENCE, "exact")
            estimate, low, high = belongs / reviewed, float(interval.low), float(interval.high)
        name = review.names.get(cluster, f"C{cluster}")
        rows.append(ClusterPurity(cluster, name, belongs, reviewed, len(lesions), estimate, low,
                                  high, PAPER_PURITY.get(naming.base_name(name))))
    return rows


def write_purity(review: Review, run_dir: str) -> List[ClusterPurity]:
    rows = purity(review)
    atomic_file.write_atomically(os.path.join(run_dir, PURITY_FILE), json.dumps({
        "simulated": review.simulated, "reviewer": review.reviewer, "confidence": CONFIDENCE,
        "interval": "exact (Clopper-Pearson)",
        "clusters": [dataclasses.asdict(r) for r in rows]}, indent=1))
    return rows


def simulate(review: Review, planted: Mapping[str, str]) -> int:
    """Answers every unanswered lesion of the sample from the planted truth.

    A lesion belongs to its cluster when its planted category is the one the cluster
    is named after (`naming.base_name`); a cluster named `MIXED` takes every lesion. The
    review is marked simulated. Returns the number of answers given.

    Raises:
      ValueError: a cluster without a name, or a sampled lesion the truth lacks.
    """
    unnamed = sorted(set(review.sample) - set(review.names))
    if unnamed:
        raise ValueError(f"clusters {unnamed} have no name; name them first (--names_from)")
    review.simulated = True
    done = review.latest()
    given = 0
    for cluster, lesions in sorted(review.sample.items()):
        category = naming.base_name(review.names[cluster])
        for lesion in lesions:
            if lesion in done:
                continue
            if lesion not in planted:
                raise ValueError(f"lesion {lesion!r} is not in the planted truth")
            review.answer(lesion, category == MIXED or planted[lesion] == category)
            given += 1
    return given
