"""The committed bad-input corpus (`tests/bad_inputs/`, see its `make_bad_inputs.py`).

Both configs are built from it. Each bad input must come out as its documented
skip reason (`deeplesion_tf.data.skips`), the build's log must name the file or
row, nothing may crash the build, and nothing may vanish: bookmarks in =
lesions in the examples + skips. A `DL_info.csv` without the release's columns
is the one documented error: the build stops with a message naming the file.

`tests/test_tfds_pacs_bad_input.py` holds the older corpus made at test time
(neighbour repairs, geometry of the good bookmarks); this one adds missing
spacing, a JPEG 2000 file whose decoders are gone, and the release's inputs.
"""

import collections
import csv
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from tests import tfds_helpers
from tests.conftest import REPO_ROOT

CORPUS = pathlib.Path(__file__).resolve().parent / "bad_inputs"
# Builds the pacs config in one process with every JPEG 2000 decoder removed,
# as on a machine without pylibjpeg-openjpeg, Pillow's or GDCM's.
_BUILD_WITHOUT_J2K = """
import json, sys
sys.path.insert(0, {repo!r})
from pydicom.pixels.decoders import JPEG2000LosslessDecoder
for plugin in list(JPEG2000LosslessDecoder.available_plugins):
    JPEG2000LosslessDecoder.remove_plugin(plugin)
from absl import logging
logging.set_verbosity(logging.INFO)
from tests import tfds_helpers
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder
config = dl_builder.DeepLesionConfig(name="pacs_bad", source="pacs", num_workers=1)
builder = tfds_helpers.build(config, {data_dir!r}, manual_dir={manual_dir!r})
ids = {{split: [[i.decode() for i in e["lesions"]["lesion_id"]] for e in examples]
        for split, examples in tfds_helpers.all_examples(builder).items()}}
print("RESULT " + json.dumps({{"metadata": dict(builder.info.metadata), "ids": ids}}))
"""


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pacs_build(tmp_path_factory):
    if deid.site_salt() != deid.DEFAULT_SALT:
        pytest.skip("the corpus's split layout assumes the default salt")
    manual_dir = tmp_path_factory.mktemp("bad_pacs")
    shutil.copytree(CORPUS / "pacs", manual_dir, dirs_exist_ok=True)
    script = _BUILD_WITHOUT_J2K.format(repo=str(REPO_ROOT), manual_dir=str(manual_dir),
                                       data_dir=str(tmp_path_factory.mktemp("data")))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), result.stderr, manual_dir


def test_pacs_bad_inputs_are_counted_by_reason(pacs_build):
    result, _, _ = pacs_build
    expected = json.loads((CORPUS / "pacs" / "expected.json").read_text())
    reasons = collections.Counter(v for v in expected.values() if v != "example")
    assert result["metadata"]["skipped_bookmarks"] == dict(reasons) == {
        "duplicate_bookmark": 1, "invalid_geometry": 2, "malformed_row": 1, "missing_file": 1,
        "missing_tag": 2, "not_ct": 1, "unknown_instance": 1, "unreadable_file": 2}
    assert result["metadata"]["repairs"] == {}


def test_pacs_nothing_vanishes(pacs_build):
    result, _, manual_dir = pacs_build
    expected = json.loads((CORPUS / "pacs" / "expected.json").read_text())
    rows = _rows(manual_dir / "bookmarks.csv")
    kept = [i for ids in result["ids"].values() for lesion_ids in ids for i in lesion_ids]
    assert sorted(kept) == sorted(k for k, v in expected.items() if v == "example")
    assert len(rows) == len(kept) + sum(result["metadata"]["skipped_bookmarks"].values()) == 16
    assert {s: sorted(i for ids in v for i in ids) for s, v in result["ids"].items()} == {
        "train": ["edge", "two-a", "two-b"], "validation": ["val"], "test": ["test"]}


def test_pacs_log_names_each_bad_file(pacs_build):
    _, log, manual_dir = pacs_build
    rows = {r["lesion_id"]: r for r in _rows(manual_dir / "bookmarks.csv")}

    def logged(reason, lesion_id, words):
        lines = [l for l in log.splitlines()
                 if f"{reason}: " in l and rows[lesion_id]["relative_path"] in l]
        assert any(words in l for l in lines), (reason, lesion_id, lines or log[-3000:])

    logged("unreadable_file", "j2k", "to decompress 'JPEG 2000 Image Compression (Lossless Only)' pixel data")
    logged("unreadable_file", "truncated", "")
    logged("not_ct", "mr", "Modality='MR'")
    logged("missing_tag", "noslope", "missing RescaleSlope")
    logged("missing_tag", "nospacing", "missing PixelSpacing")
    logged("missing_file", "missing", "")


def test_the_j2k_file_is_only_missing_its_decoder():
    # With pylibjpeg-openjpeg present (this process) the same file is a good CT slice.
    ct = ct_reader.read_ct(CORPUS / "pacs" / "dicom" / "MRN5550000" / "study2" / "j2k" /
                           "0001.dcm")
    assert ct.hu.shape == (32, 32)
    assert np.ptp(ct.hu) > 0


@pytest.fixture(scope="module")
def release_build(tmp_path_factory):
    builder = tfds_helpers.build("release", tmp_path_factory.mktemp("release_data"),
                                 manual_dir=CORPUS / "release")
    return builder, tfds_helpers.all_examples(builder)


def test_release_bad_rows_are_counted_and_nothing_vanishes(release_build):
    builder, examples = release_build
    expected = json.loads((CORPUS / "release" / "expected.json").read_text())
    assert builder.info.metadata["skipped_bookmarks"] == {
        "malformed_row": expected["malformed_row"], "missing_png": expected["missing_png"],
        "not_16bit_png": expected["not_16bit_png"]} == {
        "malformed_row": 1, "missing_png": 1, "not_16bit_png": 1}
    rows = _rows(CORPUS / "release" / "DL_info.csv")
    lesions = sum(len(e["lesions"]["lesion_id"]) for items in examples.values() for e in items)
    assert lesions == expected["examples"] == 3
    assert len(rows) == lesions + sum(builder.info.metadata["skipped_bookmarks"].values())


def test_release_without_its_columns_stops_naming_the_file(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    shutil.copy(CORPUS / "release" / "DL_info_no_columns.csv", manual_dir / "DL_info.csv")
    with pytest.raises(ValueError, match=r"DL_info.csv: not a DL_info.csv, missing columns"):
        tfds_helpers.build("release", tmp_path / "data", manual_dir=manual_dir)
