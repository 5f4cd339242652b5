"""Helpers for the dataset builder's tests."""

import os
import subprocess
import sys

import numpy as np
import tensorflow_datasets as tfds

import tfds_deeplesion  # noqa: F401 (registers deeplesion)
from deeplesion_tf.data import deid
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder


def mrn_in_split(split):
    """The first made-up MRN whose patient falls in `split` (default salt)."""
    for number in range(1000):
        mrn = f"MRN555{number:04d}"
        if deid.patient_split(deid.pseudonym(deid.DEFAULT_SALT, "patient", mrn)) == split:
            return mrn
    raise AssertionError(split)


def build(config, data_dir, manual_dir=None, beam=False):
    """Builds one config of `deeplesion` and returns the builder.

    `config` is a config name or a `DeepLesionConfig`.
    """
    options = {}
    if beam:
        beam_module = tfds.core.lazy_imports.apache_beam
        options["beam_options"] = beam_module.options.pipeline_options.PipelineOptions(
            ["--runner=DirectRunner"])
    builder = dl_builder.Builder(config=config, data_dir=os.fspath(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir else None, **options))
    return builder


def examples(builder, split):
    """All examples of a split as numpy dicts."""
    return list(tfds.as_numpy(builder.as_dataset(split=split)))


def all_examples(builder):
    return {split: examples(builder, split) for split in builder.info.splits}


def run_tfds_cli(args, cwd):
    """Runs the `tfds` command in a fresh process; returns the CompletedProcess."""
    command = [os.path.join(os.path.dirname(sys.executable), "tfds")] + list(args)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)


def box_pixels(example):
    """The example's lesion boxes in 0-based pixels `[ymin, xmin, ymax, xmax]`."""
    height, width = example["image"].shape[:2]
    return example["lesions"]["bbox"].astype(np.float64) * [height, width, height, width]


def build_dummy_pacs(tmp_path_factory):
    """dummy_data's PACS built in-process with the `pacs` config (64 x 64 slices).

    The data dir lives in the session's base temp dir, so every test module that
    asks gets the same build, made once.
    """
    from tfds_deeplesion.deeplesion import dummy_data_generation

    config = dl_builder.DeepLesionConfig(name="pacs_inline", source="pacs", num_workers=1)
    return build(config, tmp_path_factory.getbasetemp() / "pipelines_tfds",
                 manual_dir=dummy_data_generation.DUMMY_DIR)
