"""Cluster names from a reference labelling: majority, ties, repeats, unknown lesions."""

from deeplesion_tf.categorize import naming


def test_majority_names_are_unique_and_ties_are_alphabetical():
    clusters = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 2, "f": 3, "g": 3, "h": 4}
    reference = {"a": "LV", "b": "LV", "c": "AB", "d": "AB", "e": "LN", "f": "LV", "g": "LV"}
    # Cluster 2 ties AB/LN -> AB; cluster 3 is LV again -> LV2; cluster 4's lesion is unknown.
    assert naming.majority_names(clusters, reference) == {1: "LV", 2: "AB", 3: "LV2", 4: "?"}
