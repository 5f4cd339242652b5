"""k-means on deep lesion features, with k chosen by model selection (paper Sec. 2.2).

The categorizer clusters VGG16 FC6/FC7 features of the lesion patches, choosing
the number of clusters k by model selection before each round of fine-tuning.
Shapes: `features` is `[num_items, num_features]` (33,000 x 4,096 for DeepLesion's
FC7), `labels` `[num_items]` ints in `[0, k)`, `centers` `[k, num_features]`.

Pipeline, per call:
  1. Normalise the features, by `normalization`:
       - "l2" (default): each feature vector to unit length, so that k-means'
         squared Euclidean distance is 2 - 2 cos(angle), i.e. cosine similarity,
         the usual metric for CNN descriptors (FC6/FC7) and insensitive to a
         patch's overall activation strength;
       - "standardize": each feature (column) to zero mean and unit variance over
         the items, so that every feature weighs the same. For pooled
         convolutional features of a randomly initialised VGG16 (a few dozen
         channel means) a few high-variance channels otherwise decide the
         partition: on the synthetic PACS, k=5 on block1 features scored purity
         0.83, NMI 0.73 against the planted categories after "l2" and 0.88, 0.80
         after "standardize" (benchmarks/BENCHMARKS.md).
  2. Optionally project onto the top `pca_dims` principal components (randomized
     SVD). The cluster structure of CNN features lives in a few dozen directions;
     dropping the rest makes every later step about 64x cheaper (4,096 -> 64 dims)
     and, on the benchmark's 33,000 x 4,096 features, changed neither the chosen
     k nor the purity (k=6, purity 0.9978 at 32, 64 and 128 dims and without PCA)
     while taking 28 s instead of 327 s (n_init=2). 64 leaves room for real
     features with more structure than the synthetic ones. `pca_dims=None`
     clusters the full vectors.
  3. For each candidate k, scikit-learn `KMeans` (Lloyd, k-means++ seeding,
     `n_init` restarts) and three internal scores of its partition:
       - silhouette (higher is better), on one fixed random subsample of
         `sample_size` items shared by every k, because the exact score is
         quadratic in the number of items (33,000^2 distances);
       - Calinski-Harabasz (higher is better), on every item;
       - Davies-Bouldin (lower is better), on every item;
       - BIC (lower is better): the Bayesian information criterion of a
         full-covariance Gaussian mixture with k components on the top
         `bic_dims` principal components, started from the k-means clusters'
         means. A model-based criterion: a cluster is worth its parameters
         when its items are better explained by a Gaussian of their own,
         which keeps groups with different spreads apart where the distance
         ratios of the other three prefer merging them.
  4. Keep the k with the best score under `criterion`.

Silhouette decides by default, chosen by measurement. On the benchmark's
synthetic FC7-like features (6 planted clusters of 8% to 28% of the items; 8,000
items, 8 seeds at each of 3 cluster separations, 1.0, 1.5, 2.0;
benchmarks/bench_kmeans.py) the planted k was found by silhouette 19 times in 24
(5, 7, 7 per separation), by Davies-Bouldin 16 (3, 6, 7) and by Calinski-Harabasz
3 (0, 0, 3). Silhouette's misses were near ones (k = 4, 5 or 7; purity against the
planted labels 0.76 to 1.0, 0.9 or more in 4 of 5), while Davies-Bouldin fell to
k = 2 five times (purity 0.46 to 0.50), and Calinski-Harabasz, whose
between/within variance ratio rewards merging neighbours, mostly chose 2. (A
smaller first run, 6,000 items and 4 seeds per separation, had Davies-Bouldin 9
in 12 against silhouette's 7; the larger run decides.) The other scores are kept
in `KSelection.scores` so a run can be audited, and any of them may decide via
`criterion`. All scores are computed in the space k-means saw (after
normalisation and PCA; BIC on its top `bic_dims` principal components, because
a full covariance in 64 dims would need more items per cluster than a few
hundred lesions give).

On the pooled block1 features of the synthetic PACS silhouette,
Calinski-Harabasz and Davies-Bouldin all chose k=3-4, merging liver with the
abdominal lesions, while BIC on 8 components chose k=5-6 on the default
100-patient PACS. BIC decided the CPU quickstart until its penalty, which grows
with the number of lesions, was seen to drift with the PACS size (k = 3 at 40
patients, 10 at 300); the quickstart now chooses k by the agreement of an
ensemble of networks (`member_agreement`), and these scores stay in its report
for the audit (benchmarks/BENCHMARKS.md, "Categorizer across PACS draws").

Determinism: the same `seed` gives the same subsample, PCA basis, k-means seeding
and therefore the same labels.
"""

import dataclasses
from typing import Iterable, NamedTuple

import numpy as np
from absl import logging
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.metrics import (calinski_harabasz_score, davies_bouldin_score,
                             pairwise_distances, silhouette_score)
from sklearn.preprocessing import normalize
from tqdm.auto import tqdm

SILHOUETTE = "silhouette"
CALINSKI_HARABASZ = "calinski_harabasz"
DAVIES_BOULDIN = "davies_bouldin"
BIC = "bic"
# Whether a larger score is better, per criterion.
HIGHER_IS_BETTER = {SILHOUETTE: True, CALINSKI_HARABASZ: True, DAVIES_BOULDIN: False,
                     BIC: False}
CRITERIA = tuple(HIGHER_IS_BETTER)

DEFAULT_CRITERION = SILHOUETTE
DEFAULT_K_VALUES = range(2, 11)
DEFAULT_SAMPLE_SIZE = 5000
DEFAULT_N_INIT = 2
DEFAULT_PCA_DIMS = 64
# Principal components the Gaussian mixture of the BIC criterion is fitted on.
DEFAULT_BIC_DIMS = 8

L2 = "l2"
STANDARDIZE = "standardize"
NORMALIZATIONS = (L2, STANDARDIZE)
DEFAULT_NORMALIZATION = L2


class Clustering(NamedTuple):
    """A k-means partition.

    Attributes:
        labels: `[num_items]` int array, the cluster of each item, in `[0, k)`.
        centers: `[k, num_features]` float array, the mean of each cluster's
            normalised input features (in the input space even when k-means ran
            after PCA, so centers stay comparable with the features).
    """

    labels: np.ndarray
    centers: np.ndarray


@dataclasses.dataclass(frozen=True)
class KSelection:
    """The outcome of `select_k`.

    Attributes:
        k: the chosen number of clusters.
        labels: `[num_items]` int array, the chosen clustering of every item.
        centers: `[k, num_features]` cluster means of the normalised inputs.
        scores: `{criterion: {k: score}}` for every criterion in `CRITERIA` and
            every candidate k.
        criterion: the criterion that chose `k`.
        labels_by_k: `{k: [num_items] labels}`, the clustering of every candidate k
            (`labels` is `labels_by_k[k]`).
    """

    k: int
    labels: np.ndarray
    centers: np.ndarray
    scores: dict[str, dict[int, float]]
    criterion: str
    labels_by_k: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)


class _Prepared(NamedTuple):
    unit: np.ndarray  # [num_items, num_features] normalised features.
    reduced: np.ndarray  # [num_items, pca_dims or num_features] what k-means sees.


def _prepare(features, pca_dims: int | None, seed: int,
             normalization: str = DEFAULT_NORMALIZATION) -> _Prepared:
    """Normalises the features (`NORMALIZATIONS`), then optionally PCA-reduces them."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of "
                         f"{NORMALIZATIONS}")
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [num_items, num_features] array, "
                         f"got shape {features.shape}")
    # float32 halves the memory and time of every step below (FC7 outputs are
    # float32 already) and is ample precision for choosing clusters.
    unit = features.astype(np.float32, copy=True)
    if normalization == L2:
        unit = normalize(unit, copy=False)
    else:
        unit -= unit.mean(axis=0)
        std = unit.std(axis=0)
        # A constant feature (a dead ReLU channel) stays 0 rather than NaN.
        unit /= np.where(std > 0, std, 1.0)
    # Keeping every component would only rotate and shift the data, which changes
    # no k-means partition, so there is nothing to gain from the SVD.
    if pca_dims is None or pca_dims >= min(unit.shape):
        return _Prepared(unit, unit)
    logging.debug("PCA %d -> %d dims on %d items", unit.shape[1], pca_dims, unit.shape[0])
    reduced = PCA(n_components=pca_dims, svd_solver="randomized",
                  random_state=seed).fit_transform(unit)
    return _Prepared(unit, reduced)


def _centers(unit: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """`[k, num_features]` means of the normalised features in each cluster."""
    centers = np.zeros((k, unit.shape[1]), dtype=unit.dtype)
    # A pass per cluster: np.add.at is unbuffered and far slower on 33,000 x 4,096.
    for c in range(k):
        members = labels == c
        if members.any():
            centers[c] = unit[members].mean(axis=0)
    return centers


def _kmeans(reduced: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, algorithm="lloyd",
                   random_state=seed)
    return model.fit_predict(reduced).astype(np.int64)


def _bic_space(reduced: np.ndarray, bic_dims: int, seed: int) -> np.ndarray:
    """`[num_items, min(bic_dims, dims)]`: the top principal components of `reduced`."""
    if bic_dims < 1:
        raise ValueError(f"bic_dims must be >= 1, got {bic_dims}")
    dims = min(bic_dims, reduced.shape[0])
    if dims >= reduced.shape[1]:
        return reduced
    return PCA(n_components=dims, svd_solver="full", random_state=seed).fit_transform(reduced)


# Covariance regularisation of a refit when a component's covariance is singular
# (a cluster of near-identical items); scikit-learn's default is 1e-6.
_SINGULAR_REFIT_REG_COVAR = 1e-3


def _bic(space: np.ndarray, labels: np.ndarray, k: int, seed: int) -> float:
    """BIC of a full-covariance k-Gaussian mixture started from the clusters of `labels`.

    A fit that fails on a singular covariance is refitted once with a larger
    covariance regularisation (`_SINGULAR_REFIT_REG_COVAR`), with a warning
    naming k, rather than aborting the whole model selection.
    """
    means = np.stack([space[labels == c].mean(axis=0) if np.any(labels == c)
                      else space.mean(axis=0) for c in range(k)])
    try:
        mixture = GaussianMixture(n_components=k, covariance_type="full", means_init=means,
                                  random_state=seed).fit(space)
    except ValueError as error:
        logging.warning("k=%d: Gaussian mixture singular (%s); refitting with reg_covar=%g",
                        k, str(error).split(".")[0], _SINGULAR_REFIT_REG_COVAR)
        mixture = GaussianMixture(n_components=k, covariance_type="full", means_init=means,
                                  reg_covar=_SINGULAR_REFIT_REG_COVAR,
                                  random_state=seed).fit(space)
    return float(mixture.bic(space))


def cluster(features, k: int, seed: int = 0, *, n_init: int = DEFAULT_N_INIT,
            pca_dims: int | None = DEFAULT_PCA_DIMS,
            normalization: str = DEFAULT_NORMALIZATION) -> Clustering:
    """k-means with a fixed k, after the same normalisation and PCA as `select_k`.

    Args:
        features: `[num_items, num_features]` float array (e.g. VGG16 FC7 outputs).
        k: number of clusters, `1 <= k <= num_items`.
        seed: seeds the PCA and k-means; the same seed gives the same labels.
        n_init: k-means restarts; the one with the lowest inertia is kept.
        pca_dims: principal components kept before clustering; None keeps all.
        normalization: how the features are normalised first, one of
            `NORMALIZATIONS` (see the module docstring).

    Returns:
        A `Clustering` of `labels` `[num_items]` and `centers` `[k, num_features]`.

    Raises:
        ValueError: if `features` is not a non-empty 2-D array, `k` is out of range
            or `normalization` unknown.
    """
    unit, reduced = _prepare(features, pca_dims, seed, normalization)
    if not 1 <= k <= reduced.shape[0]:
        raise ValueError(f"k={k} clusters need between 1 and as many items (lesions) as there "
                         f"are; got {reduced.shape[0]}")
    labels = _kmeans(reduced, k, seed, n_init)
    return Clustering(labels=labels, centers=_centers(unit, labels, k))


def select_k(features, k_values: Iterable[int] = DEFAULT_K_VALUES, *,
             criterion: str = DEFAULT_CRITERION, seed: int = 0,
             sample_size: int = DEFAULT_SAMPLE_SIZE, n_init: int = DEFAULT_N_INIT,
             pca_dims: int | None = DEFAULT_PCA_DIMS,
             normalization: str = DEFAULT_NORMALIZATION,
             bic_dims: int = DEFAULT_BIC_DIMS) -> KSelection:
    """Clusters `features` with k-means for each candidate k and keeps the best k.

    Args:
        features: `[num_items, num_features]` float array (e.g. VGG16 FC7 outputs).
        k_values: candidate numbers of clusters, each in `[2, num_items - 1]`
            (the silhouette and Davies-Bouldin scores need at least two clusters
            and one cluster with two items).
        criterion: which score chooses k, one of `CRITERIA`.
        seed: seeds the silhouette subsample, PCA and k-means; the same seed gives
            the same result.
        sample_size: items in the silhouette subsample (all items if fewer).
        n_init: k-means restarts per k; the one with the lowest inertia is kept.
        pca_dims: principal components kept before clustering; None keeps all.
        normalization: how the features are normalised first, one of
            `NORMALIZATIONS` (see the module docstring).
        bic_dims: principal components of the k-means space on which the BIC's
            Gaussian mixture is fitted (fewer if the space has fewer dims or
            items). Its full covariances need clusters of well over `bic_dims`
            items; smaller ones get near-singular covariances and a BIC that
            favours them.

    Returns:
        A `KSelection`: the chosen k, its labels and centers, and every score.

    Raises:
        ValueError: on an unknown criterion, no or out-of-range candidate k, or
            features that are not a non-empty 2-D array, or an unknown
            normalization.
    """
    if criterion not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    k_values = sorted(set(int(k) for k in k_values))
    unit, reduced = _prepare(features, pca_dims, seed, normalization)
    num_items = reduced.shape[0]
    if not k_values or k_values[0] < 2:
        raise ValueError(f"candidate k values {k_values} must be non-empty and at least 2")
    if num_items < 3:
        raise ValueError(f"choosing k needs at least 3 items (lesions) to compare k=2 with "
                         f"more; got {num_items}")
    if k_values[-1] >= num_items:
        raise ValueError(f"candidate k values {k_values} must be below the {num_items} items "
                         f"(lesions): at most k={num_items - 1}")

    # One subsample and one distance matrix for every k, so the silhouettes of
    # different k are computed on the same items and the distances only once.
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(num_items, size=min(sample_size, num_items), replace=False))
    sample_distances = pairwise_distances(reduced[sample], n_jobs=None)
    bic_space = _bic_space(reduced, bic_dims, seed)

    scores = {name: {} for name in CRITERIA}
    all_labels = {}
    for k in tqdm(k_values, desc="k-means model selection", unit="k"):
        labels = _kmeans(reduced, k, seed, n_init)
        all_labels[k] = labels
        # A subsample can miss small clusters; silhouette needs two labels in it.
        sample_labels = labels[sample]
        scores[SILHOUETTE][k] = (
            float(silhouette_score(sample_distances, sample_labels, metric="precomputed"))
            if len(np.unique(sample_labels)) > 1 else float("nan"))
        scores[CALINSKI_HARABASZ][k] = float(calinski_harabasz_score(reduced, labels))
        scores[DAVIES_BOULDIN][k] = float(davies_bouldin_score(reduced, labels))
        scores[BIC][k] = _bic(bic_space, labels, k, seed)
        logging.info("k=%d: silhouette %.4f, Calinski-Harabasz %.1f, Davies-Bouldin %.4f, "
                     "BIC %.1f", k, scores[SILHOUETTE][k], scores[CALINSKI_HARABASZ][k],
                     scores[DAVIES_BOULDIN][k], scores[BIC][k])

    by_k = np.array([scores[criterion][k] for k in k_values])
    if np.all(np.isnan(by_k)):
        raise ValueError(f"criterion {criterion!r} is undefined for every candidate k")
    # nanargmax/nanargmin return the first best, so ties go to the smaller k.
    best = np.nanargmax(by_k) if HIGHER_IS_BETTER[criterion] else np.nanargmin(by_k)
    k = k_values[int(best)]
    logging.info("chose k=%d by %s (%.4f)", k, criterion, by_k[best])
    return KSelection(k=k, labels=all_labels[k], centers=_centers(unit, all_labels[k], k),
                      scores=scores, criterion=criterion, labels_by_k=all_labels)
