#!/usr/bin/env python3
"""Writes the bad-input corpus beside this script (run once; the output is committed).

    python tests/bad_inputs/make_bad_inputs.py

`pacs/`: a DICOM tree of 32 x 32 crops of pydicom's `CT_small.dcm` (a real CT
header) and `bookmarks.csv`. Three patients (one per split) have good
three-slice series; the train patient also has one single-slice series per bad
file (one per class: unreadable, not CT, missing or invalid header values, too
small, invalid optional values), three-slice series with a bad neighbour, a
series exported over two folders, and rows that spell paths oddly (another
spelling, Windows separators, leaving the manual_dir); `bookmarks.csv` starts
with a UTF-8 BOM. `expected.json` lists what each bookmark must become,
`expected_repairs.json` the repairs of the kept ones.
`release/`: `DL_info.csv` rows and PNGs taken from `dummy_data` (three good key
slices), plus a row whose PNG is missing, one whose PNG is 8-bit, one whose PNG
has an intact header over a flipped IDAT byte, one whose next slice is truncated
(kept, repaired), and three malformed rows (coordinates, a `File_name` that
disagrees with `Key_slice_index`, a NaN spacing); `DL_info.csv` is saved with a
UTF-8 byte-order mark; `DL_info_no_columns.csv` lacks the release's columns.
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
from pydicom.dataelem import DataElement
from pydicom.datadict import tag_for_keyword
from pydicom.uid import ImplicitVRLittleEndian, JPEG2000Lossless, generate_uid

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
    ds.SliceLocation = -5.0 * index
    ds.WindowCenter, ds.WindowWidth = "40", "400"
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


def _raw(keyword, text, implicit=False):
    """A change that writes `text` as `keyword`'s value whatever its VR allows.

    Written as an LO element: explicit-VR readers see a string where a number
    belongs, implicit-VR ones (which take the VR from the dictionary) a DS or IS
    that does not parse, as hand-edited or badly converted exports hold.
    """
    def change(ds):
        tag = tag_for_keyword(keyword)
        ds[tag] = DataElement(tag, "LO", text)
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return change


def _set(**values):
    def change(ds):
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    return change


def _tiny(ds):
    pixels = ds.pixel_array[:8, :8].copy()
    ds.Rows = ds.Columns = 8
    ds.PixelData = pixels.tobytes()


def _spoil_slice(root, relpath, change):
    """Rewrites one slice of a series with `change` applied."""
    path = root / relpath
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


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
    # Header values that are present but not numbers, or numbers out of range.
    row("slope_text", _bad(root, "slope_text", _raw("RescaleSlope", "abc")),
        outcome="invalid_value")
    row("intercept_text_implicit", _bad(root, "intercept_text_implicit",
                                        _raw("RescaleIntercept", "1,5", implicit=True)),
        outcome="invalid_value")
    row("slope_zero", _bad(root, "slope_zero", _set(RescaleSlope="0")), outcome="invalid_value")
    row("spacing_negative", _bad(root, "spacing_negative", _set(PixelSpacing=["-0.7", "0.7"])),
        outcome="invalid_value")
    row("spacing_inf", _bad(root, "spacing_inf", _raw("PixelSpacing", "inf\\0.7")),
        outcome="invalid_value")
    row("tiny", _bad(root, "tiny", _tiny), (1, 1, 6, 6, 2, 5, 5, 2), outcome="image_too_small")
    # Optional values that are invalid: ignored, the example kept and the repair counted.
    row("window_text", _bad(root, "window_text", _raw("WindowCenter", "40\\x")))
    row("instance_text", _bad(root, "instance_text", _raw("InstanceNumber", "x1", implicit=True)))
    # A neighbour that cannot be read, one whose position cannot: the key slice stands in.
    slope = _series(root, 0, "neighbour_slope", 3)
    _spoil_slice(root, slope[0][0], _raw("RescaleSlope", "nan"))
    row("neighbour_slope", slope[1])
    position = _series(root, 0, "neighbour_position", 3)
    _spoil_slice(root, position[2][0], lambda ds: (
        _raw("ImagePositionPatient", "0\\0\\x")(ds), delattr(ds, "SliceLocation")))
    row("neighbour_position", position[1])
    # One series exported over two folders: numbered once, neighbours across the folders.
    split_series = _series(root, 0, "split_a", 3)
    moved = split_series[2][0].replace("split_a", "split_b")
    os.makedirs(root / os.path.dirname(moved))
    os.rename(root / split_series[2][0], root / moved)
    row("split_a", split_series[1])
    row("split_b", (moved, split_series[2][1]))
    # The same key slice by another spelling of its path, without the UID: one example.
    row("spelled", (good[1][0].replace("/series1/", "/./series1//"), ""),
        (4, 20, 12, 24, 8, 18, 9, 26))
    # Windows separators: the validation patient's slice, found and split as such.
    row("backslash", (validation[2][0].replace("/", "\\"), validation[2][1]))
    # Paths that leave the manual_dir are refused, never read.
    row("escape", ("../" + good[1][0], ""), outcome="outside_manual_dir")
    row("absolute", ("/etc/hostname", ""), outcome="outside_manual_dir")
    with open(root / "bookmarks.csv", "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow(["lesion_id", "relative_path", "sop_instance_uid",
                         *bookmarks.COORDINATE_NAMES])
        writer.writerows(rows)
    (root / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    repairs = {"window_text": ["invalid_optional_value"], "instance_text": ["invalid_optional_value"],
               "neighbour_slope": ["neighbor_replaced_by_key"],
               "neighbour_position": ["neighbor_replaced_by_key"]}
    (root / "expected_repairs.json").write_text(json.dumps(repairs, indent=1) + "\n")


def _flip_idat_byte(path):
    """Flips one byte in the middle of the IDAT data: the header stays intact."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8:start - 4], "big")
    data[start + length // 2] ^= 0xFF
    path.write_bytes(bytes(data))


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
    # One key slice per folder from here on, so that no spoiled file is another's neighbour.
    folders = {r["File_name"][:12] for r in (missing, eight_bit, malformed)}
    rest = []
    for record in others[3:]:
        if record["File_name"][:12] not in folders:
            folders.add(record["File_name"][:12])
            rest.append(dict(record))
    corrupt, repaired, mismatch, non_finite = rest[:4]
    for record in good + [eight_bit, corrupt, repaired]:
        folder = record["File_name"][:12]
        key = int(record["Key_slice_index"])
        (root / "Images_png" / folder).mkdir(parents=True, exist_ok=True)
        for number in (key - 1, key, key + 1):
            name = f"{number:03d}.png"
            if (dummy / "Images_png" / folder / name).exists():
                shutil.copy(dummy / "Images_png" / folder / name,
                            root / "Images_png" / folder / name)

    def png(record, offset=0):
        return (root / "Images_png" / record["File_name"][:12]
                / f"{int(record['Key_slice_index']) + offset:03d}.png")

    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(png(eight_bit))
    _flip_idat_byte(png(corrupt))
    neighbour = png(repaired, 1)
    neighbour.write_bytes(neighbour.read_bytes()[:-40])  # Truncated inside IDAT.
    malformed["Measurement_coordinates"] = "abc, 1"
    mismatch["Key_slice_index"] = str(int(mismatch["Key_slice_index"]) + 1)
    non_finite["Spacing_mm_px_"] = "nan, " + non_finite["Spacing_mm_px_"].split(", ", 1)[1]
    rows = good + [missing, eight_bit, malformed, corrupt, repaired, mismatch, non_finite]
    # As a spreadsheet saves "CSV UTF-8": with a byte-order mark.
    with open(root / "DL_info.csv", "w", newline="", encoding="utf-8-sig") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    with open(root / "DL_info_no_columns.csv", "w", newline="") as f:
        f.write("File_name,Key_slice_index\n000001_01_01_067.png,67\n")
    expected = {"examples": len(good) + 1, "missing_png": 1, "not_16bit_png": 1,
                "corrupt_png": 1, "malformed_row": 3, "neighbor_replaced_by_key": 1,
                "missing_png_file": missing["File_name"], "eight_bit_file": eight_bit["File_name"],
                "corrupt_png_file": corrupt["File_name"], "repaired_file": repaired["File_name"],
                "corrupt_neighbour": str(neighbour.relative_to(root)),
                "malformed_rows": {"coordinates": rows.index(malformed),
                                   "file_name_mismatch": rows.index(mismatch),
                                   "non_finite_spacing": rows.index(non_finite)}}
    (root / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")

if __name__ == "__main__":
    make_pacs(HERE / "pacs")
    make_release(HERE / "release")
