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
    with pytest.raises(ValueError, match=r"candidate k values \[1, 3\] must be non-empty and "
                       r"at least 2"):
        kmeans.select_k(features, [1, 3])
    with pytest.raises(ValueError, match=r"must be below the 360 items \(lesions\): at most "
                       r"k=359"):
        kmeans.select_k(features, [2, 360])
    with pytest.raises(ValueError, match="non-empty"):
        kmeans.select_k(np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"k=0 clusters need between 1 and as many items "
                       r"\(lesions\) as there are; got 360"):
        kmeans.cluster(features, 0)


@pytest.mark.parametrize("num_items", [1, 2])
def test_fewer_lesions_than_a_choice_of_k_needs_says_so(num_items):
    features = np.random.default_rng(0).normal(size=(num_items, 8))
    with pytest.raises(ValueError, match=rf"choosing k needs at least 3 items \(lesions\) to "
                       rf"compare k=2 with more; got {num_items}"):
        kmeans.select_k(features, [2, 3], pca_dims=None)


def test_standardize_weighs_every_feature_alike():
    # Two groups told apart by a small-scale feature; a large-scale feature is
    # noise. After L2 normalisation the noise dominates every vector's direction;
    # standardising gives both features unit variance, and the groups separate.
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 40)
    features = np.stack([rng.normal(500.0, 150.0, 80),
                         1.0 + truth + rng.normal(0.0, 0.05, 80)], axis=1)
    standardized = kmeans.cluster(features, 2, normalization=kmeans.STANDARDIZE)
    assert agreement.purity(truth, standardized.labels) == 1.0
    # Centers are the cluster means of the z-scored features: the second
    # feature's two values are -1 and +1 (equal groups), the noise's mean about 0.
    np.testing.assert_allclose(np.sort(standardized.centers[:, 1]), [-1.0, 1.0], atol=0.01)
    l2 = kmeans.cluster(features, 2, normalization=kmeans.L2)
    assert agreement.purity(truth, l2.labels) < 0.8
    with pytest.raises(ValueError, match="normalization"):
        kmeans.cluster(features, 2, normalization="minmax")


def test_bic_criterion_finds_sub_blobs_that_one_component_cannot_see():
    # Two far-apart groups, each two blobs 6 standard deviations apart along y.
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [20.0, 0.0, 20.0], [20.0, 3.0, 20.0]])
    truth = np.repeat(np.arange(4), 60)
    features = centers[truth] + rng.normal(0.0, 0.5, (240, 3))
    by_bic = kmeans.select_k(features, range(2, 7), criterion=kmeans.BIC, pca_dims=None,
                             normalization=kmeans.STANDARDIZE, sample_size=240)
    assert by_bic.k == 4 and by_bic.criterion == kmeans.BIC
    assert agreement.purity(truth, by_bic.labels) > 0.98
    bic = by_bic.scores[kmeans.BIC]
    assert min(bic, key=bic.get) == 4 and bic[4] < bic[2] - 20.0
    # On the top principal component alone (x and z: the two groups) each
    # group is one Gaussian, so the mixture's BIC prefers two clusters.
    one_dim = kmeans.select_k(features, range(2, 7), criterion=kmeans.BIC, pca_dims=None,
                              normalization=kmeans.STANDARDIZE, sample_size=240, bic_dims=1)
    assert one_dim.k == 2
    assert agreement.purity(one_dim.labels, truth) == 1.0
    with pytest.raises(ValueError, match="bic_dims"):
        kmeans.select_k(features, [2, 3], criterion=kmeans.BIC, bic_dims=0)


def test_bic_refits_a_singular_mixture_with_more_regularisation(monkeypatch):
    from sklearn.mixture import GaussianMixture

    calls = []
    original_fit = GaussianMixture.fit

    def fit(self, data):
        calls.append(self.reg_covar)
        if len(calls) == 1:
            raise ValueError("Fitting the mixture model failed because some components have "
                             "ill-defined empirical covariance. Try to decrease the number of "
                             "components, or increase reg_covar.")
        return original_fit(self, data)

    monkeypatch.setattr(GaussianMixture, "fit", fit)
    rng = np.random.default_rng(0)
    space = np.concatenate([rng.normal(size=(30, 4)) + 6, rng.normal(size=(30, 4)) - 6])
    labels = np.repeat([0, 1], 30)
    value = kmeans._bic(space, labels, 2, seed=0)
    assert calls == [1e-6, kmeans._SINGULAR_REFIT_REG_COVAR]
    assert np.isfinite(value)
