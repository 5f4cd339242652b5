"""bin/detect on pydicom's CT files, a DICOM series folder and PNGs, with bad files among them.

The exported detector here has random weights (a tiny model with a score
threshold of 0, so it always gives `max_detections` boxes): the test is about
reading inputs, context slices, coordinates, the JSON, hostile inputs failing
alone, and no identifier or input path reaching a written file, not detection
quality.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import tensorflow as tf
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.uid import ImplicitVRLittleEndian
from pydicom.uid import generate_uid

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import png16
from deeplesion_tf.serving import detect
from deeplesion_tf.serving import detection_files
from deeplesion_tf.serving import slice_inputs
from tests import random_detector
from tests.conftest import REPO_ROOT

# Slow tier (exports a detector and runs bin/detect in subprocesses): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

SERIES = REPO_ROOT / "tfds_deeplesion" / "deeplesion" / "dummy_data" / "dicom" / "85479032" / \
    "study2" / "series1"
PADDING = 4.0
MODEL_KWARGS = dict(num_classes=2, width_multiplier=0.0625, fc_units=32,
                    anchor_sizes=[12.0, 24.0], test_pre_nms_top_k=300, test_post_nms_top_k=32,
                    score_threshold=0.0, max_detections=3)
# Identifiers of the PHI series (tests/test_tfds_pacs_bad_input.py scans the dataset for the like).
PHI = {"PatientName": "DOE^JANE^Q", "PatientID": "MRN20481234", "PatientBirthDate": "19480213",
       "AccessionNumber": "ACC88120001"}
RESCALE_SLOPE = 0x00281053


def _name(path):
    """The expected output name of a DICOM file, from its header (module docstring's rule)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    salt = deid.site_salt()
    return "_".join(deid.pseudonym(salt, kind, str(ds.get(keyword, "")).strip())
                    for kind, keyword in (("patient", "PatientID"), ("study", "StudyInstanceUID"),
                                          ("series", "SeriesInstanceUID"),
                                          ("instance", "SOPInstanceUID")))


def _png_name(path):
    return "png_" + deid.pseudonym(deid.site_salt(), "file", os.path.realpath(path))


def _write_phi_series(folder, slices=3):
    """Copies of CT_small carrying PHI, one series; returns their paths head to feet."""
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(slices):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, -5.0 * i]
        ds.PixelData = (ds.pixel_array + 10 * i).astype(ds.pixel_array.dtype).tobytes()
        path = folder / f"{PHI['PatientID']}_{i + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """An export dir holding version 7 of a random-weight, two-class detector."""
    return random_detector.export_random(tmp_path_factory, PADDING, MODEL_KWARGS)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Good and bad inputs: CT files, a series folder, a PNG series, non-CT and non-image files."""
    work = tmp_path_factory.mktemp("detect_inputs")
    pngs = work / "png_series"
    pngs.mkdir()
    for i, path in enumerate(sorted(SERIES.glob("*.dcm"))[:3]):
        (pngs / f"{i + 1:03d}.png").write_bytes(png16.encode_hu(ct_reader.read_ct(path).hu))
    Image.fromarray(np.zeros([16, 16], np.uint8)).save(work / "eight_bit.png")
    (work / "notes.dcm").write_text("not a DICOM file")
    # A PACS-style folder: the path names the patient, the headers carry PHI.
    phi_series = work / PHI["PatientID"] / PHI["AccessionNumber"] / "series1"
    phi_paths = _write_phi_series(phi_series)
    return {
        "ct_small": get_testdata_file("CT_small.dcm"),
        "j2k": get_testdata_file("693_J2KI.dcm"),
        "mr": get_testdata_file("MR_small.dcm"),
        "series": str(SERIES),
        "png": str(pngs / "002.png"),
        "eight_bit": str(work / "eight_bit.png"),
        "garbage": str(work / "notes.dcm"),
        "missing": str(work / "missing.dcm"),
        "phi_series": str(phi_series),
        "phi_paths": phi_paths,
    }


def _detect(saved_model, output_dir, paths, *flags):
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "bin" / "detect"), f"--saved_model={saved_model}",
         f"--output_dir={output_dir}", *flags, *paths],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(saved_model, inputs, tmp_path_factory):
    """Two runs side by side: every input with --draw, and CT_small alone."""
    mixed_dir = tmp_path_factory.mktemp("mixed")
    alone_dir = tmp_path_factory.mktemp("alone")
    order = ["mr", "ct_small", "garbage", "j2k", "series", "missing", "png", "eight_bit",
             "phi_series"]
    mixed = _detect(saved_model, mixed_dir, [inputs[k] for k in order], "--draw",
                    "--batch_size=4", "--png_pixel_spacing=0.7,0.8")
    alone = _detect(saved_model, alone_dir, [inputs["ct_small"]])
    results = {}
    for name, process, directory in (("mixed", mixed, mixed_dir), ("alone", alone, alone_dir)):
        _, stderr = process.communicate(timeout=300)
        results[name] = (process.returncode, stderr, directory)
    return results


def _load(path):
    with open(path) as f:
        return json.load(f)


def _written(output_dir):
    return sorted(os.path.relpath(os.path.join(d, f), output_dir)
                  for d, _, files in os.walk(output_dir) for f in files)


def test_bad_files_fail_alone_with_a_summary(runs, inputs):
    code, stderr, output_dir = runs["mixed"]
    assert code == 1, stderr[-3000:]
    assert "Summary: 17 key slices written" in stderr, stderr[-3000:]
    assert "4 inputs failed" in stderr, stderr[-3000:]
    assert f"FAILED {inputs['mr']}: not a CT image (Modality='MR'" in stderr
    assert f"FAILED {inputs['garbage']}: not a DICOM file" in stderr
    assert f"FAILED {inputs['missing']}: no such file or folder" in stderr
    assert (f"FAILED {inputs['eight_bit']}: a PNG of bit depth 8 and colour type 0; expected "
            "16-bit grayscale") in stderr
    # Two CT files, the 11 slices of the series, the one PNG given (its neighbours are
    # context) and the 3 PHI slices: flat, under pseudonyms, each with its drawing.
    names = ([_name(inputs["ct_small"]), _name(inputs["j2k"]), _png_name(inputs["png"])]
             + [_name(p) for p in SERIES.glob("*.dcm")] + [_name(p) for p in inputs["phi_paths"]])
    assert len(set(names)) == 17
    assert _written(output_dir) == sorted([n + ".json" for n in names]
                                          + [n + ".png" for n in names])
    # The log says which input went where (the log is not a file we write).
    assert f"{inputs['ct_small']}: 3 detections -> {output_dir / _name(inputs['ct_small'])}.json" \
        in stderr


def test_output_names_are_pseudonyms_of_the_identifiers(inputs):
    ds = pydicom.dcmread(inputs["phi_paths"][0], stop_before_pixels=True)
    salt = deid.site_salt()
    patient, study, series, instance = _name(inputs["phi_paths"][0]).split("_")
    assert patient == deid.pseudonym(salt, "patient", PHI["PatientID"])
    assert study == deid.pseudonym(salt, "study", ds.StudyInstanceUID)
    assert series == deid.pseudonym(salt, "series", ds.SeriesInstanceUID)
    assert instance == deid.pseudonym(salt, "instance", ds.SOPInstanceUID)
    ct = ct_reader.read_ct(inputs["phi_paths"][0])
    assert slice_inputs.dicom_name(ct, salt) == _name(inputs["phi_paths"][0])
    # The dataset builder's patient pseudonym: one patient, one pseudonym across the two.
    assert len(patient) == 16 and patient != PHI["PatientID"]
    assert slice_inputs.png_name(inputs["png"], salt) == _png_name(inputs["png"])
    assert slice_inputs.png_name(inputs["png"], "another salt") != _png_name(inputs["png"])


def test_ct_small_json_matches_the_saved_model(runs, inputs, saved_model):
    code, stderr, output_dir = runs["alone"]
    assert code == 0, stderr[-3000:]
    name = _name(inputs["ct_small"])
    assert _written(output_dir) == [name + ".json"]
    result = _load(output_dir / (name + ".json"))
    ct = ct_reader.read_ct(inputs["ct_small"])
    assert result["source"] == name
    assert result["image_shape"] == [128, 128]
    assert result["pixel_spacing_mm"] == list(ct.pixel_spacing_mm)
    assert result["context"] == {"previous": name, "next": name, "notes": [
        "no previous slice: the key slice stands in", "no next slice: the key slice stands in"]}
    assert result["saved_model"] == str(saved_model / "7")
    loaded = tf.saved_model.load(str(saved_model / "7"))
    expected = loaded.signatures["serving_default"](
        images=tf.constant(np.repeat(ct.hu[None, :, :, None], 3, axis=-1)))
    detections = result["detections"]
    assert len(detections) == int(expected["num_detections"][0]) == 3
    for d, detection in enumerate(detections):
        box = np.array(detection["box_px"])
        np.testing.assert_allclose(box, expected["detection_boxes"][0, d], atol=1e-3)
        assert np.all(box[2:] - box[:2] >= 1.0)  # no zero-area box
        assert detection["score"] == pytest.approx(float(expected["detection_scores"][0, d]),
                                                   abs=1e-5)
        assert detection["class_name"] == ["nodule", "liver"][detection["class_id"] - 1]
        row_mm, col_mm = ct.pixel_spacing_mm
        np.testing.assert_allclose(detection["box_mm"], box * ([row_mm, col_mm] * 2), atol=2e-3)
        sides = np.maximum(box[2:] - box[:2] - 2 * PADDING, 0.0)
        assert detection["long_diameter_px"] == pytest.approx(sides.max(), abs=2e-3)
        assert detection["short_diameter_px"] == pytest.approx(sides.min(), abs=2e-3)
        sides_mm = sides * [row_mm, col_mm]
        assert detection["long_diameter_mm"] == pytest.approx(sides_mm.max(), abs=2e-3)
        assert detection["short_diameter_mm"] == pytest.approx(sides_mm.min(), abs=2e-3)


def test_jpeg2000_ct_is_read(runs, inputs):
    result = _load(runs["mixed"][2] / (_name(inputs["j2k"]) + ".json"))
    ct = ct_reader.read_ct(inputs["j2k"])
    assert result["image_shape"] == list(ct.hu.shape)
    assert result["pixel_spacing_mm"] == list(ct.pixel_spacing_mm)
    assert len(result["detections"]) == 3


def test_series_slices_have_their_neighbours_as_context(runs):
    output_dir = runs["mixed"][2]
    z = {str(p): float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
         for p in SERIES.glob("*.dcm")}
    head_to_feet = [_name(p) for p in sorted(z, key=lambda p: -z[p])]
    for i, name in enumerate(head_to_feet):
        result = _load(output_dir / (name + ".json"))
        assert result["source"] == name
        assert result["context"]["previous"] == head_to_feet[max(i - 1, 0)]
        assert result["context"]["next"] == head_to_feet[min(i + 1, len(z) - 1)]
        assert ("no previous slice: the key slice stands in" in result["context"]["notes"]) == (
            i == 0)
        assert len(result["detections"]) == 3


def test_png_slice_uses_its_folder_neighbours_and_the_given_spacing(runs, inputs):
    result = _load(runs["mixed"][2] / (_png_name(inputs["png"]) + ".json"))
    folder = os.path.dirname(inputs["png"])
    assert result["source"] == _png_name(inputs["png"])
    assert result["context"] == {"previous": _png_name(os.path.join(folder, "001.png")),
                                 "next": _png_name(os.path.join(folder, "003.png")), "notes": []}
    assert result["pixel_spacing_mm"] == [0.7, 0.8]
    box = np.array(result["detections"][0]["box_px"])
    np.testing.assert_allclose(result["detections"][0]["box_mm"], box * [0.7, 0.8, 0.7, 0.8],
                               atol=2e-3)


def test_draw_writes_the_windowed_slice_with_class_coloured_boxes(runs, inputs):
    output_dir = runs["mixed"][2]
    name = _name(inputs["ct_small"])
    result = _load(output_dir / (name + ".json"))
    image = np.asarray(Image.open(output_dir / (name + ".png")))
    assert image.shape == (128, 128, 3)
    ct = ct_reader.read_ct(inputs["ct_small"])
    gray = np.round(np.clip((ct.hu + 160.0) / 400.0, 0, 1) * 255)
    # Far from every box the picture is the soft-tissue windowed slice in gray.
    boxes = np.array([d["box_px"] for d in result["detections"]])
    far = np.ones(gray.shape, bool)
    for ymin, xmin, ymax, xmax in boxes:
        # The label runs right of the box top; 100 px holds it.
        far[max(int(ymin) - 14, 0):int(ymax) + 3,
            max(int(xmin) - 3, 0):max(int(xmax) + 3, int(xmin) + 100)] = False
    np.testing.assert_array_equal(image[far], np.repeat(gray[far][:, None], 3, axis=1))
    # The first box's left edge has its class colour.
    first = result["detections"][0]
    ymin, xmin, ymax, xmax = first["box_px"]
    colour = detection_files.PALETTE[first["class_id"] - 1]
    rows = np.arange(int(np.ceil(ymin)) + 2, int(ymax) - 1)
    edge = image[rows, int(round(xmin))]
    assert rows.size == 0 or np.any(np.all(edge == colour, axis=-1))


# -- Hostile inputs and patient data ---------------------------------------------------------

def _ct_small_with(path, change, implicit=False):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    change(ds)
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def _slope_abc(ds):
    # An LO element where the dictionary says DS: pydicom cannot convert it.
    ds[RESCALE_SLOPE] = DataElement(RESCALE_SLOPE, "LO", "abc")


def _size(rows, columns):
    def change(ds):
        ds.Rows, ds.Columns = rows, columns
        ds.PixelData = np.zeros([rows, columns], np.int16).tobytes()
    return change


def _corrupt_idat(data):
    data = bytearray(data)
    start = data.index(b"IDAT") + 4
    data[start + 10] ^= 0xFF
    return bytes(data)


@pytest.fixture(scope="module")
def detector(saved_model):
    return detect.Detector(str(saved_model))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Hostile files (each with the reason it must fail with) and the good files after them."""
    work = tmp_path_factory.mktemp("hostile")
    pngs = work / "pngs"
    pngs.mkdir()
    hu = ct_reader.read_ct(get_testdata_file("CT_small.dcm")).hu
    (pngs / "001.png").write_bytes(png16.encode_hu(hu))
    (pngs / "002.png").write_bytes(_corrupt_idat(png16.encode_hu(hu + 5.0)))
    (pngs / "003.png").write_bytes(png16.encode_hu(hu + 10.0))
    (work / "thin").mkdir()
    (work / "thin" / "001.png").write_bytes(png16.encode_hu(np.zeros([1, 40], np.float32)))
    bad = [
        (_ct_small_with(work / "slope_explicit.dcm", _slope_abc),
         "RescaleSlope 'abc' is not a number"),
        (_ct_small_with(work / "slope_implicit.dcm", _slope_abc, implicit=True),
         "RescaleSlope 'abc' is not a number"),
        (_ct_small_with(work / "one_by_one.dcm", _size(1, 1)),
         "Rows x Columns '1x1' is below the minimum of 16 px per side"),
        (_ct_small_with(work / "one_by_forty.dcm", _size(1, 40)),
         "Rows x Columns '1x40' is below the minimum of 16 px per side"),
        (str(work / "thin" / "001.png"),
         "PNG height x width '1x40' is below the minimum of 16 px per side"),
        # png16 words it; it must name the PNG's broken chunk.
        (str(pngs / "002.png"), re.compile(r"PNG .*IDAT.*")),
    ]
    assert pydicom.dcmread(bad[1][0]).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    # A series folder with the bad DICOM files sorted before its good slices.
    series = work / "series"
    series.mkdir()
    good_series = [str(series / f"{i}.dcm") for i in (1, 2)]

    def slice_of_series(z):
        def change(ds):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.ImagePositionPatient = [0.0, 0.0, z]
        return change

    for i, path in enumerate(good_series):
        _ct_small_with(path, slice_of_series(-5.0 * i))
    folder_bad = [(_ct_small_with(series / "0_slope.dcm", _slope_abc),
                   "RescaleSlope 'abc' is not a number"),
                  (_ct_small_with(series / "0_tiny.dcm", _size(1, 1)),
                   "Rows x Columns '1x1' is below the minimum of 16 px per side")]
    return {"bad": bad, "folder_bad": folder_bad, "series": str(series),
            "good_series": good_series, "good_png": str(pngs / "003.png"),
            "corrupt_png": str(pngs / "002.png")}


def test_hostile_inputs_fail_alone_naming_file_and_attribute(detector, hostile, inputs, runs,
                                                              tmp_path):
    good = [inputs["ct_small"], hostile["good_png"], hostile["series"]]
    summary = detect.run(detector, [p for p, _ in hostile["bad"]] + good, str(tmp_path),
                         batch_size=4)
    failures = [(f.source, f.reason) for f in summary.failures]
    expected = hostile["bad"] + sorted(hostile["folder_bad"])
    assert [source for source, _ in failures] == [source for source, _ in expected]
    for (source, reason), (_, wanted) in zip(failures, expected):
        if isinstance(wanted, re.Pattern):
            assert wanted.fullmatch(reason), (source, reason)
        else:
            assert reason == wanted, source
    # The good files after them still run, to the same detections as alone.
    names = [_name(inputs["ct_small"]), _png_name(hostile["good_png"])] + [
        _name(p) for p in hostile["good_series"]]
    assert sorted(summary.written) == sorted(str(tmp_path / (n + ".json")) for n in names)
    alone = _load(runs["alone"][2] / (names[0] + ".json"))
    assert _load(tmp_path / (names[0] + ".json"))["detections"] == alone["detections"]
    png = _load(tmp_path / (names[1] + ".json"))
    assert png["context"] == {
        "previous": names[1], "next": names[1],
        "notes": [f"the previous PNG of the folder, {_png_name(hostile['corrupt_png'])}, does "
                  "not read as a slice: the key slice stands in",
                  "no previous slice: the key slice stands in",
                  "no next slice: the key slice stands in"]}
    assert len(png["detections"]) == 3
    first, second = (_load(tmp_path / (n + ".json")) for n in names[2:])
    assert (first["context"]["previous"], first["context"]["next"]) == (names[2], names[3])
    assert (second["context"]["previous"], second["context"]["next"]) == (names[2], names[3])
    assert len(first["detections"]) == len(second["detections"]) == 3


def test_a_slice_below_the_minimum_never_reaches_the_model(detector, tmp_path):
    class Refusing:
        path = detector.path
        num_slices = 3
        slice_interval_mm = None

        def __call__(self, hu, spacing=None):
            raise AssertionError(f"the model was called on {hu.shape}")

    item = detect.SliceInput("tiny", "/in/tiny.dcm", np.zeros([1, 40, 3], np.float32), None,
                             ("tiny", "tiny"), [])
    original = detect.gather_inputs
    detect.gather_inputs = lambda paths, spacing, salt, **kwargs: iter([item])
    try:
        summary = detect.run(Refusing(), ["/in/tiny.dcm"], str(tmp_path))
    finally:
        detect.gather_inputs = original
    assert [(f.source, f.reason) for f in summary.failures] == [
        ("/in/tiny.dcm", "slice height x width '1x40' is below the minimum of 16 px per side")]
    assert summary.written == [] and os.listdir(tmp_path) == []


def _identifiers(inputs):
    """Every identifier and input path a written file must not hold."""
    values = set(PHI.values()) | {part for part in PHI["PatientName"].split("^") if len(part) > 1}
    files = list(inputs["phi_paths"]) + [str(p) for p in SERIES.glob("*.dcm")] + [
        inputs["ct_small"], inputs["j2k"]]
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {str(ds.get(k)) for k in ("PatientID", "PatientName", "PatientBirthDate",
                                            "AccessionNumber", "StudyInstanceUID",
                                            "SeriesInstanceUID", "SOPInstanceUID") if ds.get(k)}
    pngs = [os.path.join(os.path.dirname(inputs["png"]), f) for f in ("001.png", "002.png",
                                                                      "003.png")]
    paths = set(files) | set(pngs) | {inputs["series"], inputs["phi_series"]}
    paths |= {os.path.realpath(p) for p in paths}
    return values, paths


def _scan(output_dir, values, paths):
    """Every file under `output_dir`: its name and its bytes hold none of `values` and `paths`."""
    written = [os.path.join(d, f) for d, _, names in os.walk(output_dir) for f in names]
    assert len(written) >= 3
    for path in written:
        name = os.path.relpath(path, output_dir)
        assert os.sep not in name, f"{name}: a sub-folder in the output"
        with open(path, "rb") as f:
            blob = f.read()
        for text in values | paths:
            assert text not in name, f"{text!r} in the output name {name}"
            assert text.encode() not in blob, f"{text!r} found in {path}"


def test_no_identifier_or_input_path_reaches_the_written_files(detector, inputs, runs, tmp_path):
    values, paths = _identifiers(inputs)
    assert "MRN20481234" in inputs["phi_series"]  # the folder names the patient
    # The library, on the PHI series as a folder, as a file and as PNGs in a folder named
    # by the PatientID; then bin/detect's mixed run (every input, drawn).
    phi_pngs = os.path.join(os.path.dirname(inputs["phi_series"]), "png")
    os.makedirs(phi_pngs, exist_ok=True)
    for i, path in enumerate(inputs["phi_paths"]):
        with open(os.path.join(phi_pngs, f"{PHI['PatientID']}_{i}.png"), "wb") as f:
            f.write(png16.encode_hu(ct_reader.read_ct(path).hu))
    png_files = sorted(os.path.join(phi_pngs, f) for f in os.listdir(phi_pngs))
    paths |= set(png_files) | {phi_pngs}
    summary = detect.run(detector, [inputs["phi_series"], inputs["phi_paths"][1], png_files[0]],
                         str(tmp_path / "library"), draw_window=(-160.0, 240.0))
    assert not summary.failures and len(summary.written) == 3 + 1 + 1
    _scan(tmp_path / "library", values, paths)
    results = [_load(p) for p in summary.written]
    assert all(len(r["detections"]) == 3 for r in results)
    _scan(runs["mixed"][2], values, paths)
def test_resolve_saved_model_picks_the_highest_version(saved_model, tmp_path):
    assert detect.resolve_saved_model(str(saved_model)) == str(saved_model / "7")
    assert detect.resolve_saved_model(str(saved_model / "7")) == str(saved_model / "7")
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        detect.resolve_saved_model(str(tmp_path))
