"""bin/export_detector's SavedModel: same detections as the in-Python model, stock ops only.

A tiny detector trained by bin/train_detector for a few steps on the dummy PACS
(its values need not be good: with `--score_threshold=0.0` it always detects)
is exported; the SavedModel, loaded in a fresh process where `deeplesion_tf`
cannot be imported, must give the in-Python model's boxes and scores on the
training pipeline's preparation of the same slices (less the boxes thinner than
one pixel once clipped to the slice, which the module drops).
"""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.data.release_format import HU_OFFSET
from deeplesion_tf.detection import model_dir as model_dir_lib
from deeplesion_tf.serving import detector_module
from deeplesion_tf.serving import export
from tests.conftest import REPO_ROOT
from tests.test_train_detector import TINY_FLAGS
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder

STEPS = 20
IMAGE_SIZE = 128  # TINY_FLAGS
PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}

# Slow tier (trains with bin/train_detector, exports, loads in fresh processes).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(dummy_pacs_data_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("serving_detector")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "train_detector"),
         f"--data_dir={dummy_pacs_data_dir}", f"--model_dir={model_dir}", f"--steps={STEPS}",
         *TINY_FLAGS], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return model_dir


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp("serving_export")
    result = export.export_detector(str(trained), str(export_dir))
    assert result.version == STEPS
    assert result.path == str(export_dir / str(STEPS))
    return result.path


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


@pytest.fixture(scope="module")
def slices(dummy_pacs_data_dir):
    """Stored uint16 `[H, W, 3]` (previous, key, next) of four 64x64 slices and two crops."""
    dataset = tfds.load(f"{deeplesion_dataset_builder.Builder.name}/pacs", split="train[:4]",
                        data_dir=str(dummy_pacs_data_dir))
    square = np.stack([np.concatenate([e[k] for k in detector_pipeline.SLICE_KEYS], axis=-1)
                       for e in tfds.as_numpy(dataset)])
    # Not square and not a divisor of the network input: exercises the resampling.
    crops = square[:2, 3:60, 5:52]
    return {"square": square, "crops": crops}


def _compact_numpy(keep, **rows):
    """`detector_module.compact_detections` by hand: kept rows first, in order; the rest 0."""
    out = {k: np.zeros_like(v) for k, v in rows.items()}
    for b in range(keep.shape[0]):
        kept = np.flatnonzero(keep[b])
        for k, v in rows.items():
            out[k][b, :len(kept)] = v[b, kept]
    return out, keep.sum(axis=1).astype(np.int32)


def _contrast_numpy(image, box):
    """Mean |difference| of neighbouring pixels of `image` `[H, W, C]` within a box, by hand."""
    y0, x0 = (int(np.clip(np.ceil(v), 0, n - 1)) for v, n in zip(box[:2], image.shape[:2]))
    y1, x1 = (int(np.clip(np.floor(v), 0, n - 1)) for v, n in zip(box[2:], image.shape[:2]))
    region = image[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
    down, right = np.diff(region, axis=0), np.diff(region, axis=1)
    count = down[..., 0].size + right[..., 0].size
    return (np.abs(down).sum() + np.abs(right).sum()) / count if count else 0.0


def _in_python(trained, stored, drop_thin=True):
    """The in-Python model on the eval pipeline's preparation; boxes in slice pixels.

    With `drop_thin`, boxes with a side below 1 px and boxes of one value on the
    key slice are dropped, as the module does.
    """
    examples = {"image": stored[..., 1:2], "previous_slice": stored[..., 0:1],
                "next_slice": stored[..., 2:3],
                "lesions": {"measurement": np.zeros([len(stored), 0, 8], np.float32),
                            "lesion_id": np.zeros([len(stored), 0], np.bytes_)}}
    batch = next(iter(detector_pipeline.make_detector_dataset(
        tf.data.Dataset.from_tensor_slices(examples), training=False, batch_size=len(stored),
        image_size=IMAGE_SIZE, box_padding_px=4.0, deterministic=True)))
    out = model_dir_lib.load_model(str(trained)).model(batch["images"])
    boxes = detector_pipeline.boxes_to_original(out["boxes"], batch["image_scale"][:, None, None])
    height, width = stored.shape[1:3]
    boxes = np.clip(boxes.numpy(), 0.0, [height - 1, width - 1] * 2)
    num = out["num_detections"].numpy()
    keep = np.arange(boxes.shape[1]) < num[:, None]
    if drop_thin:
        keep &= np.all(boxes[..., 2:] - boxes[..., :2] >= 1.0, axis=-1)
        key = batch["images"].numpy()[..., 1:2]  # one window: channel 1 is the key slice
        keep &= np.array([[_contrast_numpy(key[b], box) > detector_module.EMPTY_BOX_CONTRAST
                           for box in image_boxes]
                          for b, image_boxes in enumerate(out["boxes"].numpy())])
    rows, num = _compact_numpy(keep, boxes=boxes, scores=out["scores"].numpy(),
                               classes=out["classes"].numpy())
    return {**rows, "num_detections": num}


def _png(stored_slice):
    buffer = io.BytesIO()
    Image.fromarray(stored_slice).save(buffer, format="PNG")
    return buffer.getvalue()


ISOLATED_SCRIPT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("deeplesion_tf", "tfds_deeplesion"):
            raise ImportError(f"{name} is blocked: the SavedModel must not need it")
sys.meta_path.insert(0, Block())
for name in ("deeplesion_tf", "tfds_deeplesion"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} imported in the isolated process")
import numpy as np, tensorflow as tf

inputs = np.load(sys.argv[2], allow_pickle=True)
model = tf.saved_model.load(sys.argv[1])
out = {}
for part in ("square", "crops"):
    hu = tf.constant(inputs[part + "_hu"])
    for key, value in model.signatures["serving_default"](images=hu).items():
        out[f"{part}/float/{key}"] = value.numpy()
    pngs = tf.constant(inputs[part + "_png"])
    for key, value in model.signatures["detect_png"](png_slices=pngs).items():
        out[f"{part}/png/{key}"] = value.numpy()
    spacing = tf.fill([hu.shape[0], 2], 0.5)
    with_spacing = model.signatures["detect_hu_with_spacing"](images=hu, pixel_spacing=spacing)
    for key, value in with_spacing.items():
        out[f"{part}/spacing/{key}"] = value.numpy()
np.savez(sys.argv[3], **out)
print("blocked imports confirmed")
"""


@pytest.fixture(scope="module")
def isolated_outputs(exported, slices, tmp_path_factory):
    """Outputs of the SavedModel in a `python -I` process that cannot import our packages."""
    work = tmp_path_factory.mktemp("isolated")
    arrays = {}
    for part, stored in slices.items():
        arrays[part + "_hu"] = stored.astype(np.float32) - HU_OFFSET
        arrays[part + "_png"] = np.array([[_png(s[..., c]) for c in range(3)] for s in stored],
                                         dtype=object)
    np.savez(work / "inputs.npz", **arrays)
    (work / "run.py").write_text(ISOLATED_SCRIPT)
    result = subprocess.run(
        [sys.executable, "-I", str(work / "run.py"), exported, str(work / "inputs.npz"),
         str(work / "out.npz")], capture_output=True, text=True, timeout=300, cwd=str(work))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "blocked imports confirmed" in result.stdout
    return dict(np.load(work / "out.npz", allow_pickle=True))


@pytest.mark.parametrize("part", ["square", "crops"])
def test_fresh_process_matches_the_in_python_model(trained, slices, isolated_outputs, part):
    ours = _in_python(trained, slices[part])
    served = {k.split("/")[-1]: v for k, v in isolated_outputs.items()
              if k.startswith(f"{part}/float/")}
    np.testing.assert_array_equal(served["num_detections"], ours["num_detections"])
    assert ours["num_detections"].min() >= 1  # score threshold 0: there is something to compare
    real = np.arange(ours["scores"].shape[1]) < ours["num_detections"][:, None]
    np.testing.assert_allclose(served["detection_boxes"][real], ours["boxes"][real], atol=1e-4)
    np.testing.assert_allclose(served["detection_scores"][real], ours["scores"][real], atol=1e-4)
    np.testing.assert_array_equal(served["detection_classes"][real], ours["classes"][real])
    # (A tiny model may put every box in the padding: then none is left to name.)
    assert set(served["detection_class_names"][real].tolist()) <= {b"lesion"}
    # Padded rows are zero / empty.
    assert np.all(served["detection_boxes"][~real] == 0)
    assert np.all(served["detection_class_names"][~real] == b"")


@pytest.mark.parametrize("part", ["square", "crops"])
def test_png_signature_equals_float_signature(isolated_outputs, part):
    for key in detector_module.OUTPUTS:
        np.testing.assert_array_equal(isolated_outputs[f"{part}/png/{key}"],
                                      isolated_outputs[f"{part}/float/{key}"], err_msg=key)


def test_spacing_signature_gives_millimetres(isolated_outputs):
    out = {k.split("/")[-1]: v for k, v in isolated_outputs.items()
           if k.startswith("square/spacing/")}
    np.testing.assert_array_equal(out["detection_boxes"],
                                  isolated_outputs["square/float/detection_boxes"])
    np.testing.assert_allclose(out["detection_boxes_mm"], 0.5 * out["detection_boxes"])
    np.testing.assert_allclose(out["detection_diameters_mm"], 0.5 * out["detection_diameters_px"])
    # Diameters: the box's sides less the training padding (4 px each side), long first.
    boxes = out["detection_boxes"][0, 0]
    sides = np.maximum(boxes[2:] - boxes[:2] - 8.0, 0.0)
    np.testing.assert_allclose(out["detection_diameters_px"][0, 0],
                               [sides.max(), sides.min()], atol=1e-5)


def _graph_ops(saved_model_dir):
    proto = saved_model_pb2.SavedModel()
    with open(f"{saved_model_dir}/saved_model.pb", "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def test_graph_uses_only_registered_stock_ops(exported):
    ops = _graph_ops(exported)
    unregistered = sorted(op for op in ops if op_def_registry.get(op) is None)
    assert not unregistered, f"ops outside TensorFlow's registry: {unregistered}"
    assert not ops & PYTHON_OPS, sorted(ops & PYTHON_OPS)
    # The graph holds the whole pipeline: PNG decoding, resizing, RoI pooling, NMS.
    assert {"DecodePng", "ResizeBilinear", "CropAndResize", "Conv2D"} <= ops, sorted(ops)


def test_saved_model_cli_lists_the_signatures(exported):
    result = subprocess.run(["saved_model_cli", "show", "--all", "--dir", exported],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in detector_module.SIGNATURES:
        assert f"signature_def['{name}']" in result.stdout, name
    for name in (*detector_module.OUTPUTS, *detector_module.SPACING_OUTPUTS, "images",
                 "png_slices", "pixel_spacing"):
        assert f"['{name}'] tensor_info" in result.stdout, name


def test_warmup_requests_parse_with_tf_serving_classes_and_run(trained, exported, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    path = f"{exported}/assets.extra/tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == list(
        detector_module.SIGNATURES)
    slice_hu = export.warmup_slice(IMAGE_SIZE)
    stored = np.repeat((slice_hu + HU_OFFSET).astype(np.uint16)[None, :, :, None], 3, axis=-1)
    expected = _in_python(trained, stored)
    for log in logs:
        request = log.predict_log.request
        assert log.WhichOneof("log_type") == "predict_log"
        assert request.model_spec.name == "deeplesion"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        if "images" in inputs:
            assert inputs["images"].shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
            np.testing.assert_array_equal(inputs["images"][0, :, :, 1], slice_hu)
        if "pixel_spacing" in inputs:
            np.testing.assert_array_equal(inputs["pixel_spacing"], np.float32([[0.8, 0.8]]))
        if "png_slices" in inputs:
            decoded = tf.io.decode_png(inputs["png_slices"][0, 1], dtype=tf.uint16).numpy()
            np.testing.assert_array_equal(decoded[..., 0].astype(np.float32) - HU_OFFSET, slice_hu)
        outputs = loaded.signatures[request.model_spec.signature_name](
            **{k: tf.constant(v) for k, v in inputs.items()})
        # Every signature detects on the warmup slice what the in-Python model does.
        np.testing.assert_array_equal(outputs["num_detections"].numpy(),
                                      expected["num_detections"])
        n = int(expected["num_detections"][0])
        np.testing.assert_allclose(outputs["detection_scores"].numpy()[0, :n],
                                   expected["scores"][0, :n], atol=1e-4)


BAD_INPUTS = [
    ("serving_default", {"images": np.zeros([64, 64, 3], np.float32)},
     r"images must be float32 HU of shape \[batch, height, width, 3\].*\[64 64 3\]"),
    ("serving_default", {"images": np.zeros([1, 64, 64, 1], np.float32)},
     r"images must be float32 HU of shape"),
    ("serving_default", {"images": np.zeros([0, 64, 64, 3], np.float32)}, r"images: empty batch"),
    ("serving_default", {"images": np.full([1, 16, 16, 3], np.nan, np.float32)},
     r"images: HU must be finite"),
    ("serving_default", {"images": np.zeros([1, 16, 16, 3], np.int32)},
     r"expected to be a float tensor but is a int32 tensor"),
    # Below checks.MIN_SLICE_SIDE_PX = 16 on either side, in every signature.
    ("serving_default", {"images": np.zeros([1, 1, 1, 3], np.float32)},
     r"images: slices must be at least 16 px per side \(height and width\); got shape\] "
     r"\[1 1 1 3\]"),
    ("serving_default", {"images": np.zeros([2, 15, 64, 3], np.float32)},
     r"images: slices must be at least 16 px per side.*\[2 15 64 3\]"),
    ("detect_hu_with_spacing", {"images": np.zeros([1, 64, 1, 3], np.float32),
                                "pixel_spacing": np.ones([1, 2], np.float32)},
     r"images: slices must be at least 16 px per side.*\[1 64 1 3\]"),
    ("detect_hu_with_spacing", {"images": np.zeros([2, 16, 16, 3], np.float32),
                                "pixel_spacing": np.ones([1, 2], np.float32)},
     r"pixel_spacing must be float32 \[batch, 2\].*batch of\] \[2\]"),
    ("detect_hu_with_spacing", {"images": np.zeros([1, 16, 16, 3], np.float32),
                                "pixel_spacing": np.array([[0.7, 0.0]], np.float32)},
     r"pixel_spacing must be finite and > 0 mm"),
    ("detect_png", {"png_slices": np.array([b"a", b"b", b"c"])},
     r"png_slices must be a string tensor \[batch, 3\]"),
    ("detect_png", {"png_slices": np.zeros([0, 3], np.bytes_)}, r"png_slices: empty batch"),
    ("detect_png", {"png_slices": np.array([[b"not a png"] * 3])},
     r"png_slices: not PNG data at flat indices.*\[0 1 2\]"),
]


@pytest.mark.parametrize("signature,inputs,message", BAD_INPUTS,
                         ids=[f"{s}-{m[:24]}" for s, _, m in BAD_INPUTS])
def test_bad_input_is_a_clear_invalid_argument(loaded, signature, inputs, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})


def test_png_signature_rejects_8_bit_and_mixed_sizes(loaded):
    eight_bit = io.BytesIO()
    Image.fromarray(np.zeros([8, 8], np.uint8)).save(eight_bit, format="PNG")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"PNGs must be 16-bit grayscale.*\[8 8 8\] \[0 0 0\]"):
        loaded.signatures["detect_png"](png_slices=tf.constant([[eight_bit.getvalue()] * 3]))
    small, large = _png(np.zeros([16, 16], np.uint16)), _png(np.zeros([16, 17], np.uint16))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"one size; heights, widths:\] \[16 16 16\] \[16 16 17\]"):
        loaded.signatures["detect_png"](png_slices=tf.constant([[small, small, large]]))


@pytest.mark.parametrize("signature", ["detect_png", "detect_png_with_spacing"])
def test_png_signatures_reject_slices_below_the_minimum(loaded, signature):
    thin, good = _png(np.zeros([1, 40], np.uint16)), _png(np.zeros([40, 40], np.uint16))
    inputs = {"png_slices": tf.constant([[good, thin, good]])}
    if signature.endswith("spacing"):
        inputs["pixel_spacing"] = tf.constant([[0.7, 0.7]])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"png_slices: slices must be at least 16 px per side; heights, "
                       r"widths:\] \[40 1 40\] \[40 40 40\]"):
        loaded.signatures[signature](**inputs)


def _corrupt_idat(png):
    """`png` with one byte inside its IDAT data flipped (the header stays intact)."""
    data = bytearray(png)
    start = data.index(b"IDAT") + 4
    data[start + 10] ^= 0xFF
    return bytes(data)


def test_corrupt_png_data_names_png_slices(loaded, slices):
    good = _png(slices["square"][0, ..., 1])
    corrupt = _corrupt_idat(good)
    assert corrupt[:26] == good[:26]  # same signature and IHDR: the header checks pass
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        loaded.signatures["detect_png"](png_slices=tf.constant([[good, corrupt, good]]))
    message = raised.value.message
    assert "png_slices_decode" in message and "PNG" in message, message
    # The intact PNGs decode: the failure is the corrupt one's.
    out = loaded.signatures["detect_png"](png_slices=tf.constant([[good, good, good]]))
    assert out["num_detections"].numpy()[0] >= 1


def test_compact_detections_moves_kept_rows_up_in_order():
    keep = tf.constant([[False, True, False, True], [True, True, True, True],
                        [False, False, False, False]])
    scores = tf.constant([[0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3, 0.2], [0.9, 0.9, 0.9, 0.9]])
    boxes = tf.reshape(tf.range(3 * 4 * 4, dtype=tf.float32), [3, 4, 4]) + 1.0
    names = tf.constant([[b"a", b"b", b"c", b"d"], [b"e", b"f", b"g", b"h"], [b"i"] * 4])
    rows, num = detector_module.compact_detections(
        keep, {"scores": scores, "boxes": boxes, "names": names})
    np.testing.assert_array_equal(num.numpy(), [2, 4, 0])
    np.testing.assert_allclose(rows["scores"].numpy(), [[0.8, 0.6, 0, 0], [0.5, 0.4, 0.3, 0.2],
                                                        [0, 0, 0, 0]])
    np.testing.assert_array_equal(rows["names"].numpy(), [[b"b", b"d", b"", b""],
                                                          [b"e", b"f", b"g", b"h"], [b""] * 4])
    np.testing.assert_array_equal(rows["boxes"].numpy()[0], [[5, 6, 7, 8], [13, 14, 15, 16],
                                                             [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(rows["boxes"].numpy()[1], boxes.numpy()[1])
    assert not rows["boxes"].numpy()[2].any()


def test_box_contrast_is_the_mean_neighbour_difference_in_the_box():
    image = np.zeros([1, 8, 10, 2], np.float32)
    image[0, 4, 6] = [1.0, 0.5]
    image[0, :, 9] = 0.25
    boxes = np.array([[[0, 0, 3, 3], [3.5, 5.2, 5, 7], [0, 0, 7, 9], [4, 6, 4, 6],
                       [-3, -2, 2.9, 8.5], [2, 8, 7, 12]]], np.float32)
    contrast = detector_module.box_contrast(tf.constant(image), tf.constant(boxes)).numpy()[0]
    expected = [_contrast_numpy(image[0], box) for box in boxes[0]]
    np.testing.assert_allclose(contrast, expected, rtol=1e-6)
    # By hand: the 2 x 2 pixels 4..5, 6..7 hold one bright pixel: 4 differences, 2 of 1.5.
    assert contrast[1] == pytest.approx(3.0 / 4)
    assert contrast[0] == contrast[3] == contrast[4] == 0.0  # one value (or one pixel)
    # Rows 2..7, columns 8..9: 6 steps of 0.25 in both channels over 5 * 2 + 6 * 1 differences.
    assert contrast[5] == pytest.approx(6 * 2 * 0.25 / (5 * 2 + 6 * 1))


def test_empty_boxes_are_dropped_on_blank_slices(trained, loaded):
    """Threshold 0: without the rule a blank slice gets boxes; with it, none; noise keeps them."""
    module, _ = export.module_from_model_dir(str(trained))
    loaded_model = model_dir_lib.load_model(str(trained))
    plain = detector_module.DetectorModule(
        loaded_model.model, loaded_model.class_names, image_size=IMAGE_SIZE,
        windows=loaded_model.inputs.windows, box_padding_px=4.0, drop_empty_boxes=False)
    for hu in (-1000.0, 0.0, 40.0):
        blank = tf.fill([1, 96, 80, 3], hu)
        assert int(plain.detect_hu(blank)["num_detections"][0]) >= 1
        assert int(loaded.signatures["serving_default"](images=blank)["num_detections"][0]) == 0
    noisy = tf.constant(np.random.default_rng(0).normal(0, 10, [1, 64, 64, 3]), tf.float32)
    ours, theirs = module.detect_hu(noisy), plain.detect_hu(noisy)
    assert int(theirs["num_detections"][0]) >= 1
    for key in detector_module.OUTPUTS:
        np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy(), err_msg=key)


def test_boxes_clipped_to_nothing_are_dropped(trained, loaded, slices):
    """A wide slice: the network input's padding below it gives boxes that clip to 0 rows."""
    stored = slices["square"][:, 20:36, :, :]  # 16 x 64: 32 of the network's 128 rows
    raw = _in_python(trained, stored, drop_thin=False)
    ours = _in_python(trained, stored)
    raw_real = np.arange(raw["scores"].shape[1]) < raw["num_detections"][:, None]
    raw_sides = raw["boxes"][..., 2:] - raw["boxes"][..., :2]
    thin = raw_real & np.any(raw_sides < 1.0, axis=-1)
    assert thin.any(), "no box clipped to nothing: the test does not exercise the rule"
    served = loaded.signatures["serving_default"](
        images=tf.constant(stored.astype(np.float32) - HU_OFFSET))
    served = {k: v.numpy() for k, v in served.items()}
    np.testing.assert_array_equal(served["num_detections"], raw["num_detections"] - thin.sum(1))
    np.testing.assert_array_equal(served["num_detections"], ours["num_detections"])
    real = np.arange(ours["scores"].shape[1]) < ours["num_detections"][:, None]
    sides = served["detection_boxes"][..., 2:] - served["detection_boxes"][..., :2]
    assert np.all(sides[real] >= 1.0), sides[real]
    np.testing.assert_allclose(served["detection_boxes"], ours["boxes"], atol=1e-4)
    np.testing.assert_allclose(served["detection_scores"], ours["scores"], atol=1e-4)
    np.testing.assert_array_equal(served["detection_classes"], ours["classes"])
    # Scores stay best first; padded rows are zero / empty.
    assert np.all(np.diff(served["detection_scores"], axis=1)[real[:, 1:]] <= 0)
    assert np.all(served["detection_scores"][~real] == 0)
    assert np.all(served["detection_diameters_px"][~real] == 0)
    # (A tiny model may put every box in the padding: then none is left to name.)
    assert set(served["detection_class_names"][real].tolist()) <= {b"lesion"}
    assert np.all(served["detection_class_names"][~real] == b"")


def test_export_refuses_to_overwrite_a_version(trained, exported):
    export_dir = exported.rsplit("/", 1)[0]
    with pytest.raises(FileExistsError, match=f"{STEPS} exists"):
        export.export_module(export.module_from_model_dir(str(trained))[0], export_dir, STEPS)
    assert json.loads((trained / "classes.json").read_text())["names"] == ["lesion"]
