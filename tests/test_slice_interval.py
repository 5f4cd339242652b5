"""Slices at a fixed distance in mm: the interpolation on a hand ramp, and the builder's
wider context checked against the DICOM series it came from."""

import collections
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.data import key_slice
from deeplesion_tf.data import synthetic_pacs
from tests import tfds_helpers
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder


def _ramp(k, size=4):
    """`[2k + 1, size, size]`: the slice at step s holds 100 s HU everywhere."""
    return tf.constant(np.stack([np.full([size, size], 100.0 * s, np.float32)
                                 for s in range(-k, k + 1)]))


@pytest.mark.parametrize("stored, wanted, expected", [
    (0.5, 2.0, [-400.0, 0.0, 400.0]),   # 4 stored steps: exactly the slices at -4 and +4
    (0.8, 2.0, [-250.0, 0.0, 250.0]),   # 2.5 steps: half way between steps 2 and 3
    (5.0, 2.0, [-40.0, 0.0, 40.0]),     # 0.4 steps: between the key and its neighbours
    (float("nan"), 2.0, [0.0, 0.0, 0.0]),  # unknown interval: the key slice stands in
    (0.0, 2.0, [0.0, 0.0, 0.0]),
])
def test_interpolation_follows_a_linear_ramp_through_the_series(stored, wanted, expected):
    out = detector_pipeline.interpolate_slices(_ramp(4), stored, wanted)
    assert out.shape == (4, 4, 3)
    np.testing.assert_allclose(out.numpy()[0, 0], expected, atol=1e-3)


def test_nine_slices_and_a_stack_too_short_for_the_interval():
    out = detector_pipeline.interpolate_slices(_ramp(4), 1.0, 1.0, num_slices=9)
    np.testing.assert_allclose(out.numpy()[0, 0], 100.0 * np.arange(-4, 5), atol=1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="build it with a larger "
                                                            "context_slices"):
        detector_pipeline.interpolate_slices(_ramp(4), 0.4, 2.0)  # needs 5 steps


def test_context_steps():
    assert key_slice.context_steps(1) == ()
    assert key_slice.context_steps(3) == (-3, -2, 2, 3)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("context") / "pacs"
    synthetic_pacs.make_synthetic_pacs(root, num_patients=4, seed=6, image_size=64,
                                       num_workers=1)
    default = tfds_helpers.build(dl_builder.DeepLesionConfig(
        name="pacs_default", source="pacs", num_workers=1), tmp_path_factory.mktemp("d"), root)
    wide = tfds_helpers.build(dl_builder.DeepLesionConfig(
        name="pacs_context3", source="pacs", num_workers=1, context_slices=3),
        tmp_path_factory.mktemp("w"), root)
    return root, default, wide


def _series_hu(root):
    """`{series pseudonym: [N, H, W] HU head to feet}` of the PACS's DICOM series."""
    members = collections.defaultdict(list)
    for path in pathlib.Path(root, "dicom").rglob("*.dcm"):
        ct = ct_reader.read_ct(str(path))
        members[ct.series_instance_uid].append(
            (ct_reader.head_to_feet_key(ct.slice_position_mm, ct.instance_number, str(path)),
             ct.hu))
    return {deid.pseudonym(deid.site_salt(), "series", uid): np.stack(
        [hu for _, hu in sorted(m, key=lambda item: item[0])]) for uid, m in members.items()}


@pytest.mark.slow
def test_wider_context_stores_the_series_slices_at_each_step(builds):
    root, default, wide = builds
    assert "context_slices" not in default.info.features
    series = _series_hu(root)
    checked = 0
    for split in default.info.splits:
        plain = tfds_helpers.examples(default, split)
        context = tfds_helpers.examples(wide, split)
        assert len(plain) == len(context) > 0
        for a, b in zip(plain, context):
            for name in ("image", "previous_slice", "next_slice", "slice_index"):
                np.testing.assert_array_equal(a[name], b[name])
            stack = series[b["series_id"].decode()]
            for step, stored in zip(key_slice.context_steps(3), b["context_slices"]):
                index = min(max(int(b["slice_index"]) + step, 0), len(stack) - 1)
                np.testing.assert_array_equal(stored[..., 0].astype(np.int32) - 32768,
                                              np.round(stack[index]).astype(np.int32))
                checked += 1
    assert checked >= 16


@pytest.mark.slow
def test_the_pipeline_interpolates_from_the_wider_context(builds):
    _, _, wide = builds
    example = tfds_helpers.examples(wide, "train")[0]
    interval = float(example["slice_interval_mm"])
    batch = next(iter(detector_pipeline.make_detector_dataset(
        tf.data.Dataset.from_tensors(example), training=False, batch_size=1, image_size=64,
        box_padding_px=4, windows=[(-1024.0, 3071.0)], deterministic=True,
        slice_interval_mm=2.0 * interval)))
    # Two stored steps away: exactly the context slices at -2 and +2 (64 px: not resized).
    expected = [example["context_slices"][1], example["image"], example["context_slices"][2]]
    wide_window = (np.concatenate(expected, axis=-1).astype(np.float64) - 32768 + 1024) / 4095
    np.testing.assert_allclose(batch["images"].numpy()[0], np.clip(wide_window, 0, 1),
                               atol=1e-5)


def test_bin_detect_interpolates_a_series_at_the_model_s_interval():
    from deeplesion_tf.serving import slice_inputs

    hus = [np.full([16, 16], 100.0 * k, np.float32) for k in range(11)]
    names = [f"s{k}" for k in range(11)]
    # 0.5 mm apart, a model at 2 mm: the slices 4 away; 0.8 mm: 2.5 away, interpolated.
    item = slice_inputs._with_context(names, names, hus, 5, None, slice_interval_mm=2.0,
                                      stored_interval_mm=0.5)
    np.testing.assert_allclose(item.hu[0, 0], [100.0, 500.0, 900.0], atol=1e-3)
    item = slice_inputs._with_context(names, names, hus, 5, None, slice_interval_mm=2.0,
                                      stored_interval_mm=0.8)
    np.testing.assert_allclose(item.hu[0, 0], [250.0, 500.0, 750.0], atol=1e-3)
    # Near the end the last slice stands in, as the dataset stores it.
    item = slice_inputs._with_context(names, names, hus, 9, None, slice_interval_mm=2.0,
                                      stored_interval_mm=0.5)
    np.testing.assert_allclose(item.hu[0, 0], [500.0, 900.0, 1000.0], atol=1e-3)
    # Unknown interval: the key slice, noted.
    item = slice_inputs._with_context(names, names, hus, 5, None, slice_interval_mm=2.0)
    np.testing.assert_allclose(item.hu[0, 0], [500.0] * 3)
    assert any("slice interval is unknown" in note for note in item.notes)
