"""bin/detect on pydicom's CT files, a DICOM series folder and PNGs, with bad files among them.

The exported detector here has random weights (a tiny model with a score
threshold of 0, so it always gives `max_detections` boxes): the test is about
reading inputs, context slices, coordinates and the JSON, not detection quality.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import tensorflow as tf
from PIL import Image
from pydicom.data import get_testdata_file

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import png16
from deeplesion_tf.detection import classes as classes_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.detection import model_dir as model_dir_lib
from deeplesion_tf.serving import detect
from deeplesion_tf.serving import export
from tests.conftest import REPO_ROOT

SERIES = REPO_ROOT / "tfds_deeplesion" / "deeplesion" / "dummy_data" / "dicom" / "85479032" / \
    "study2" / "series1"
PADDING = 4.0
MODEL_KWARGS = dict(num_classes=2, width_multiplier=0.0625, fc_units=32,
                    anchor_sizes=[12.0, 24.0], test_pre_nms_top_k=300, test_post_nms_top_k=32,
                    score_threshold=0.0, max_detections=3)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """An export dir holding version 7 of a random-weight, two-class detector."""
    model_dir = tmp_path_factory.mktemp("random_detector")
    tf.keras.utils.set_random_seed(3)
    model = faster_rcnn.build_faster_rcnn(image_size=96, **MODEL_KWARGS)
    model_dir_lib.write_model_config(str(model_dir), MODEL_KWARGS, model_dir_lib.InputSettings(
        96, ((-1024.0, 3071.0),), PADDING))
    classes_lib.write(classes_lib.ClassSpec("test", ["nodule", "liver"], None), str(model_dir))
    tf.train.Checkpoint(model=model).save(str(model_dir / "ckpt"))
    export_dir = tmp_path_factory.mktemp("exported")
    export.export_detector(str(model_dir), str(export_dir), version=7)
    return export_dir


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
    return {
        "ct_small": get_testdata_file("CT_small.dcm"),
        "j2k": get_testdata_file("693_J2KI.dcm"),
        "mr": get_testdata_file("MR_small.dcm"),
        "series": str(SERIES),
        "png": str(pngs / "002.png"),
        "eight_bit": str(work / "eight_bit.png"),
        "garbage": str(work / "notes.dcm"),
        "missing": str(work / "missing.dcm"),
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
    order = ["mr", "ct_small", "garbage", "j2k", "series", "missing", "png", "eight_bit"]
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


def test_bad_files_fail_alone_with_a_summary(runs, inputs):
    code, stderr, output_dir = runs["mixed"]
    assert code == 1, stderr[-3000:]
    assert "Summary: 14 key slices written" in stderr and "4 inputs failed" in stderr, stderr[-3000:]
    assert f"FAILED {inputs['mr']}: not a CT image (Modality='MR'" in stderr
    assert f"FAILED {inputs['garbage']}: not a DICOM file" in stderr
    assert f"FAILED {inputs['missing']}: no such file or folder" in stderr
    assert (f"FAILED {inputs['eight_bit']}: a PNG of bit depth 8 and colour type 0; expected "
            "16-bit grayscale") in stderr
    # Two CT files, the 11 slices of the series and the one PNG given (its neighbours are context).
    written = sorted(os.path.relpath(os.path.join(d, f), output_dir)
                     for d, _, files in os.walk(output_dir) for f in files if f.endswith(".json"))
    assert written == sorted(["CT_small.json", "693_J2KI.json", "002.json"]
                             + [f"series1/{p.stem}.json" for p in SERIES.glob("*.dcm")])


def test_ct_small_json_matches_the_saved_model(runs, inputs, saved_model):
    code, stderr, output_dir = runs["alone"]
    assert code == 0, stderr[-3000:]
    result = _load(output_dir / "CT_small.json")
    ct = ct_reader.read_ct(inputs["ct_small"])
    assert result["source"] == inputs["ct_small"]
    assert result["image_shape"] == [128, 128]
    assert result["pixel_spacing_mm"] == list(ct.pixel_spacing_mm)
    assert result["context"]["previous"] == result["context"]["next"] == inputs["ct_small"]
    assert result["saved_model"] == str(saved_model / "7")
    loaded = tf.saved_model.load(str(saved_model / "7"))
    expected = loaded.signatures["serving_default"](
        images=tf.constant(np.repeat(ct.hu[None, :, :, None], 3, axis=-1)))
    detections = result["detections"]
    assert len(detections) == int(expected["num_detections"][0]) == 3
    for d, detection in enumerate(detections):
        box = np.array(detection["box_px"])
        np.testing.assert_allclose(box, expected["detection_boxes"][0, d], atol=1e-3)
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
    result = _load(runs["mixed"][2] / "693_J2KI.json")
    ct = ct_reader.read_ct(inputs["j2k"])
    assert result["image_shape"] == list(ct.hu.shape)
    assert result["pixel_spacing_mm"] == list(ct.pixel_spacing_mm)
    assert len(result["detections"]) == 3


def test_series_slices_have_their_neighbours_as_context(runs):
    output_dir = runs["mixed"][2]
    z = {str(p): float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
         for p in SERIES.glob("*.dcm")}
    head_to_feet = sorted(z, key=lambda p: -z[p])
    for i, path in enumerate(head_to_feet):
        result = _load(output_dir / "series1" / (os.path.basename(path)[:-4] + ".json"))
        assert result["source"] == path
        assert result["context"]["previous"] == head_to_feet[max(i - 1, 0)]
        assert result["context"]["next"] == head_to_feet[min(i + 1, len(z) - 1)]
        assert ("no previous slice: the key slice stands in" in result["context"]["notes"]) == (
            i == 0)
        assert len(result["detections"]) == 3


def test_png_slice_uses_its_folder_neighbours_and_the_given_spacing(runs, inputs):
    result = _load(runs["mixed"][2] / "002.json")
    folder = os.path.dirname(inputs["png"])
    assert result["context"] == {"previous": os.path.join(folder, "001.png"),
                                 "next": os.path.join(folder, "003.png"), "notes": []}
    assert result["pixel_spacing_mm"] == [0.7, 0.8]
    box = np.array(result["detections"][0]["box_px"])
    np.testing.assert_allclose(result["detections"][0]["box_mm"], box * [0.7, 0.8, 0.7, 0.8],
                               atol=2e-3)


def test_draw_writes_the_windowed_slice_with_class_coloured_boxes(runs, inputs):
    output_dir = runs["mixed"][2]
    result = _load(output_dir / "CT_small.json")
    image = np.asarray(Image.open(output_dir / "CT_small.png"))
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
    colour = detect._PALETTE[first["class_id"] - 1]
    rows = np.arange(int(np.ceil(ymin)) + 2, int(ymax) - 1)
    edge = image[rows, int(round(xmin))]
    assert rows.size == 0 or np.any(np.all(edge == colour, axis=-1))


def test_resolve_saved_model_picks_the_highest_version(saved_model, tmp_path):
    assert detect.resolve_saved_model(str(saved_model)) == str(saved_model / "7")
    assert detect.resolve_saved_model(str(saved_model / "7")) == str(saved_model / "7")
    with pytest.raises(FileNotFoundError, match="no saved_model.pb"):
        detect.resolve_saved_model(str(tmp_path))
