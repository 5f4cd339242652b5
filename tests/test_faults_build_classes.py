"""Whole classes of bad input that once stopped a build: empty splits, duplicate keys, links.

Each test builds the `pacs` config from a copy of the committed corpus
(`tests/bad_inputs/pacs`), changed to hold one instance of the class.
"""

import collections
import csv
import io
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from absl import logging

from deeplesion_tf.data import deid
from deeplesion_tf.data import skips
from tests import tfds_helpers
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder

CORPUS = pathlib.Path(__file__).resolve().parent / "bad_inputs" / "pacs"


@pytest.fixture(autouse=True)
def _default_salt():
    if deid.site_salt() != deid.DEFAULT_SALT:
        pytest.skip("the corpus's split layout assumes the default salt")


def _config(name):
    return dl_builder.DeepLesionConfig(name=name, source="pacs", num_workers=1)


def _corpus(tmp_path, keep=None, change=None):
    """A copy of the corpus whose bookmarks are the rows `keep` accepts, `change`d."""
    manual_dir = tmp_path / "manual"
    shutil.copytree(CORPUS, manual_dir)
    with open(manual_dir / "bookmarks.csv", newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    rows = [dict(r) for r in rows if keep is None or keep(r)]
    for row in rows:
        if change:
            change(row)
    with open(manual_dir / "bookmarks.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    return manual_dir


@pytest.fixture
def log_lines():
    """Lines absl logs while the test runs."""
    stream = io.StringIO()
    handler = logging.logging.StreamHandler(stream)
    logging.get_absl_logger().addHandler(handler)
    yield lambda: stream.getvalue().splitlines()
    logging.get_absl_logger().removeHandler(handler)


def test_a_split_whose_bookmarks_are_all_skipped_is_reported_and_the_rest_built(
        tmp_path, log_lines):
    good = {"two-a", "val", "test"}

    def spoil_test(row):
        if row["lesion_id"] == "test":
            row["x11"] = "999"  # outside the 32 x 32 slice

    manual_dir = _corpus(tmp_path, keep=lambda r: r["lesion_id"] in good, change=spoil_test)
    builder = tfds_helpers.build(_config("pacs_empty_test"), tmp_path / "data", manual_dir)
    assert set(builder.info.splits) == {"train", "validation"}
    examples = tfds_helpers.all_examples(builder)
    assert [e["lesions"]["lesion_id"].tolist() for e in examples["train"]] == [[b"two-a"]]
    assert [e["lesions"]["lesion_id"].tolist() for e in examples["validation"]] == [[b"val"]]
    assert builder.info.metadata["skipped_bookmarks"] == {skips.INVALID_GEOMETRY: 1}
    assert builder.info.metadata["skips_and_repairs_by_split"] == {
        "test": {skips.INVALID_GEOMETRY: 1}}
    assert any("the test split is not written: all 1 of its bookmarks were skipped "
               "({'invalid_geometry': 1})" in line for line in log_lines())


def test_a_build_with_nothing_to_write_fails_at_the_end_with_the_tally(tmp_path):
    manual_dir = _corpus(tmp_path, keep=lambda r: r["lesion_id"] in {"mr", "missing", "tiny"})
    with pytest.raises(ValueError, match=r"no example could be written; skipped bookmarks by "
                       r"reason: \{'image_too_small': 1, 'missing_file': 1, 'not_ct': 1\}"):
        tfds_helpers.build(_config("pacs_nothing"), tmp_path / "data", manual_dir)


def test_a_link_out_of_the_manual_dir_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    source = CORPUS / "dicom" / "MRN5550000" / "study1" / "series1" / "0002.dcm"
    shutil.copy(source, outside / "0002.dcm")

    def relink(row):
        if row["lesion_id"] == "two-a":
            row["relative_path"], row["sop_instance_uid"] = "linked/0002.dcm", ""

    manual_dir = _corpus(tmp_path, keep=lambda r: r["lesion_id"] in {"two-a", "val"},
                         change=relink)
    (manual_dir / "linked").mkdir()
    os.symlink(outside / "0002.dcm", manual_dir / "linked" / "0002.dcm")
    builder = tfds_helpers.build(_config("pacs_link"), tmp_path / "data", manual_dir)
    assert builder.info.metadata["skipped_bookmarks"] == {skips.OUTSIDE_MANUAL_DIR: 1}
    assert set(builder.info.splits) == {"validation"}


def _bare_builder(tmp_path):
    """A builder ready to run `_generate_examples` by hand (as `_generate_splits` sets it up)."""
    builder = dl_builder.Builder(config=_config("pacs_keys"), data_dir=os.fspath(tmp_path))
    builder._use_beam = False
    builder._counts, builder._split_counts = {}, {}
    builder._details = collections.defaultdict(list)
    builder._keys, builder._pool = set(), None
    return builder


def test_a_key_written_twice_is_counted_once_as_a_duplicate_slice(tmp_path):
    def work(task):
        lesions = {"lesion_id": [f"lesion-{task}", f"other-{task}"]}
        return [("same_key", {"lesions": lesions, "task": task}),
                skips.Repair(skips.NEIGHBOR_REPLACED_BY_KEY, f"task {task}")]

    builder = _bare_builder(tmp_path)
    written = list(builder._generate_examples("train", [1, 2, 3], work))
    assert [(key, example["task"]) for key, example in written] == [("same_key", 1)]
    assert builder._split_counts == {"train": {skips.DUPLICATE_SLICE: 4,
                                               skips.NEIGHBOR_REPLACED_BY_KEY: 3}}


def test_a_split_with_only_skips_gives_none(tmp_path):
    builder = _bare_builder(tmp_path)
    work = lambda task: [skips.Skip(skips.MISSING_FILE, 2, f"task {task}")]  # noqa: E731
    assert builder._generate_examples("test", [1, 2], work) is None
    assert builder._split_counts == {"test": {skips.MISSING_FILE: 4}}


@pytest.mark.slow
def test_beam_counts_the_corpus_as_the_local_build_does(tmp_path):
    # Without the JPEG 2000 file, whose outcome depends on the decoders installed.
    manual_dir = _corpus(tmp_path, keep=lambda r: r["lesion_id"] != "j2k")
    local = tfds_helpers.build(_config("pacs_local"), tmp_path / "local", manual_dir)
    beam = tfds_helpers.build(_config("pacs_beam"), tmp_path / "beam", manual_dir, beam=True)
    for key in ("skipped_bookmarks", "repairs", "skips_and_repairs_by_split"):
        assert json.loads(json.dumps(beam.info.metadata[key])) == json.loads(
            json.dumps(local.info.metadata[key])), key
    local_examples, beam_examples = (tfds_helpers.all_examples(b) for b in (local, beam))
    assert set(local_examples) == set(beam_examples)
    for split in local_examples:
        def ids(examples):
            return sorted(tuple(sorted(e["lesions"]["lesion_id"].tolist())) for e in examples)
        assert ids(beam_examples[split]) == ids(local_examples[split])
        assert sum(int(np.sum(e["image"], dtype=np.int64)) for e in beam_examples[split]) == sum(
            int(np.sum(e["image"], dtype=np.int64)) for e in local_examples[split])
