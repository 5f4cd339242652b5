#!/usr/bin/env python3
"""Writes the bad-input corpus beside this script (run once; the output is committed).

    python tests/bad_inputs/make_bad_inputs.py

`pacs/`: a DICOM tree of 32 x 32 crops of pydicom's `CT_small.dcm` (a real CT
header) and `bookmarks.csv`. Three patients (one per split) have good
three-slice series; the train patient also has one single-slice series per bad
file. `expected.json` lists what each bookmark must become.
`release/`: `DL_info.csv` rows and PNGs taken from `dummy_data` (three good key
slices), plus a row whose PNG is missing, one whose PNG is 8-bit and a
malformed row; `DL_info_no_columns.csv` lacks the release's columns.
"""

import csv
import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, generate_uid

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from deeplesion_tf.data import bookmarks  # noqa: E402
from tests import tfds_helpers  # noqa: E402

SIZE = 32
GOOD = (10.0, 12.0, 20.0, 16.0, 15.0, 10.0, 16.0, 19.0)
PHI = {
    "PatientName": ["DOE^JANE^Q", "ROE^RICHARD", "POE^EDGAR"],
    "PatientBirthDate": ["19480213", "19611130", "19770704"],
    "AccessionNumber": ["ACC88120001", "ACC88120002", "ACC88120003"],
}


MRNS = [tfds_helpers.mrn_in_split(split) for split in ("train", "validation", "test")]


def _slice(patient, study, series, index):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag, values in PHI.items():
        setattr(ds, tag, values[patient])
    ds.PatientID = MRNS[patient]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, -5.0 * index]
    full = ds.pixel_array
    pixels = full[40:40 + SIZE, 40:40 + SIZE] + 10 * index
    ds.Rows = ds.Columns = SIZE
    ds.PixelData = pixels.astype(full.dtype).tobytes()
    return ds


def _save(ds, root, relpath):
    os.makedirs(root / os.path.dirname(relpath), exist_ok=True)
    ds.save_as(root / relpath, enforce_file_format=True)
    return relpath, str(ds.SOPInstanceUID)


def _series(root, patient, name, slices):
    study, series = generate_uid(), generate_uid()
    return [_save(_slice(patient, study, series, i), root,
                  f"dicom/{MRNS[patient]}/study1/{name}/{i + 1:04d}.dcm") for i in range(slices)]


def _bad(root, name, change):
    """One single-slice series of the train patient, spoiled by `change`."""
    ds = _slice(0, generate_uid(), generate_uid(), 0)
    relpath, uid = _save(ds, root, f"dicom/{MRNS[0]}/study2/{name}/0001.dcm")
    path = root / relpath
    if change == "truncate":
        path.write_bytes(path.read_bytes()[:-700])
    else:
        change(ds)
        ds.save_as(path, enforce_file_format=True)
    return relpath, uid


def _mr(ds):
    ds.Modality = "MR"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"


def _j2k(ds):
    # Readable where pylibjpeg-openjpeg is installed; the test hides it.
    ds.compress(JPEG2000Lossless)


def make_pacs(root):
    shutil.rmtree(root, ignore_errors=True)
    good = _series(root, 0, "series1", 3)
    validation = _series(root, 1, "series1", 3)
    test = _series(root, 2, "series1", 3)
    rows, expected = [], {}

    def row(lesion_id, relpath_uid, coordinates=GOOD, outcome="example"):
        rows.append((lesion_id, *relpath_uid, *coordinates))
        expected[lesion_id] = outcome

    row("two-a", good[1])
    row("two-b", good[1], (4, 4, 12, 6, 8, 2, 9, 8))
    row("edge", good[0])
    row("val", validation[1])
    row("test", test[2])
    row("dup", good[1], outcome="duplicate_bookmark")
    row("malformed", good[1], ("abc", *GOOD[1:]), outcome="malformed_row")
    row("missing", (os.path.dirname(good[0][0]) + "/0099.dcm", generate_uid()),
        outcome="missing_file")
    row("unknown", (good[2][0], generate_uid()), outcome="unknown_instance")
    row("outside", good[2], (SIZE + 8.0, *GOOD[1:]), outcome="invalid_geometry")
    row("nan", good[2], ("nan", *GOOD[1:]), outcome="invalid_geometry")
    row("truncated", _bad(root, "truncated", "truncate"), outcome="unreadable_file")
    row("mr", _bad(root, "mr", _mr), outcome="not_ct")
    row("noslope", _bad(root, "noslope", lambda ds: delattr(ds, "RescaleSlope")),
        outcome="missing_tag")
    row("nospacing", _bad(root, "nospacing", lambda ds: delattr(ds, "PixelSpacing")),
        outcome="missing_tag")
    row("j2k", _bad(root, "j2k", _j2k), outcome="unreadable_file")
    with open(root / "bookmarks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lesion_id", "relative_path", "sop_instance_uid",
                         *bookmarks.COORDINATE_NAMES])
        writer.writerows(rows)
    (root / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def make_release(root):
    shutil.rmtree(root, ignore_errors=True)
    dummy = HERE.parents[1] / "tfds_deeplesion" / "deeplesion" / "dummy_data"
    with open(dummy / "DL_info.csv", newline="") as f:
        reader = csv.DictReader(f)
        columns, source = reader.fieldnames, list(reader)
    by_split = {}
    for record in source:
        by_split.setdefault(record["Train_Val_Test"], record)
    good = [by_split[s] for s in sorted(by_split)]
    used = {r["File_name"] for r in good}
    others = [r for r in source if r["File_name"][:12] not in {u[:12] for u in used}]
    missing, eight_bit, malformed = (dict(r) for r in others[:3])
    for record in good + [eight_bit]:
        folder = record["File_name"][:12]
        key = int(record["Key_slice_index"])
        (root / "Images_png" / folder).mkdir(parents=True, exist_ok=True)
        for number in (key - 1, key, key + 1):
            name = f"{number:03d}.png"
            if (dummy / "Images_png" / folder / name).exists():
                shutil.copy(dummy / "Images_png" / folder / name,
                            root / "Images_png" / folder / name)
    key_png = root / "Images_png" / eight_bit["File_name"][:12] / eight_bit["File_name"][13:]
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(key_png)
    malformed["Measurement_coordinates"] = "abc, 1"
    with open(root / "DL_info.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(good + [missing, eight_bit, malformed])
    with open(root / "DL_info_no_columns.csv", "w", newline="") as f:
        f.write("File_name,Key_slice_index\n000001_01_01_067.png,67\n")
    expected = {"examples": len(good), "missing_png": 1, "not_16bit_png": 1, "malformed_row": 1,
                "missing_png_file": missing["File_name"], "eight_bit_file": eight_bit["File_name"]}
    (root / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    make_pacs(HERE / "pacs")
    make_release(HERE / "release")
