"""k chosen by the ensemble members' agreement, and how sure the report says it was."""

import numpy as np
import pytest

from deeplesion_tf.categorize import confidence
from deeplesion_tf.categorize import member_agreement


def test_best_match_jaccard_by_hand():
    # Cluster 0 = {0, 1}: best match {0, 1, 2} -> 2/3. Cluster 1 = {2, 3}: best {3} -> 1/2.
    assert member_agreement.best_match_jaccard([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(
        [2 / 3, 1 / 2])
    assert member_agreement.best_match_jaccard([1, 1, 0], [5, 5, 7]).tolist() == [1.0, 1.0]


def _views(num_members=3, per_blob=40, blobs=4, seed=0):
    """Members: different random linear views (plus noise) of the same 4 planted blobs."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(blobs), per_blob)
    centres = rng.normal(0, 6, (blobs, 5))
    latent = centres[truth] + rng.normal(0, 1, (len(truth), 5))
    members = [latent @ rng.normal(0, 1, (5, 12)) + rng.normal(0, 0.5, (len(truth), 12))
               for _ in range(num_members)]
    return members, truth


def test_members_agree_best_at_the_planted_k():
    members, truth = _views()
    result = member_agreement.member_agreement(members, range(2, 8), seed=0,
                                               normalization="standardize")
    assert member_agreement.best_k(result) == 4
    assert result.mean[4] == pytest.approx(1.0, abs=0.02)
    # One too many: some blob is cut in two, and differently by each member.
    assert result.mean[5] < result.mean[4] - 0.05
    assert result.pairwise_ari[4] == pytest.approx(1.0, abs=0.02)
    assert sorted(np.bincount(result.labels[4]).tolist()) == [40, 40, 40, 40]
    assert set(result.standard_error) == set(range(2, 8))
    assert all(se >= 0 for se in result.standard_error.values())


def test_member_agreement_refuses_what_it_cannot_compare():
    members, _ = _views()
    with pytest.raises(ValueError, match="at least 2 ensemble members"):
        member_agreement.member_agreement(members[:1], [2, 3])
    with pytest.raises(ValueError, match="same items"):
        member_agreement.member_agreement([members[0], members[1][:10]], [2, 3])
    with pytest.raises(ValueError, match=r"\[2, 159\]"):
        member_agreement.member_agreement(members, [2, 160])


def test_ties_go_to_the_smaller_k_and_the_margin_is_in_standard_errors():
    scores = member_agreement.Agreement(mean={3: 0.8, 4: 0.9, 5: 0.9},
                                        standard_error={3: 0.01, 4: 0.03, 5: 0.04},
                                        pairwise_ari={}, labels={})
    assert member_agreement.best_k(scores) == 4
    k_scores = {"agreement": {3: 0.8, 4: 0.9, 5: 0.85},
                "agreement_standard_error": {3: 0.01, 4: 0.03, 5: 0.04}}
    choice = confidence.k_choice(k_scores, "agreement", 4, [3, 4, 5])
    assert choice["runner_up"] == 5 and not choice["at_edge"]
    assert choice["gap"] == pytest.approx(0.05)
    assert choice["gap_in_standard_errors"] == pytest.approx(0.05 / 0.05)


def test_k_choice_reads_lower_is_better_criteria_and_json_keys():
    bic = {"bic": {"2": 120.0, "3": 100.0, "4": 104.0}}
    choice = confidence.k_choice(bic, "bic", 3, [2, 3, 4])
    assert choice == {"criterion": "bic", "k": 3, "runner_up": 4, "gap": 4.0,
                      "gap_in_standard_errors": None, "at_edge": False}
    assert confidence.k_choice(bic, "bic", 4, [2, 3, 4])["at_edge"]


def test_warnings_name_the_edge_a_weak_margin_and_no_convergence():
    choice = {"criterion": "agreement", "k": 10, "runner_up": 9, "gap": 0.01,
              "gap_in_standard_errors": 0.5, "at_edge": True}
    found = confidence.warnings(choice, converged=False, iterations=4, max_iterations=4)
    assert len(found) == 3
    assert "k = 10 is at the edge" in found[0]
    assert "k = 9 by only 0.5 standard errors" in found[1]
    assert "did not converge in 4 of 4" in found[2]
    sure = dict(choice, k=5, at_edge=False, gap_in_standard_errors=3.0)
    assert confidence.warnings(sure, converged=True, iterations=2, max_iterations=4) == []


def test_reference_clusters_from_select_k_are_the_ones_it_would_compute():
    from deeplesion_tf.categorize import kmeans

    members, _ = _views(seed=1)
    features = np.concatenate(members, axis=1)
    selection = kmeans.select_k(features, range(2, 7), seed=3, normalization="standardize")
    given = member_agreement.member_agreement(members, range(2, 7), seed=3,
                                              normalization="standardize",
                                              references=selection.labels_by_k)
    computed = member_agreement.member_agreement(members, range(2, 7), seed=3,
                                                 normalization="standardize")
    assert given.mean == computed.mean and given.pairwise_ari == computed.pairwise_ari
    assert all(np.array_equal(given.labels[k], computed.labels[k]) for k in range(2, 7))
    assert np.array_equal(selection.labels, selection.labels_by_k[selection.k])
