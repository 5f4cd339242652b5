"""The categorizer's label files: pseudo_labels.csv and names.csv, written and read back."""

import csv

import numpy as np
import pytest

from deeplesion_tf.data import label_files


def test_pseudo_labels_number_clusters_from_one_sorted_by_lesion(tmp_path):
    path = tmp_path / "pseudo_labels.csv"
    label_files.write_pseudo_labels(str(path), ["b", "a", "c"], np.array([0, 2, 1]))
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [["lesion_id", "cluster"], ["a", "3"], ["b", "1"],
                                       ["c", "2"]]
    assert label_files.read_pseudo_labels(str(path)) == {"a": 3, "b": 1, "c": 2}


def test_pseudo_labels_refuse_clusters_below_one_and_empty_files(tmp_path):
    path = tmp_path / "pseudo_labels.csv"
    path.write_text("lesion_id,cluster\na,1\nb,0\n")
    with pytest.raises(ValueError, match=":3: cluster 0 < 1"):
        label_files.read_pseudo_labels(str(path))
    path.write_text("lesion_id,cluster\na,one\n")
    with pytest.raises(ValueError, match=":2: expected"):
        label_files.read_pseudo_labels(str(path))
    path.write_text("lesion_id,cluster\n")
    with pytest.raises(ValueError, match="holds no lesions"):
        label_files.read_pseudo_labels(str(path))


def test_names_file_round_trip(tmp_path):
    path = tmp_path / "names.csv"
    label_files.write_names(str(path), {2: "LN", 1: "LV"})
    assert path.read_text() == "cluster,name\n1,LV\n2,LN\n"
    assert label_files.read_names(str(path)) == {1: "LV", 2: "LN"}


def test_names_file_without_header_and_bad_rows(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text("cluster,name\n1,LV\n2, LN\n")
    assert label_files.read_names(str(path)) == {1: "LV", 2: "LN"}
    path.write_text("1,LV\nx,LN\n")
    with pytest.raises(ValueError, match="row 2"):
        label_files.read_names(str(path))
