"""Purity and NMI against hand-worked labelings."""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from deeplesion_tf.categorize import agreement


def test_identical_labelings_agree_fully():
    labels = [0, 0, 1, 1, 2, 2, 2]
    assert agreement.purity(labels, labels) == 1.0
    assert agreement.nmi(labels, labels) == pytest.approx(1.0)


def test_renamed_clusters_still_agree_fully():
    truth = [0, 0, 1, 1, 2, 2, 2]
    # Same partition, cluster names permuted 0->7, 1->3, 2->5 (and not 0-based).
    renamed = [7, 7, 3, 3, 5, 5, 5]
    assert agreement.purity(truth, renamed) == 1.0
    assert agreement.purity(renamed, truth) == 1.0
    assert agreement.nmi(truth, renamed) == pytest.approx(1.0)


def test_worked_two_by_three_example():
    truth = ["a"] * 4 + ["b"] * 6
    pred = ["x", "x", "x", "y",    # the four a's
            "x", "y", "y", "z", "z", "z"]  # the six b's
    # Cluster x holds a,a,a,b -> majority a, 3 right; y holds a,b,b -> majority b, 2
    # right; z holds b,b,b -> 3 right. Purity = (3 + 2 + 3) / 10 = 0.8.
    assert agreement.purity(truth, pred) == pytest.approx(0.8)
    # Reversed, the reference is pred: a holds x,x,x,y -> 3; b holds x,y,y,z,z,z
    # -> z, 3. Purity = 6 / 10: the measure is asymmetric.
    assert agreement.purity(pred, truth) == pytest.approx(0.6)
    result = agreement.agreement(truth, pred)
    np.testing.assert_array_equal(result["contingency"], [[3, 1, 0], [1, 2, 3]])
    assert result["purity"] == pytest.approx(0.8)
    # Arithmetic NMI worked from the table: I(T;P) / ((H(T) + H(P)) / 2), in nats.
    joint = np.array([[3, 1, 0], [1, 2, 3]]) / 10
    pt, pp = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    mutual = np.sum(joint[nz] * np.log(joint[nz] / np.outer(pt, pp)[nz]))
    entropy = lambda p: -np.sum(p * np.log(p))  # noqa: E731
    expected = mutual / ((entropy(pt) + entropy(pp)) / 2)
    assert result["nmi"] == pytest.approx(expected)
    assert agreement.nmi(pred, truth) == pytest.approx(expected)  # NMI is symmetric.


def test_one_item_per_cluster_is_pure_but_not_informative():
    truth = [0, 0, 1, 1]
    singletons = [0, 1, 2, 3]
    # Every cluster trivially has a majority of one, so purity cannot see
    # over-splitting. NMI can: I(T;P) = H(T) = 1 bit, H(P) = 2 bits, so
    # NMI = 1 / ((1 + 2) / 2) = 2/3.
    assert agreement.purity(truth, singletons) == 1.0
    assert agreement.nmi(truth, singletons) == pytest.approx(2 / 3)


def test_nmi_matches_scikit_learn_on_random_labelings():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, 5, size=200)
        b = rng.integers(0, 7, size=200)
        assert agreement.nmi(a, b) == pytest.approx(
            normalized_mutual_info_score(a, b, average_method="arithmetic"))
    # Independent random labelings share almost no information.
    assert agreement.nmi(a, b) < 0.1


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="differ in length: 3 true labels against 2"):
        agreement.purity([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        agreement.nmi([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        agreement.agreement([0], [0, 1])


def test_empty_and_non_vector_labelings_raise():
    with pytest.raises(ValueError, match="empty"):
        agreement.purity([], [])
    with pytest.raises(ValueError, match="1-D"):
        agreement.nmi([[0, 1]], [[0, 1]])
