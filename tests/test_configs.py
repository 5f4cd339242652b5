"""Every preset in configs/ parses against the binary it is written for."""

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

PRESETS = {
    "quickstart.flags": "train_detector",
    "paper_single_class.flags": "train_detector",
    "paper_multi_class.flags": "train_detector",
    "categorize_quickstart.flags": "categorize_lesions",
    "synthetic_pacs.flags": "make_synthetic_pacs",
    "3dce_faster_rcnn_3slice.flags": "train_detector",
    "3dce_27slice.flags": "train_detector",
    "3dce_quickstart.flags": "train_detector",
    "pretrain_quickstart.flags": "pretrain_trunk",
}
# Loads the binary's flag definitions without running it, parses the preset,
# and prints the values that the preset sets.
_PARSE = """
import runpy, sys
from absl import flags
runpy.run_path(sys.argv[1], run_name="not_main")
flags.FLAGS(["prog", "--flagfile=" + sys.argv[2]] + sys.argv[3:])
for name in sorted(flags.FLAGS):
    if flags.FLAGS[name].present:
        print(f"{name}={flags.FLAGS[name].value}")
"""


def _parse(binary, preset, *extra):
    result = subprocess.run(
        [sys.executable, "-c", _PARSE, str(REPO_ROOT / "bin" / binary),
         str(REPO_ROOT / "configs" / preset), *extra],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_every_preset_is_listed():
    assert sorted(p.name for p in (REPO_ROOT / "configs").glob("*.flags")) == sorted(PRESETS)


@pytest.mark.parametrize("preset", ["paper_single_class.flags", "paper_multi_class.flags"])
def test_paper_presets_are_the_papers_settings(preset):
    values = _parse("train_detector", preset, *REQUIRED["train_detector"])
    expected = {"batch_size": "4", "rois_per_image": "32", "momentum": "0.9",
                "learning_rate": "0.001", "decay_every": "20000", "decay_factor": "0.1",
                "steps": "60000", "image_size": "512", "anchor_sizes": "['48', '72', '96']",
                "anchor_ratios": "['0.5', '1', '2']", "box_padding_px": "20.0",
                "roi_pooling": "max", "weights": "imagenet", "width_multiplier": "1.0"}
    assert {k: values[k] for k in expected} == expected
    assert values["classes"] == ("single" if "single" in preset else "pseudo_labels")


REQUIRED = {"train_detector": ("--model_dir=unused", "--data_dir=unused"),
            "categorize_lesions": ("--output_dir=unused", "--data_dir=unused"),
            "make_synthetic_pacs": ("--output_dir=unused",),
            "pretrain_trunk": ("--output_dir=unused", "--dicom_dir=unused")}


def test_other_presets_parse():
    values = _parse("train_detector", "quickstart.flags", *REQUIRED["train_detector"])
    assert values["dataset"] == "deeplesion/synthetic" and values["image_size"] == "256"
    for preset in ("categorize_quickstart.flags", "synthetic_pacs.flags"):
        binary = PRESETS[preset]
        assert _parse(binary, preset, *REQUIRED[binary])


def test_pretraining_preset_builds_the_detector_preset_s_trunk():
    # bin/train_detector --weights=DIR/trunk refuses a trunk of other settings (issue 25).
    detector = _parse("train_detector", "quickstart.flags", *REQUIRED["train_detector"])
    pretrain = _parse("pretrain_trunk", "pretrain_quickstart.flags", *REQUIRED["pretrain_trunk"])
    assert pretrain["splits"] == "['train', 'validation']"
    assert pretrain["norm"] == detector["backbone_norm"] == "group"
    for name in ("image_size", "window", "width_multiplier"):
        assert pretrain[name] == detector[name], name


@pytest.mark.parametrize("preset, images", [("3dce_faster_rcnn_3slice.flags", "1"),
                                            ("3dce_27slice.flags", "9")])
def test_nih_presets_are_the_3dce_code_s_settings(preset, images):
    # CADLab lesion_detector_3DCE config.yml / rcnn/config.py.
    values = _parse("train_detector", preset, *REQUIRED["train_detector"])
    expected = {"dataset": "deeplesion/release_3dce", "pixel_spacing_mm": "0.8",
                "slice_interval_mm": "2.0", "num_context_images": images, "image_size": "512",
                "window": "['-1024', '3071']", "box_padding_px": "5.0",
                "anchor_sizes": "['16', '24', '32', '48', '96']",
                "anchor_ratios": "['0.5', '1', '2']", "rpn_num_samples": "32",
                "rois_per_image": "32", "foreground_fraction": "0.25", "batch_size": "2",
                "learning_rate": "0.001", "weight_decay": "0.0005", "fc_units": "2048",
                "test_post_nms_top_k": "300", "weights": "imagenet"}
    assert {k: values[k] for k in expected} == expected


def test_the_cpu_3dce_preset_is_the_quickstart_with_context_images():
    quick = _parse("train_detector", "quickstart.flags", *REQUIRED["train_detector"])
    cpu = _parse("train_detector", "3dce_quickstart.flags", *REQUIRED["train_detector"])
    assert cpu.pop("num_context_images") == "3"
    assert cpu.pop("dataset") == "deeplesion/synthetic_3dce"
    quick.pop("dataset")
    assert cpu == quick
