"""The `pacs` config on a small DICOM tree with a corpus of bad inputs.

Every bad input must be skipped and counted under its documented reason
(`deeplesion_tf.data.skips`), never crash the build and never vanish silently.
The tree is made of copies of pydicom's `CT_small.dcm` (128x128, real CT).
"""

import csv
import os
import pathlib

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import release_format
from tests import tfds_helpers



# Three patients, one per split, so that every split has examples.
PHI = {
    "PatientName": ["DOE^JANE^Q", "ROE^RICHARD", "POE^EDGAR"],
    "PatientID": [tfds_helpers.mrn_in_split(split) for split in ("train", "validation", "test")],
    "PatientBirthDate": ["19480213", "19611130", "19770704"],
    "AccessionNumber": ["ACC88120001", "ACC88120002", "ACC88120003"],
}
COLUMNS = ["lesion_id", "relative_path", "sop_instance_uid"] + list(bookmarks.COORDINATE_NAMES)


def _write_series(root, patient, series_number, slices, change=None):
    """Writes `slices` copies of CT_small as one series; returns [(relpath, uid)]."""
    study, series = generate_uid(), generate_uid()
    written = []
    for i in range(slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        for tag, values in PHI.items():
            setattr(ds, tag, values[patient])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, -5.0 * i]
        # Distinct pixels per slice so neighbours can be told apart.
        ds.PixelData = (ds.pixel_array + 10 * i).astype(ds.pixel_array.dtype).tobytes()
        relpath = f"dicom/{PHI['PatientID'][patient]}/study1/series{series_number}/{i + 1:04d}.dcm"
        os.makedirs(root / os.path.dirname(relpath), exist_ok=True)
        ds.save_as(root / relpath, enforce_file_format=True)
        written.append((relpath, ds.SOPInstanceUID))
    for index, how in (change or {}).items():
        path = root / written[index][0]
        if how == "truncate":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) - 5000])
        elif how == "text":
            path.write_text("not a DICOM file")
        else:
            ds = pydicom.dcmread(path)
            how(ds)
            ds.save_as(path)
    return written


def _mr(ds):
    ds.Modality = "MR"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"


def _no_slope(ds):
    del ds.RescaleSlope


GOOD = (40.0, 50.0, 70.0, 60.0, 55.0, 45.0, 55.0, 66.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if os.environ.get(deid.SALT_ENV_VAR):
        pytest.skip("the corpus's split layout assumes the default salt")
    root = tmp_path_factory.mktemp("pacs")
    good = _write_series(root, 0, 1, 5)
    bad = _write_series(root, 0, 2, 6, change={0: "text", 1: "truncate", 2: _mr, 3: _no_slope})
    repaired = _write_series(root, 1, 1, 2, change={1: "truncate"})
    other = _write_series(root, 2, 1, 3)
    rows = [
        ("two-a", *good[2], *GOOD),
        ("two-b", *good[2], 10, 10, 30, 12, 20, 5, 21, 18),
        ("edge", *good[0], *GOOD),
        ("dup", *good[2], *GOOD),                                       # duplicate_bookmark
        ("malformed", *good[1], "abc", *GOOD[1:]),                      # malformed_row
        ("missing", os.path.dirname(good[0][0]) + "/0099.dcm", generate_uid(), *GOOD),
        ("unknown", good[1][0], "1.2.3.4.5.999", *GOOD),                # unknown_instance
        ("text", *bad[0], *GOOD),                          # unreadable_file
        ("truncated", *bad[1], *GOOD),                                  # unreadable_file
        ("mr", *bad[2], *GOOD),                                         # not_ct
        ("noslope", *bad[3], *GOOD),                                    # missing_tag
        ("outside", *good[3], 140.0, *GOOD[1:]),                        # invalid_geometry
        ("nan", *good[3], "nan", *GOOD[1:]),                            # invalid_geometry
        ("zero", *good[4], 40, 50, 40, 50, *GOOD[4:]),                  # invalid_geometry
        ("fixed", *repaired[0], *GOOD),                                 # next slice truncated
        ("other", *other[1], *GOOD),
    ]
    with open(root / "bookmarks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    builder = tfds_helpers.build("pacs", tmp_path_factory.mktemp("data"), manual_dir=root)
    return root, good, repaired, builder, tfds_helpers.all_examples(builder)


def test_bad_inputs_are_counted_by_reason(corpus):
    *_, builder, _ = corpus
    assert builder.info.metadata["skipped_bookmarks"] == {
        "duplicate_bookmark": 1,
        "invalid_geometry": 3,
        "malformed_row": 1,
        "missing_file": 1,
        "missing_tag": 1,
        "not_ct": 1,
        "unknown_instance": 1,
        "unreadable_file": 2,
    }
    assert builder.info.metadata["repairs"] == {"neighbor_replaced_by_key": 1}


def test_good_bookmarks_all_arrive_with_their_geometry(corpus):
    root, good, repaired, _, examples = corpus
    flat = [e for items in examples.values() for e in items]
    ids = sorted(i.decode() for e in flat for i in e["lesions"]["lesion_id"])
    assert ids == ["edge", "fixed", "other", "two-a", "two-b"]
    # One patient per split, and the split follows the patient.
    assert {s: sorted(i.decode() for e in items for i in e["lesions"]["lesion_id"])
            for s, items in examples.items()} == {
        "train": ["edge", "two-a", "two-b"], "validation": ["fixed"], "test": ["other"]}
    by_first_id = {e["lesions"]["lesion_id"][0].decode(): e for e in flat}
    two = by_first_id["two-a"]
    assert [i.decode() for i in two["lesions"]["lesion_id"]] == ["two-a", "two-b"]
    expected_boxes = [bookmarks.measure(bookmarks.Bookmark("x", c, 128, 128), padding=20).box
                      for c in (GOOD, (10, 10, 30, 12, 20, 5, 21, 18))]
    np.testing.assert_allclose(tfds_helpers.box_pixels(two), expected_boxes, atol=1e-3)
    np.testing.assert_allclose(two["lesions"]["measurement"][0], GOOD)
    assert two["lesions"]["diameters_mm"][0][0] == pytest.approx(
        np.hypot(30, 10) * 0.661468, rel=1e-5)

    def hu(relpath):
        return ct_reader.read_ct(root / relpath).hu + release_format.HU_OFFSET

    # Slices sorted by position: neighbours of slice 3 are slices 2 and 4.
    np.testing.assert_array_equal(two["image"][..., 0], hu(good[2][0]))
    np.testing.assert_array_equal(two["previous_slice"][..., 0], hu(good[1][0]))
    np.testing.assert_array_equal(two["next_slice"][..., 0], hu(good[3][0]))
    assert two["slice_index"] == 2
    assert two["slice_interval_mm"] == pytest.approx(5.0)
    np.testing.assert_allclose(two["spacing_mm"], [0.661468, 0.661468])
    assert np.all(np.isnan(two["window"]))  # CT_small has no window
    # Series edges clamp: the first slice is its own previous slice.
    edge = by_first_id["edge"]
    np.testing.assert_array_equal(edge["previous_slice"], edge["image"])
    np.testing.assert_array_equal(edge["next_slice"][..., 0], hu(good[1][0]))
    # The unreadable neighbour was replaced by the key slice, and counted.
    fixed = by_first_id["fixed"]
    np.testing.assert_array_equal(fixed["next_slice"], fixed["image"])


def test_no_identifier_reaches_the_written_files(corpus):
    root, _, _, builder, _ = corpus
    identifiers = {v for values in PHI.values() for v in values}
    for path in (root / "dicom").rglob("*.dcm"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        identifiers |= {str(ds.get(t)) for t in ("SOPInstanceUID", "SeriesInstanceUID",
                                                  "StudyInstanceUID") if ds.get(t)}
    written = [p for p in pathlib.Path(builder.data_path).rglob("*") if p.is_file()]
    records = b"".join(p.read_bytes() for p in written if ".tfrecord" in p.name)
    assert b"two-a" in records  # text features are stored as plain bytes: the scan sees them
    for path in written:
        blob = path.read_bytes()
        for identifier in identifiers:
            assert identifier.encode() not in blob, f"{identifier} found in {path}"
        # Names also appear as "DOE JANE" or "JANE" in careless code.
        for name in PHI["PatientName"]:
            for part in name.split("^"):
                if len(part) > 1:
                    assert part.encode() not in blob, f"{part} found in {path}"
