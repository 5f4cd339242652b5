"""bin/train_detector end to end on four dummy-PACS slices.

A tiny detector trained by the binary must overfit the four slices (its top
detection hits a lesion with IoU > 0.5 on each), write its configs, summaries
and checkpoints, give the same predictions when restored in a new process,
and continue from its checkpoint when run again.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_deeplesion  # noqa: F401 (registers deeplesion)
from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.detection import model_dir as model_dir_lib
from deeplesion_tf.ops import boxes as box_ops
from tests.conftest import REPO_ROOT

# Slow tier (bin/train_detector in subprocesses): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

STEPS = 500
# Four key slices on which every lesion is bookmarked (dummy_data/truth.csv): a slice
# that also shows an unbookmarked lesion (one bookmarked on a nearby slice, say) asks the
# model to call the same thing lesion and background, and would make the test a coin toss.
SPLIT = "train[0:1]+train[2:4]+train[9:10]"
TINY_FLAGS = [
    "--dataset=deeplesion/pacs", f"--split={SPLIT}", "--image_size=128", "--box_padding_px=4",
    "--width_multiplier=0.125", "--fc_units=128", "--anchor_sizes=12,18,24,32",
    "--train_pre_nms_top_k=600", "--train_post_nms_top_k=128", "--test_pre_nms_top_k=600",
    "--test_post_nms_top_k=64", "--rpn_num_samples=64", "--batch_size=4",
    "--optimizer=adam", "--learning_rate=0.001", "--weight_decay=0", "--checkpoint_every=100",
    "--log_every=50", "--deterministic", "--cache", "--score_threshold=0.0", "--seed=1",
]


def _train(data_dir, model_dir, steps, *extra):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "train_detector"), f"--data_dir={data_dir}",
         f"--model_dir={model_dir}", f"--steps={steps}", *TINY_FLAGS, *extra],
        capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def trained(dummy_pacs_data_dir, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("detector")
    result = _train(dummy_pacs_data_dir, model_dir, STEPS)
    assert result.returncode == 0, result.stderr[-4000:]
    return model_dir


def _batch(data_dir):
    dataset = tfds.load("deeplesion/pacs", split=SPLIT, data_dir=str(data_dir))
    batches = detector_pipeline.make_detector_dataset(
        dataset, training=False, batch_size=4, image_size=128, box_padding_px=4)
    return next(iter(batches))


def test_writes_configs_checkpoints_and_summaries(trained):
    assert f"--steps={STEPS}" in (trained / "flags.txt").read_text()
    config = json.loads((trained / "model_config.json").read_text())
    assert config["inputs"] == {"image_size": 128, "windows": [[-1024.0, 3071.0]],
                                "box_padding_px": 4.0, "pixel_spacing_mm": None,
                                "slice_interval_mm": None}
    assert config["format"] == 2 and config["box_head"]["num_classes"] == 1
    assert config["backbone"] == {"weights": None, "width_multiplier": 0.125, "frozen_blocks": 0,
                                  "norm": "none", "num_context_images": 1}
    assert config["rpn"]["anchor_sizes"] == [12.0, 18.0, 24.0, 32.0]
    assert config["training"]["steps"] == STEPS and config["training"]["seed"] == 1
    assert json.loads((trained / "classes.json").read_text())["names"] == ["lesion"]
    assert tf.train.latest_checkpoint(str(trained)).endswith(f"ckpt-{STEPS}")
    tags = set()
    for path in (trained / "train").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert {"rpn_class_loss", "rpn_box_loss", "rcnn_class_loss", "rcnn_box_loss",
            "total_loss", "learning_rate", "rpn_recall"} <= tags


def test_overfits_four_phantom_slices(trained, dummy_pacs_data_dir):
    loaded = model_dir_lib.load_model(str(trained))
    batch = _batch(dummy_pacs_data_dir)
    detections = loaded.model(batch["images"])
    assert detections["num_detections"].numpy().min() >= 1
    top = detections["boxes"][:, :1]  # [4, 1, 4]
    iou = box_ops.pairwise_iou(top, batch["boxes"]).numpy()[:, 0]  # [4, N]
    valid = np.arange(iou.shape[1])[np.newaxis] < batch["num_lesions"].numpy()[:, np.newaxis]
    best = np.where(valid, iou, 0.0).max(axis=1)
    assert np.all(best > 0.5), best


def test_restored_in_a_new_process_predicts_the_same(trained, dummy_pacs_data_dir, tmp_path):
    batch = _batch(dummy_pacs_data_dir)
    images = tmp_path / "images.npy"
    np.save(images, batch["images"].numpy())
    script = tmp_path / "predict.py"
    script.write_text(
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from deeplesion_tf.detection import model_dir\n"
        f"loaded = model_dir.load_model({str(trained)!r})\n"
        f"out = loaded.model(np.load({str(images)!r}))\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **{{k: v.numpy() for k, v in out.items()}})\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = np.load(tmp_path / "out.npz")
    ours = model_dir_lib.load_model(str(trained)).model(batch["images"])
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(theirs[key], ours[key].numpy(), atol=1e-5, err_msg=key)


def test_resumes_from_its_checkpoint(trained, dummy_pacs_data_dir, tmp_path):
    resumed = tmp_path / "resumed"
    subprocess.run(["cp", "-r", str(trained), str(resumed)], check=True)
    result = _train(dummy_pacs_data_dir, resumed, STEPS + 10)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Resumed from {resumed}/ckpt-{STEPS} at step {STEPS}" in result.stderr
    assert tf.train.latest_checkpoint(str(resumed)).endswith(f"ckpt-{STEPS + 10}")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_finite_losses(dummy_pacs_data_dir, tmp_path, policy):
    result = _train(dummy_pacs_data_dir, tmp_path / policy, 2, f"--mixed_precision={policy}",
                    "--log_every=1")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done at step 2: rpn_class_loss" in result.stderr
    assert tf.train.latest_checkpoint(str(tmp_path / policy)).endswith("ckpt-2")


@pytest.mark.parametrize("bad,named", [
    (["--steps=0"], "--steps"), (["--batch_size=0"], "--batch_size"),
    (["--window=240,-160"], "--window"), (["--window=soft"], "--window"),
    (["--split=nosuch"], "nosuch"), (["--dataset=deeplesion/synthetic_benchmark"], "not built"),
])
def test_bad_flags_fail_before_anything_is_written(dummy_pacs_data_dir, tmp_path, bad, named):
    model_dir = tmp_path / "model"
    result = _train(dummy_pacs_data_dir, model_dir, 5, *bad)
    assert result.returncode != 0
    assert named in result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not model_dir.exists()


def test_data_dir_is_required(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "train_detector"),
         f"--model_dir={tmp_path / 'model'}"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "--data_dir" in result.stderr
    assert not (tmp_path / "model").exists()
