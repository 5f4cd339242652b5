"""k chosen by how well an ensemble of networks agrees on the clusters.

Without pretrained weights the categorizer encodes each patch with several
randomly initialised VGG16s (the members). Each member is a different random
view of the same patches: what is a category should be found by every view,
what is an accident of one network's filters should not. For each candidate k:

  1. the reference clusters are k-means on all members' features concatenated
     (the clusters the loop keeps, steadier than any one member's);
  2. every member's own features are clustered with k-means too;
  3. each reference cluster's stability is the Jaccard index of its best match
     among a member's clusters, averaged over the members;
  4. the criterion is the mean stability over the reference clusters; the k
     with the highest wins.

This is the clusterwise stability of Hennig ("Cluster-wise assessment of
cluster stability", Computational Statistics & Data Analysis 52, 2007; the
`clusterboot` of R's fpc), with a member's view of the patches in place of a
bootstrap resample. Per cluster rather than per pair of items: when k is one too
many, one true category is cut in two in a different place by every member, and
those two clusters' low Jaccard shows it, where an average over all pairs of
items (the adjusted Rand index between members, kept in the scores as
`pairwise_ari`) is dominated by the large clusters that stay put.

Why not the criteria of `kmeans`: on the synthetic PACS (benchmarks/BENCHMARKS.md,
"Categorizer across PACS draws") BIC's penalty grows with the number of lesions,
so it chose k = 3 at 40 patients and k = 10 at 300; silhouette chose 2-4. A
Jaccard index is a proportion of items, so the criterion neither grows nor
shrinks with the number of lesions.
"""

from __future__ import annotations

import itertools
from typing import Dict, Iterable, NamedTuple, Optional, Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score

from deeplesion_tf.categorize import kmeans

AGREEMENT = "agreement"
PAIRWISE_ARI = "pairwise_ari"
# Principal components of each member's features it is clustered on: a member's
# pooled block1 has 48 features (16 channels x 3 crops) at the CPU preset;
# 16 components keep its structure and make every k-means cheap.
DEFAULT_MEMBER_PCA_DIMS = 16


class Agreement(NamedTuple):
    """The members' agreement at each candidate k.

    Attributes:
      mean: `{k: mean clusterwise stability}` (the criterion, in [0, 1]).
      standard_error: `{k: its standard error over the members}`.
      pairwise_ari: `{k: mean adjusted Rand index between the members' partitions}`.
      labels: `{k: [num_items] reference clusters}` (k-means on all features).
    """

    mean: dict
    standard_error: dict
    pairwise_ari: dict
    labels: dict


def best_match_jaccard(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`[clusters of reference]`: each cluster's highest Jaccard index with a cluster of `other`."""
    reference, other = np.asarray(reference), np.asarray(other)
    clusters = np.unique(reference)
    best = np.zeros(len(clusters))
    for i, c in enumerate(clusters):
        inside = reference == c
        for d in np.unique(other[inside]):  # A cluster with no overlap scores 0.
            theirs = other == d
            best[i] = max(best[i], np.sum(inside & theirs) / np.sum(inside | theirs))
    return best


def member_agreement(members: Sequence[np.ndarray], k_values: Iterable[int], *, seed: int = 0,
                     normalization: str = kmeans.DEFAULT_NORMALIZATION,
                     pca_dims: int = DEFAULT_MEMBER_PCA_DIMS,
                     n_init: int = kmeans.DEFAULT_N_INIT,
                     references: Optional[Dict[int, np.ndarray]] = None) -> Agreement:
    """The clusterwise stability of the concatenated features' clusters across members, per k.

    Args:
      members: two or more `[num_items, num_features_m]` arrays, the same items in
        the same order.
      k_values: candidate numbers of clusters, each in `[2, num_items - 1]`.
      seed: seeds the PCA and k-means.
      normalization: as `kmeans.cluster`.
      pca_dims: components each member is reduced to before its own k-means.
      n_init: k-means restarts.
      references: `{k: labels}` of k-means on the concatenated features, when the
        caller has them already (`kmeans.select_k(...).labels_by_k`, same seed,
        normalisation and n_init); computed here for the k they lack.

    Raises:
      ValueError: fewer than two members, members of different lengths, or a k
        out of range.
    """
    if len(members) < 2:
        raise ValueError(f"agreement needs at least 2 ensemble members, got {len(members)}")
    sizes = {len(m) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"every member must encode the same items; got lengths {sorted(sizes)}")
    num_items = sizes.pop()
    k_values = sorted(set(int(k) for k in k_values))
    if not k_values or k_values[0] < 2 or k_values[-1] >= num_items:
        raise ValueError(f"candidate k values {k_values} must lie in [2, {num_items - 1}] for "
                         f"{num_items} items (lesions)")
    features = np.concatenate(members, axis=1)
    mean, standard_error, pairwise_ari, labels = {}, {}, {}, {}
    for k in k_values:
        reference = (references[k] if references and k in references else
                     kmeans.cluster(features, k, seed=seed, n_init=n_init,
                                    normalization=normalization).labels)
        partitions = [kmeans.cluster(m, k, seed=seed, n_init=n_init, pca_dims=pca_dims,
                                     normalization=normalization).labels for m in members]
        # [members, reference clusters]
        stability = np.stack([best_match_jaccard(reference, p) for p in partitions])
        per_member = stability.mean(axis=1)
        mean[k] = float(per_member.mean())
        standard_error[k] = float(per_member.std(ddof=1) / np.sqrt(len(per_member)))
        pairwise_ari[k] = float(np.mean([adjusted_rand_score(a, b) for a, b in
                                         itertools.combinations(partitions, 2)]))
        labels[k] = reference
    return Agreement(mean, standard_error, pairwise_ari, labels)


def best_k(agreement: Agreement) -> int:
    """The k of the highest mean agreement; a tie goes to the smaller k."""
    return min(agreement.mean, key=lambda k: (-agreement.mean[k], k))


def margin(agreement: Agreement) -> dict:
    """How sure the choice is: the best k, the runner-up, and the gap in standard errors.

    Returns:
      `{"k", "runner_up", "gap", "gap_in_standard_errors"}`; the gap is in ARI, and
      in units of the standard error of the difference of the two means (the
      pairs treated as independent); None entries when only one k was tried.
    """
    k = best_k(agreement)
    others = {c: v for c, v in agreement.mean.items() if c != k}
    if not others:
        return {"k": k, "runner_up": None, "gap": None, "gap_in_standard_errors": None}
    runner_up = min(others, key=lambda c: (-others[c], c))
    gap = agreement.mean[k] - agreement.mean[runner_up]
    se = float(np.hypot(agreement.standard_error[k], agreement.standard_error[runner_up]))
    return {"k": k, "runner_up": runner_up, "gap": gap,
            "gap_in_standard_errors": gap / se if se > 0 else None}
