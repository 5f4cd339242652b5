"""The synthetic PACS' folder: one name for the builder and every reader, newest version by number."""

from deeplesion_tf.data import synthetic_location


def _pacs(root, name):
    folder = root / "downloads" / "synthetic_pacs" / name
    folder.mkdir(parents=True)
    (folder / "truth.csv").write_text("lesion_id\n")
    return str(folder / "truth.csv")


def test_the_builder_and_the_readers_agree_on_the_folder(tmp_path):
    folder = synthetic_location.pacs_folder(str(tmp_path / "downloads"), 3, 40, 128)
    assert folder.endswith("synthetic_pacs/seed3_patients40_size128_v"
                           + synthetic_location.deeplesion_tf.__version__)
    assert synthetic_location.find_truth_csv(str(tmp_path)) is None
    truth = _pacs(tmp_path, folder.rsplit("/", 1)[1])
    assert synthetic_location.find_truth_csv(str(tmp_path), 3, 40, 128) == truth
    assert synthetic_location.find_truth_csv(str(tmp_path), 4, 40, 128) is None


def test_the_newest_version_wins_by_number_not_by_string(tmp_path):
    _pacs(tmp_path, "seed0_patients100_size512_v0.9.0")
    newest = _pacs(tmp_path, "seed0_patients100_size512_v0.10.0")
    _pacs(tmp_path, "seed0_patients100_size512_v0.2.1")
    # sorted(glob)[-1] would pick v0.9.0.
    assert synthetic_location.find_truth_csv(str(tmp_path)) == newest
    assert synthetic_location.find_truth_csv(str(tmp_path), 0, 100, 512) == newest


def test_folders_without_truth_or_with_other_names_are_ignored(tmp_path):
    (tmp_path / "downloads" / "synthetic_pacs" / "seed0_patients100_size512_v0.3.0.incomplete"
     ).mkdir(parents=True)
    (tmp_path / "downloads" / "synthetic_pacs" / "seed0_patients100_size512_v0.4.0").mkdir()
    assert synthetic_location.find_truth_csv(str(tmp_path)) is None


def test_the_dicom_tree_is_the_one_the_generator_writes_beside_the_truth():
    # The checked-in dummy PACS is a generator's output: truth.csv with dicom/ beside it.
    from tfds_deeplesion.deeplesion import dummy_data_generation

    truth = dummy_data_generation.DUMMY_DIR / "truth.csv"
    dicom = synthetic_location.dicom_dir(str(truth))
    assert dicom == str(dummy_data_generation.DUMMY_DIR / "dicom")
    assert any(p.suffix == ".dcm" for p in (dummy_data_generation.DUMMY_DIR / "dicom").rglob("*"))
