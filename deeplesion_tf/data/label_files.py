"""The categorizer's two label files, read and written in one place.

  pseudo_labels.csv  `lesion_id,cluster`, clusters numbered from 1, sorted by lesion id
                     (`bin/categorize_lesions` writes it; `bin/train_detector
                     --classes=pseudo_labels` and `bin/evaluate_detector` read it).
  names.csv          `cluster,name` (header optional), e.g. `1,LV`: a name per cluster,
                     written by a reviewer or `bin/quickstart`, read as `--class_names`.
"""

from __future__ import annotations

import csv
import io
from typing import Dict, Mapping, Sequence

import numpy as np

from deeplesion_tf.data import atomic_file

PSEUDO_LABELS_FILE = "pseudo_labels.csv"


def write_pseudo_labels(path: str, lesion_ids: Sequence[str], labels: np.ndarray) -> None:
    """`lesion_id,cluster` from 0-based `labels`: clusters 1..k, sorted by lesion id."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lesion_id", "cluster"])
        for lesion_id, label in sorted(zip(lesion_ids, np.asarray(labels).tolist())):
            writer.writerow([lesion_id, int(label) + 1])


def read_pseudo_labels(path: str) -> Dict[str, int]:
    """`{lesion_id: cluster}` of a `pseudo_labels.csv` (clusters from 1).

    Raises:
      ValueError: a cluster below 1 or not an integer, or a file with no lesions,
        naming the file and line.
    """
    table: Dict[str, int] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                cluster = int(row["cluster"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{line}: expected 'lesion_id,cluster', got {row}") from e
            if cluster < 1:
                raise ValueError(f"{path}:{line}: cluster {cluster} < 1")
            table[row["lesion_id"]] = cluster
    if not table:
        raise ValueError(f"{path} holds no lesions")
    return table


def read_names(path: str) -> Dict[int, str]:
    """A names file `cluster,name` (clusters from 1), e.g. `1,LV`.

    Raises:
      ValueError: a row that is not `integer,name`, naming the file and row.
    """
    names = {}
    with open(path, newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or (number == 1 and row[0].strip().lower() == "cluster"):
                continue
            try:
                cluster, name = int(row[0]), row[1].strip()
            except (ValueError, IndexError) as e:
                raise ValueError(f"{path} row {number}: expected 'cluster,name', got {row}") from e
            names[cluster] = name
    return names


def write_names(path: str, names: Mapping[int, str]) -> None:
    """Writes a names file `cluster,name`, as `read_names` reads it.

    Through a temporary file and a rename: the review page rewrites it on every name
    given, and a process killed meanwhile must leave the old file or the new one.
    """
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["cluster", "name"])
    for cluster, name in sorted(names.items()):
        writer.writerow([cluster, name])
    atomic_file.write_atomically(path, text.getvalue())
