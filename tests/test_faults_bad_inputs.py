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
import numpy as np
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
examples = tfds_helpers.all_examples(builder)
ids = {{split: [[i.decode() for i in e["lesions"]["lesion_id"]] for e in items]
        for split, items in examples.items()}}
slices = {{",".join(sorted(i.decode() for i in e["lesions"]["lesion_id"])): {{
    "slice_index": int(e["slice_index"]), "window_is_nan": bool(np.isnan(e["window"]).all()),
    "previous_is_key": bool((e["previous_slice"] == e["image"]).all()),
    "next_is_key": bool((e["next_slice"] == e["image"]).all()),
    "image_sum": int(e["image"].astype(np.int64).sum()),
    "previous_sum": int(e["previous_slice"].astype(np.int64).sum()),
    "next_sum": int(e["next_slice"].astype(np.int64).sum())}}
    for items in examples.values() for e in items}}
print("RESULT " + json.dumps({{"metadata": dict(builder.info.metadata), "ids": ids,
                              "slices": slices}}))
"""


def _rows(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
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
        "duplicate_bookmark": 1, "image_too_small": 1, "invalid_geometry": 2,
        "invalid_value": 5, "malformed_row": 1, "missing_file": 1, "missing_tag": 2,
        "not_ct": 1, "outside_manual_dir": 2, "unknown_instance": 1, "unreadable_file": 2}
    repairs = json.loads((CORPUS / "pacs" / "expected_repairs.json").read_text())
    assert result["metadata"]["repairs"] == dict(collections.Counter(
        kind for kinds in repairs.values() for kind in kinds)) == {
        "invalid_optional_value": 2, "neighbor_replaced_by_key": 2}
    # Every skip falls in a split: the train patient's bad files in train.
    by_split = result["metadata"]["skips_and_repairs_by_split"]
    assert by_split["train"]["invalid_value"] == 5
    assert set(by_split) <= {"train", "validation", "test"}


def test_pacs_nothing_vanishes(pacs_build):
    result, _, manual_dir = pacs_build
    expected = json.loads((CORPUS / "pacs" / "expected.json").read_text())
    rows = _rows(manual_dir / "bookmarks.csv")
    kept = [i for ids in result["ids"].values() for lesion_ids in ids for i in lesion_ids]
    assert sorted(kept) == sorted(k for k, v in expected.items() if v == "example")
    assert len(rows) == len(kept) + sum(result["metadata"]["skipped_bookmarks"].values()) == 32
    assert {s: sorted(i for ids in v for i in ids) for s, v in result["ids"].items()} == {
        "train": ["edge", "instance_text", "neighbour_position", "neighbour_slope", "spelled",
                  "split_a", "split_b", "two-a", "two-b", "window_text"],
        # The Windows path found its slice and its patient's split.
        "validation": ["backslash", "val"], "test": ["test"]}


def test_pacs_odd_inputs_are_written_as_they_say(pacs_build):
    result, _, _ = pacs_build
    slices = result["slices"]
    # Another spelling of a written key slice joins its example, not a second one.
    assert "spelled,two-a,two-b" in slices
    # A series over two folders is numbered once; its neighbours cross the folders.
    a, b = slices["split_a"], slices["split_b"]
    assert (a["slice_index"], b["slice_index"]) == (1, 2)
    assert a["next_sum"] == b["image_sum"] and b["previous_sum"] == a["image_sum"]
    assert not a["next_is_key"] and not b["previous_is_key"] and b["next_is_key"]
    # A neighbour that cannot be read or placed: the key slice stands in for it alone.
    assert slices["neighbour_slope"]["previous_is_key"]
    assert not slices["neighbour_slope"]["next_is_key"]
    assert slices["neighbour_position"]["next_is_key"]
    assert not slices["neighbour_position"]["previous_is_key"]
    # An invalid window is written as none (NaN), never as a number it does not hold.
    assert slices["window_text"]["window_is_nan"]
    assert not slices["spelled,two-a,two-b"]["window_is_nan"]


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
    logged("invalid_value", "slope_text", "RescaleSlope 'abc' is not a number")
    logged("invalid_value", "intercept_text_implicit", "RescaleIntercept '1,5' is not a number")
    logged("invalid_value", "slope_zero", "RescaleSlope '0' must not be 0")
    logged("invalid_value", "spacing_negative", "PixelSpacing -0.7 must be > 0")
    logged("invalid_value", "spacing_inf", "PixelSpacing 'inf' is not finite")
    logged("image_too_small", "tiny", "below the minimum of 16 px")
    assert any("outside_manual_dir: " in l and "../dicom" in l for l in log.splitlines())
    assert any("invalid_optional_value: " in l and "WindowCenter 'x' is not a number" in l
               for l in log.splitlines())


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
    reasons = ("corrupt_png", "malformed_row", "missing_png", "not_16bit_png")
    assert builder.info.metadata["skipped_bookmarks"] == {r: expected[r] for r in reasons} == {
        "corrupt_png": 1, "malformed_row": 3, "missing_png": 1, "not_16bit_png": 1}
    assert builder.info.metadata["repairs"] == {
        "neighbor_replaced_by_key": expected["neighbor_replaced_by_key"]} == {
        "neighbor_replaced_by_key": 1}
    rows = _rows(CORPUS / "release" / "DL_info.csv")
    lesions = sum(len(e["lesions"]["lesion_id"]) for items in examples.values() for e in items)
    assert lesions == expected["examples"] == 4
    assert len(rows) == lesions + sum(builder.info.metadata["skipped_bookmarks"].values()) == 10


def test_release_keeps_the_good_rows_and_repairs_the_corrupt_neighbour(release_build):
    from deeplesion_tf.data import png16

    _, examples = release_build
    expected = json.loads((CORPUS / "release" / "expected.json").read_text())
    # DL_info.csv carries a UTF-8 byte-order mark: read past it, as the builder does.
    with open(CORPUS / "release" / "DL_info.csv", newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    by_name = {f"{e['series_id'].decode()}_{e['slice_index'] + 1:03d}.png": e
               for items in examples.values() for e in items}
    assert sorted(by_name) == sorted(
        ["000001_01_01_067.png", "000002_01_01_046.png", "000004_01_01_019.png",
         expected["repaired_file"]])
    # Lesion ids are the 0-based data rows, counted past the BOM.
    assert {n: [i.decode() for i in e["lesions"]["lesion_id"]] for n, e in by_name.items()} == {
        r["File_name"]: [str(k)] for k, r in enumerate(rows) if r["File_name"] in by_name}
    repaired = by_name[expected["repaired_file"]]
    folder = CORPUS / "release" / "Images_png" / expected["repaired_file"][:12]
    np.testing.assert_array_equal(repaired["next_slice"], repaired["image"])  # 034.png stood in
    np.testing.assert_array_equal(
        repaired["previous_slice"][..., 0].astype(np.float32) - 32768,
        png16.decode_hu((folder / "032.png").read_bytes()))
    np.testing.assert_array_equal(
        repaired["image"][..., 0].astype(np.float32) - 32768,
        png16.decode_hu((folder / "033.png").read_bytes()))


def test_release_skips_and_repairs_name_each_bad_input():
    from deeplesion_tf.data import release_source

    expected = json.loads((CORPUS / "release" / "expected.json").read_text())
    csv_path = CORPUS / "release" / "DL_info.csv"
    rows, skipped = release_source.read_dl_info(csv_path)
    bad_rows = expected["malformed_rows"]
    assert [(s.reason, s.count) for s in skipped] == [("malformed_row", 1)] * 3
    details = [s.detail for s in skipped]
    assert details[0].startswith(f"{csv_path} data row {bad_rows['coordinates']} (line 7): "
                                 "Measurement_coordinates 'abc, 1' has 2 values")
    assert details[1].startswith(f"{csv_path} data row {bad_rows['file_name_mismatch']} "
                                 "(line 10): File_name '000004_02_01_045.png' disagrees")
    assert details[1].endswith("which give '000004_02_01_046.png'")
    assert details[2] == (f"{csv_path} data row {bad_rows['non_finite_spacing']} (line 11): "
                          "Spacing_mm_px_ 'nan, 6.55816, 5' holds 'nan', which is not finite")
    images = CORPUS / "release" / "Images_png"
    events = [o for task in release_source.plan_tasks(rows)
              for o in release_source.process_key_slice(images, task, 5.0)
              if not isinstance(o, tuple) or hasattr(o, "detail")]

    def png(name):
        return str(images / name[:12] / name[13:])

    assert [(e.reason, e.count, e.detail.split(": ", 1)[0]) for e in events
            if hasattr(e, "reason")] == [
        ("missing_png", 1, png(expected["missing_png_file"])),
        ("not_16bit_png", 1, png(expected["eight_bit_file"])),
        ("corrupt_png", 1, png(expected["corrupt_png_file"]))]
    corrupt = next(e for e in events if getattr(e, "reason", "") == "corrupt_png")
    assert "PNG data does not decode" in corrupt.detail
    repairs = [e for e in events if hasattr(e, "kind")]
    assert [e.kind for e in repairs] == ["neighbor_replaced_by_key"]
    assert repairs[0].detail.startswith(
        f"{expected['repaired_file']}: next_slice {images.parent / expected['corrupt_neighbour']}"
        ": PNG data does not decode")


def test_release_without_its_columns_stops_naming_the_file(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    shutil.copy(CORPUS / "release" / "DL_info_no_columns.csv", manual_dir / "DL_info.csv")
    with pytest.raises(ValueError, match=r"DL_info.csv: not a DL_info.csv, missing columns"):
        tfds_helpers.build("release", tmp_path / "data", manual_dir=manual_dir)
