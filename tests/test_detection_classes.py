"""Class specs of the detector: single class, pseudo labels with names, coarse types."""

import pytest

from deeplesion_tf.detection import classes


def test_single_class():
    spec = classes.single_class()
    assert (spec.num_classes, spec.names, spec.table) == (1, ("lesion",), None)


def test_pseudo_labels_with_names(tmp_path):
    labels = tmp_path / "pseudo_labels.csv"
    labels.write_text("lesion_id,cluster\na,2\nb,1\nc,3\n")
    names = tmp_path / "names.csv"
    names.write_text("cluster,name\n1,LV\n2,LN\n3,CL\n")
    spec = classes.from_pseudo_labels(str(labels), str(names))
    assert spec.names == ("LV", "LN", "CL")
    assert spec.table == {"a": 2, "b": 1, "c": 3}
    assert classes.from_pseudo_labels(str(labels)).names == ("C1", "C2", "C3")
    classes.write(spec, str(tmp_path))
    assert classes.read_names(str(tmp_path)) == ["LV", "LN", "CL"]


def test_pseudo_labels_names_file_missing_a_cluster(tmp_path):
    labels = tmp_path / "pseudo_labels.csv"
    labels.write_text("lesion_id,cluster\na,1\nb,2\n")
    names = tmp_path / "names.csv"
    names.write_text("cluster,name\n1,LV\n")
    with pytest.raises(ValueError, match=r"names no cluster \[2\]"):
        classes.from_pseudo_labels(str(labels), str(names))


def test_coarse_types_refuse_unknown_types():
    spec = classes.from_coarse_types([("1", 4), ("2", 5)])
    assert spec.table == {"1": 4, "2": 5} and spec.names[3] == "LV" and spec.num_classes == 8
    with pytest.raises(ValueError, match="1 of 3 lesions have no coarse type"):
        classes.from_coarse_types([("1", 4), ("2", -1), ("3", 8)])
