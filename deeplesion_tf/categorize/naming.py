"""Naming clusters from a reference labelling (what a reviewer does with the montages).

In the paper a radiologist named the clusters after looking at their patches.
On the synthetic PACS the planted categories of `truth.csv` stand in for that
review: each cluster takes the short name (LV, LN, AB, CL, MX) most of its
lesions carry. The categorizer itself never reads them.
"""

from __future__ import annotations

import collections
import csv
import re
from typing import Dict, Mapping


def majority_names(clusters: Mapping[str, int], reference: Mapping[str, str]) -> Dict[int, str]:
    """`{cluster: name}`: the reference name most lesions of the cluster have.

    Ties go to the alphabetically first name; a name taken by an earlier
    cluster gets a number (`AB`, `AB2`), so names stay unique. Lesions the
    reference lacks count as "?".

    Args:
      clusters: `{lesion_id: cluster}`.
      reference: `{lesion_id: name}`.
    """
    votes = collections.defaultdict(collections.Counter)
    for lesion_id, cluster in clusters.items():
        votes[int(cluster)][reference.get(lesion_id, "?")] += 1
    names, used = {}, collections.Counter()
    for cluster in sorted(votes):
        counts = votes[cluster]
        majority = min(counts, key=lambda name: (-counts[name], name))
        used[majority] += 1
        names[cluster] = majority if used[majority] == 1 else f"{majority}{used[majority]}"
    return names


def base_name(name: str) -> str:
    """A majority name without the number `majority_names` gave a repeat: `AB2` -> `AB`."""
    return re.sub(r"\d+$", "", name)


def read_column(path: str, key: str, value: str) -> Dict[str, str]:
    """`{row[key]: row[value]}` of a CSV file."""
    with open(path, newline="") as f:
        return {row[key]: row[value] for row in csv.DictReader(f)}

