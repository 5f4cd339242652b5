"""The categorizer's output files."""

import csv

import numpy as np
import pytest

from deeplesion_tf.categorize import outputs


def test_pseudo_labels_number_clusters_from_one_sorted_by_lesion(tmp_path):
    path = tmp_path / "pseudo_labels.csv"
    outputs.write_pseudo_labels(str(path), ["b", "a", "c"], np.array([0, 2, 1]))
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["lesion_id", "cluster"], ["a", "3"], ["b", "1"],
                                       ["c", "2"]]


def test_names_file(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("cluster,name\n1,LV\n2, LN\n")
    assert outputs.read_names(str(path)) == {1: "LV", 2: "LN"}
    path.write_text("1,LV\nx,LN\n")
    with pytest.raises(ValueError, match="row 2"):
        outputs.read_names(str(path))
