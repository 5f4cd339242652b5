"""k-means with model selection on blobs whose number and membership are known."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from deeplesion_tf.categorize import agreement
from deeplesion_tf.categorize import kmeans

NUM_BLOBS = 5


@pytest.fixture(scope="module")
def blobs():
    # Unequal blob sizes, as lesion categories are; the centers sit far apart
    # relative to the unit spread, so the planted partition is the only sensible one.
    features, truth = make_blobs(n_samples=[120, 90, 60, 50, 40], n_features=64,
                                 cluster_std=1.0, center_box=(-10, 10), random_state=3)
    # Non-negative like ReLU outputs; the shift keeps the blobs apart after
    # L2 normalisation.
    return np.maximum(features + 10.0, 0.0).astype(np.float32), truth


@pytest.fixture(scope="module")
def selection(blobs):
    features, _ = blobs
    return kmeans.select_k(features, range(2, 9), seed=0, sample_size=200, pca_dims=16)


def test_select_k_finds_the_planted_blobs(blobs, selection):
    _, truth = blobs
    assert selection.k == NUM_BLOBS
    assert selection.criterion == kmeans.SILHOUETTE
    assert agreement.purity(truth, selection.labels) == 1.0
    assert agreement.nmi(truth, selection.labels) == pytest.approx(1.0)
    # The chosen k is where the silhouette peaks.
    sil = selection.scores[kmeans.SILHOUETTE]
    assert max(sil, key=sil.get) == NUM_BLOBS


def test_scores_table_holds_every_k_and_criterion(selection):
    assert set(selection.scores) == set(kmeans.CRITERIA)
    for name in kmeans.CRITERIA:
        assert sorted(selection.scores[name]) == list(range(2, 9))
        assert all(np.isfinite(v) for v in selection.scores[name].values())
    sil = selection.scores[kmeans.SILHOUETTE]
    assert all(-1.0 <= v <= 1.0 for v in sil.values())
    # The other two criteria agree on these clean blobs.
    ch = selection.scores[kmeans.CALINSKI_HARABASZ]
    db = selection.scores[kmeans.DAVIES_BOULDIN]
    assert max(ch, key=ch.get) == NUM_BLOBS
    assert min(db, key=db.get) == NUM_BLOBS


def test_centers_are_cluster_means_of_normalised_features(blobs, selection):
    features, _ = blobs
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert selection.centers.shape == (NUM_BLOBS, features.shape[1])
    for c in range(NUM_BLOBS):
        np.testing.assert_allclose(selection.centers[c],
                                   unit[selection.labels == c].mean(axis=0), rtol=1e-5,
                                   atol=1e-6)


def test_same_seed_same_labels(blobs, selection):
    features, _ = blobs
    again = kmeans.select_k(features, range(2, 9), seed=0, sample_size=200, pca_dims=16)
    np.testing.assert_array_equal(again.labels, selection.labels)
    assert again.scores == selection.scores


def test_criterion_can_be_chosen(blobs):
    features, _ = blobs
    by_db = kmeans.select_k(features, [3, 5, 7], criterion=kmeans.DAVIES_BOULDIN,
                            sample_size=200, pca_dims=16)
    assert by_db.k == NUM_BLOBS
    assert by_db.criterion == kmeans.DAVIES_BOULDIN
    assert sorted(by_db.scores[kmeans.DAVIES_BOULDIN]) == [3, 5, 7]


def test_fixed_k_cluster(blobs):
    features, truth = blobs
    labels, centers = kmeans.cluster(features, NUM_BLOBS, seed=1, pca_dims=16)
    assert agreement.purity(truth, labels) == 1.0
    assert sorted(np.bincount(labels)) == [40, 50, 60, 90, 120]
    assert centers.shape == (NUM_BLOBS, 64)
    # Two clusters for five blobs: each holds whole blobs, so NMI is below 1 but
    # purity against the two-cluster labeling (truth as prediction) is 1.
    two = kmeans.cluster(features, 2, seed=1, pca_dims=16)
    assert agreement.purity(two.labels, truth) == 1.0
    assert agreement.purity(truth, two.labels) < 1.0


def test_pca_off_gives_the_same_partition(blobs, selection):
    features, _ = blobs
    full = kmeans.cluster(features, NUM_BLOBS, seed=0, pca_dims=None)
    assert agreement.nmi(selection.labels, full.labels) == pytest.approx(1.0)


def test_bad_arguments_raise(blobs):
    features, _ = blobs
    with pytest.raises(ValueError, match="unknown criterion"):
        kmeans.select_k(features, criterion="elbow")
    with pytest.raises(ValueError, match=r"must be non-empty and lie in \[2, 359\]"):
        kmeans.select_k(features, [1, 3])
    with pytest.raises(ValueError, match="non-empty"):
        kmeans.select_k(np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"k=0 must lie in \[1, 360\]"):
        kmeans.cluster(features, 0)
