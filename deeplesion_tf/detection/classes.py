"""The detector's classes: one lesion class, the categorizer's clusters, or coarse types.

Class 0 is always the background; lesion classes are 1..K. A `ClassSpec`
holds the K names (short, as the figures print them) and the table that
`detector_pipeline.make_detector_dataset` takes (`{lesion_id: class}`, or None
for a single class). It is written into the model directory as
`classes.json`, so that evaluation and export name the classes as training did.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

from deeplesion_tf.data import label_files
from deeplesion_tf.data import release_format

CLASSES_FILE = "classes.json"
SOURCES = ("single", "pseudo_labels", "coarse_type")


class ClassSpec(NamedTuple):
    """K lesion classes.

    Attributes:
      source: one of `SOURCES`.
      names: K short names, `names[k - 1]` for class k.
      table: `{lesion_id: class}` with classes 1..K, or None (every lesion is class 1).
    """

    source: str
    names: Tuple[str, ...]
    table: Optional[Dict[str, int]]

    @property
    def num_classes(self) -> int:
        return len(self.names)


def single_class() -> ClassSpec:
    return ClassSpec("single", ("lesion",), None)


def from_pseudo_labels(pseudo_labels_csv: str, names_file: Optional[str] = None) -> ClassSpec:
    """Classes from `bin/categorize_lesions`' `pseudo_labels.csv` (`lesion_id,cluster`).

    Cluster c is class c (clusters are numbered from 1). Names come from the
    names file (`cluster,name`, as `bin/categorize_lesions --names` takes it), else
    `C1`, `C2`, ...

    Raises:
      ValueError: an empty file, a cluster below 1, or a names file that
        misses a cluster.
    """
    table = label_files.read_pseudo_labels(pseudo_labels_csv)
    num_classes = max(table.values())
    names = {c: f"C{c}" for c in range(1, num_classes + 1)}
    if names_file:
        given = label_files.read_names(names_file)
        missing = sorted(set(names) - set(given))
        if missing:
            raise ValueError(f"{names_file} names no cluster {missing}")
        names.update({c: given[c] for c in names})
    return ClassSpec("pseudo_labels", tuple(names[c] for c in sorted(names)), table)


def from_coarse_types(lesions: Iterable[Tuple[str, int]]) -> ClassSpec:
    """Classes from the release's coarse lesion types (1..8) of `(lesion_id, type)` pairs.

    Raises:
      ValueError: a lesion without a known type (-1 in the release's train
        split), naming how many and a few of them; nothing is dropped silently.
    """
    table, unknown = {}, []
    for lesion_id, coarse_type in lesions:
        if not 1 <= int(coarse_type) <= len(release_format.COARSE_TYPE_SHORT_NAMES):
            unknown.append(lesion_id)
        table[lesion_id] = int(coarse_type)
    if unknown:
        raise ValueError(f"{len(unknown)} of {len(table)} lesions have no coarse type "
                         f"(e.g. {unknown[:5]}); the release labels only part of its "
                         "validation and test splits, so train on a split that has them")
    if not table:
        raise ValueError("no lesions")
    return ClassSpec("coarse_type", release_format.COARSE_TYPE_SHORT_NAMES, table)


def write(spec: ClassSpec, model_dir: str) -> None:
    """Writes `classes.json` (source and names; the table stays with its source)."""
    with open(os.path.join(model_dir, CLASSES_FILE), "w") as f:
        json.dump({"source": spec.source, "names": list(spec.names)}, f, indent=2)


def read_names(model_dir: str) -> List[str]:
    """The K class names a model was trained with (from `classes.json`).

    Raises:
      FileNotFoundError: no `classes.json` in `model_dir`.
    """
    with open(os.path.join(model_dir, CLASSES_FILE)) as f:
        return list(json.load(f)["names"])
