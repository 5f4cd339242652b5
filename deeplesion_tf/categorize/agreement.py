"""Agreement between two clusterings of the same items: purity and NMI.

The categorizer (paper Sec. 2.2) stops iterating when the clustering of one
iteration agrees with the previous one; the benchmarks also score a clustering
against the planted truth. Both uses compare two integer (or any hashable)
labelings of the same `[num_items]` items, item `i` in position `i` of each.
Cluster ids are names only: renaming them changes neither score.
"""

from typing import Any, Sequence, TypedDict

import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


class Agreement(TypedDict):
    """What `agreement` returns.

    Attributes:
        purity: `purity(a, b)`, `a` the reference.
        nmi: `nmi(a, b)` (symmetric).
        contingency: `[num_labels_a, num_labels_b]` int array; entry `[i, j]` counts
            the items labelled with the `i`-th sorted distinct value of `a` and the
            `j`-th sorted distinct value of `b`.
    """

    purity: float
    nmi: float
    contingency: np.ndarray


def _as_labels(labels_true: Sequence[Any], labels_pred: Sequence[Any]):
    true = np.asarray(labels_true)
    pred = np.asarray(labels_pred)
    if true.ndim != 1 or pred.ndim != 1:
        raise ValueError(
            f"labelings must be 1-D, got shapes {true.shape} and {pred.shape}")
    if true.shape[0] != pred.shape[0]:
        raise ValueError(
            f"labelings differ in length: {true.shape[0]} true labels against "
            f"{pred.shape[0]} predicted labels")
    if true.shape[0] == 0:
        raise ValueError("labelings are empty; agreement needs at least one item")
    return true, pred


def purity(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> float:
    """Fraction of items whose predicted cluster's majority reference label is theirs.

    Each predicted cluster is assigned the reference label most common in it, and
    purity is the fraction of items that carry that label (Manning et al., IR book
    Sec. 16.3). It is asymmetric: `labels_true` is the reference. Splitting the
    reference into more predicted clusters never lowers it (one item per cluster
    scores 1.0), so read it beside NMI, which does penalise over-splitting.

    Args:
        labels_true: `[num_items]` reference labels (the planted truth, or the
            previous iteration's clusters).
        labels_pred: `[num_items]` labels of the clustering being scored.

    Returns:
        Purity in `(0, 1]`.

    Raises:
        ValueError: if the labelings are not 1-D, differ in length, or are empty.
    """
    true, pred = _as_labels(labels_true, labels_pred)
    # Rows are reference labels, columns predicted clusters: the column maxima
    # are each cluster's majority count.
    table = contingency_matrix(true, pred)
    return float(table.max(axis=0).sum() / true.shape[0])


def nmi(labels_true: Sequence[Any], labels_pred: Sequence[Any]) -> float:
    """Normalised mutual information of two labelings.

    scikit-learn's `normalized_mutual_info_score` with arithmetic normalisation,
    `I(T; P) / ((H(T) + H(P)) / 2)`, which is symmetric in its arguments. When both
    labelings put every item in one cluster scikit-learn returns 1.0.

    Args:
        labels_true: `[num_items]` labels of one clustering.
        labels_pred: `[num_items]` labels of the other.

    Returns:
        NMI in `[0, 1]`.

    Raises:
        ValueError: if the labelings are not 1-D, differ in length, or are empty.
    """
    true, pred = _as_labels(labels_true, labels_pred)
    return float(normalized_mutual_info_score(true, pred, average_method="arithmetic"))


def agreement(a: Sequence[Any], b: Sequence[Any]) -> Agreement:
    """Purity (with `a` the reference), NMI and the contingency table of two labelings.

    Args:
        a: `[num_items]` reference labels (e.g. the previous iteration's clusters).
        b: `[num_items]` labels to score (e.g. this iteration's clusters).

    Returns:
        An `Agreement` dict with `purity`, `nmi` and `contingency`.

    Raises:
        ValueError: if the labelings are not 1-D, differ in length, or are empty.
    """
    true, pred = _as_labels(a, b)
    return Agreement(purity=purity(true, pred), nmi=nmi(true, pred),
                     contingency=contingency_matrix(true, pred))
