"""Lesion categories for Table 1's rows: which category each evaluated lesion is in.

The grouping belongs to the test set, not to the model: Table 1 scores the
single-class and the multi-class detector on the same rows. Sources:
  * `coarse_type`: the release's coarse lesion types (1..8; `release_format.COARSE_TYPE_SHORT_NAMES`);
  * `pseudo_labels`: the categorizer's clusters (`pseudo_labels.csv`), the paper's rows;
  * `truth`: the planted categories of the synthetic PACS (`truth.csv`).
A lesion that its source does not categorise (coarse type -1, a lesion the
pseudo labels lack) goes to the row `unknown`; it is counted, never dropped.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, NamedTuple, Optional, Sequence, Tuple

from deeplesion_tf.data import release_format
from deeplesion_tf.detection import classes as classes_lib
from deeplesion_tf.evaluation import records

SOURCES = ("none", "coarse_type", "pseudo_labels", "truth")
UNKNOWN_ID = 0
UNKNOWN_NAME = "unknown"


class Categories(NamedTuple):
    """Table rows and the category of each lesion.

    Attributes:
      source: one of `SOURCES`.
      rows: `(id, name)` in the table's order; `(0, "unknown")` last when used.
      of_lesion: `{lesion_id: id}`.
    """

    source: str
    rows: Tuple[Tuple[int, str], ...]
    of_lesion: Dict[str, int]

    def category(self, lesion_id: str) -> int:
        return self.of_lesion.get(lesion_id, UNKNOWN_ID)


def _build(source: str, named: Sequence[Tuple[int, str]], of_lesion: Mapping[str, int],
           lesion_ids: Iterable[str]) -> Categories:
    lesion_ids = list(lesion_ids)
    table = {i: int(of_lesion.get(i, UNKNOWN_ID)) for i in lesion_ids}
    rows = tuple(named)
    if any(c == UNKNOWN_ID for c in table.values()):
        rows += ((UNKNOWN_ID, UNKNOWN_NAME),)
    known = {c for c, _ in named} | {UNKNOWN_ID}
    stray = sorted({c for c in table.values()} - known)
    if stray:
        raise ValueError(f"{source}: categories {stray} have no name")
    return Categories(source, rows, table)


def _lesion_ids(truths: Sequence[records.ImageTruth]):
    return [i for t in truths for i in t.lesion_ids]


def from_coarse_types(truths: Sequence[records.ImageTruth]) -> Categories:
    named = [(k, name) for k, name in enumerate(release_format.COARSE_TYPE_SHORT_NAMES, start=1)]
    of_lesion = {i: int(c) for t in truths for i, c in zip(t.lesion_ids, t.coarse_types)
                 if 1 <= int(c) <= len(named)}
    return _build("coarse_type", named, of_lesion, _lesion_ids(truths))


def from_pseudo_labels(truths: Sequence[records.ImageTruth], pseudo_labels_csv: str,
                       names_file: Optional[str] = None) -> Categories:
    spec = classes_lib.from_pseudo_labels(pseudo_labels_csv, names_file)
    named = [(k, name) for k, name in enumerate(spec.names, start=1)]
    return _build("pseudo_labels", named, spec.table, _lesion_ids(truths))


def from_truth_rows(truths: Sequence[records.ImageTruth],
                    truth_rows: Sequence[Mapping[str, str]]) -> Categories:
    """Categories of `truth.csv` rows (`lesion_id`, `category`, `category_name`)."""
    names = {int(r["category"]): r["category_name"] for r in truth_rows}
    named = sorted(names.items())
    of_lesion = {r["lesion_id"]: int(r["category"]) for r in truth_rows}
    return _build("truth", named, of_lesion, _lesion_ids(truths))
