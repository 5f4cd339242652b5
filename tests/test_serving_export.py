"""bin/export_detector's SavedModel: same detections as the in-Python model, stock ops only.

A tiny detector trained by bin/train_detector for a few steps on the dummy PACS
(its values need not be good: with `--score_threshold=0.0` it always detects)
is exported; the SavedModel, loaded in a fresh process where `deeplesion_tf`
cannot be imported, must give the in-Python model's boxes and scores on the
training pipeline's preparation of the same slices.
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


def _in_python(trained, stored):
    """The in-Python model on the eval pipeline's preparation; boxes in slice pixels."""
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
    return {"boxes": boxes, "scores": out["scores"].numpy(), "classes": out["classes"].numpy(),
            "num_detections": out["num_detections"].numpy()}


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
    assert set(served["detection_class_names"][real].tolist()) == {b"lesion"}
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


def test_warmup_requests_parse_with_tf_serving_classes_and_run(exported, loaded):
    from tensorflow_serving.apis import prediction_log_pb2

    path = f"{exported}/assets.extra/tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == list(
        detector_module.SIGNATURES)
    slice_hu = export.warmup_slice(IMAGE_SIZE)
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
        assert outputs["num_detections"].numpy()[0] >= 1


BAD_INPUTS = [
    ("serving_default", {"images": np.zeros([64, 64, 3], np.float32)},
     r"images must be float32 HU of shape \[batch, height, width, 3\].*\[64 64 3\]"),
    ("serving_default", {"images": np.zeros([1, 64, 64, 1], np.float32)},
     r"images must be float32 HU of shape"),
    ("serving_default", {"images": np.zeros([0, 64, 64, 3], np.float32)}, r"images: empty batch"),
    ("serving_default", {"images": np.full([1, 8, 8, 3], np.nan, np.float32)},
     r"images: HU must be finite"),
    ("serving_default", {"images": np.zeros([1, 8, 8, 3], np.int32)},
     r"expected to be a float tensor but is a int32 tensor"),
    ("detect_hu_with_spacing", {"images": np.zeros([2, 8, 8, 3], np.float32),
                                "pixel_spacing": np.ones([1, 2], np.float32)},
     r"pixel_spacing must be float32 \[batch, 2\].*batch of\] \[2\]"),
    ("detect_hu_with_spacing", {"images": np.zeros([1, 8, 8, 3], np.float32),
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
    small, large = _png(np.zeros([8, 8], np.uint16)), _png(np.zeros([8, 9], np.uint16))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"one size; heights, widths:\] \[8 8 8\] \[8 8 9\]"):
        loaded.signatures["detect_png"](png_slices=tf.constant([[small, small, large]]))


def test_export_refuses_to_overwrite_a_version(trained, exported):
    export_dir = exported.rsplit("/", 1)[0]
    with pytest.raises(FileExistsError, match=f"{STEPS} exists"):
        export.export_module(export.module_from_model_dir(str(trained))[0], export_dir, STEPS)
    assert json.loads((trained / "classes.json").read_text())["names"] == ["lesion"]
