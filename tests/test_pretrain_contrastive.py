"""SimCLR pretraining of the detector's trunk on unlabelled slices (issue 25's second source)."""

import json
import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import detector_pipeline
from deeplesion_tf.data import hu_windows
from deeplesion_tf.data import unlabelled_slices
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn
from deeplesion_tf.nets import trunk_file
from deeplesion_tf.nets import vgg16
from deeplesion_tf.pretrain import contrastive
from deeplesion_tf.pretrain import outputs
from tests import binaries
from tests import phi
from tests import tfds_helpers
from tfds_deeplesion.deeplesion import dummy_data_generation

DICOM = dummy_data_generation.DUMMY_DIR / "dicom"
_WINDOW = (-160.0, 240.0)
_TINY = contrastive.ContrastiveSettings(width_multiplier=0.125, crop_size=32, batch_size=4,
                                        steps=2, projection_units=16, projection_dim=8)


def test_nt_xent_by_hand():
    # Views 0 and 1 of z1 = [1, 0], [0, 1], the same in z2: each view's partner has cosine
    # 1 and the two others 0, so every view's loss is -log(e / (e + 2)) at temperature 1.
    z = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    result = contrastive.nt_xent(z, z, temperature=1.0)
    np.testing.assert_allclose(float(result["loss"]), -math.log(math.e / (math.e + 2)), rtol=1e-6)
    assert float(result["accuracy"]) == 1.0
    # Partners swapped: view 0's partner is now orthogonal to it; the loss of each view is
    # -log(1 / (1 + e + 1)) and no partner is the most similar view.
    swapped = contrastive.nt_xent(z, z[::-1], temperature=1.0)
    np.testing.assert_allclose(float(swapped["loss"]), -math.log(1 / (math.e + 2)), rtol=1e-6)
    assert float(swapped["accuracy"]) == 0.0


def test_views_stay_inside_the_content_and_change_the_window_linearly():
    # Content 40 x 24 of a 64 x 64 input holding 200/255; the padding is 0. A crop that
    # reached the padding would mix 0 into the view: every view must be one flat value,
    # (200/255 - 0.5) * contrast + 0.5 + level with contrast in [0.8, 1.25], level in +-0.1.
    images = np.zeros([16, 64, 64, 3], np.uint8)
    images[:, :40, :24] = 200
    sizes = np.tile([[40, 24]], [16, 1]).astype(np.int32)
    views = contrastive.random_views(tf.constant(images), tf.constant(sizes), _TINY,
                                     tf.random.Generator.from_seed(0)).numpy()
    assert views.shape == (16, 32, 32, 3)
    flat = views.reshape(16, -1)
    np.testing.assert_allclose(flat.max(axis=1), flat.min(axis=1), atol=1e-5)
    value = 200 / 255 - 0.5
    assert np.all(flat[:, 0] >= value * 0.8 + 0.4 - 1e-5)
    assert np.all(flat[:, 0] <= value * 1.25 + 0.6 + 1e-5)
    assert len(np.unique(np.round(flat[:, 0], 4))) > 8  # The window changes per view.


def test_views_flip_half_the_crops():
    # A left-to-right ramp: a flipped view decreases along its columns.
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, None, :, None], [64, 64, 1, 3])
    sizes = np.full([64, 2], 64, np.int32)
    views = contrastive.random_views(tf.constant(ramp), tf.constant(sizes), _TINY,
                                     tf.random.Generator.from_seed(1)).numpy()
    slope = views[:, 16, -2, 0] - views[:, 16, 1, 0]
    flipped = np.mean(slope < 0)
    assert 0.3 < flipped < 0.7
    assert np.all(np.abs(slope) > 0)


def test_the_patients_are_the_datasets_split(dummy_pacs_builder):
    """Pretraining on train+validation never reads a test patient's slice."""
    test_patients = {e["patient_id"].decode() for e in tfds_helpers.examples(dummy_pacs_builder,
                                                                             "test")}
    others = {e["patient_id"].decode() for split in ("train", "validation")
              for e in tfds_helpers.examples(dummy_pacs_builder, split)}
    assert test_patients and others
    kept, survey = unlabelled_slices.find_series(DICOM, ("train", "validation"))
    assert {s.patient for s in kept} >= others
    assert not {s.patient for s in kept} & test_patients
    assert {s.split for s in kept} <= {"train", "validation"}
    only_test, _ = unlabelled_slices.find_series(DICOM, ("test",))
    assert {s.patient for s in only_test} >= test_patients
    # Every file is in one of the two answers or counted as left out.
    assert survey.files == survey.slices_kept + sum(survey.left_out.values())
    assert survey.left_out["patient_in_test"] == sum(len(s.members) for s in only_test)
    with pytest.raises(ValueError, match="splits must be some of"):
        unlabelled_slices.find_series(DICOM, ("training",))


def test_triples_are_neighbours_and_the_detectors_input():
    series, _ = unlabelled_slices.find_series(DICOM, ("train", "validation"))
    triples = unlabelled_slices.sample_triples(series, 6, seed=0)
    assert len(triples) == 6 and len(set(triples)) == 6
    for above, key, below in triples:
        # Head to feet: the slice above has the larger z, one interval away.
        interval = ct_reader.slice_interval([above.position, key.position, below.position])
        assert above.position - key.position == pytest.approx(interval)
        assert key.position - below.position == pytest.approx(interval)
    images, sizes, left_out = unlabelled_slices.load_inputs(triples[:2], image_size=96,
                                                            windows=[_WINDOW])
    assert left_out == {}
    for image, size, triple in zip(images, sizes, triples):
        hu = np.stack([ct_reader.read_ct(i.path).hu for i in triple], axis=-1)
        expected, _, expected_size = detector_pipeline.network_input(
            tf.constant(hu), 96, hu_windows.validate_windows([_WINDOW]))
        np.testing.assert_array_equal(size, expected_size.numpy())
        np.testing.assert_allclose(image / 255.0, expected.numpy(), atol=0.5 / 255 + 1e-6)


def test_a_truncated_slice_is_left_out_and_counted(tmp_path):
    series, _ = unlabelled_slices.find_series(DICOM, ("train", "validation"))
    # The third slice of a series of five or more is in three triples.
    member = next(s for s in series if len(s.members) >= 5).members[2]
    folder = tmp_path / "tree"
    shutil.copytree(DICOM, folder)
    broken = folder / pathlib.Path(member.path).relative_to(DICOM)
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) - 2000])  # The header reads; the pixels do not.
    copied, _ = unlabelled_slices.find_series(folder, ("train", "validation"))
    triples = [t for t in unlabelled_slices.sample_triples(copied, 10_000, seed=0)
               if str(broken) in {i.path for i in t}]
    assert len(triples) == 3  # As the slice above, the slice and the slice below.
    images, _, left_out = unlabelled_slices.load_inputs(triples, image_size=64,
                                                        windows=[_WINDOW])
    assert len(images) == 0 and sum(left_out.values()) == 3


def _tiny_detector(weights):
    tf.keras.utils.set_random_seed(1)
    return faster_rcnn.build_faster_rcnn(config_lib.from_flat(
        num_classes=2, weights=weights, width_multiplier=_TINY.width_multiplier,
        backbone_norm="group", fc_units=16, image_size=64, anchor_sizes=[16.0],
        anchor_ratios=[1.0], train_pre_nms_top_k=50, train_post_nms_top_k=20,
        test_pre_nms_top_k=50, test_post_nms_top_k=10, rois_per_image=8))


def test_the_pretrained_encoder_starts_the_detector(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, [8, 64, 64, 3]).astype(np.uint8)
    sizes = np.full([8, 2], 64, np.int32)
    tf.keras.utils.set_random_seed(_TINY.seed)
    initial = contrastive.build_encoder(_TINY)
    before = {w.path: w.numpy().copy() for w in initial.trainable_weights}
    encoder, history = contrastive.train(images, sizes, _TINY, log_every=1, encoder=initial)
    assert history.steps == [1, 2] and all(np.isfinite(history.loss))
    # Every trainable variable moved: the loss reaches the whole trunk and the head.
    for w in encoder.trainable_weights:
        assert not np.allclose(w.numpy(), before[w.path]), w.path
    directory = outputs.write_trunk(str(tmp_path), encoder, _TINY, image_size=64,
                                    window=_WINDOW, provenance={"patients": 1})
    spec = trunk_file.read_spec(directory)
    assert (spec.source, spec.fc_units, spec.norm) == ("simclr", 0, "group")
    detector = _tiny_detector(directory)
    loaded = [layer for layer in detector.backbone.layers if layer.weights]
    assert {layer.name for layer in loaded} == (
        set(vgg16.conv_layer_names()) | {f"{n}_norm" for n in vgg16.conv_layer_names()})
    for layer in loaded:
        for ours, theirs in zip(layer.get_weights(), encoder.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    # No FC6/FC7 in the file: the box head is a random start's.
    np.testing.assert_array_equal(detector.box_head.fc7.get_weights()[0],
                                  _tiny_detector(None).box_head.fc7.get_weights()[0])


def test_a_trunk_without_normalisation_is_refused_before_training():
    with pytest.raises(ValueError, match=r"needs a normalised trunk \(--norm=group\)"):
        contrastive.ContrastiveSettings(**{**_TINY.__dict__, "norm": "none"})


@pytest.mark.slow
def test_binary_writes_a_trunk_and_no_identifier(tmp_path):
    out = tmp_path / "pretrain"
    binaries.run("pretrain_trunk", "--flagfile=configs/pretrain_quickstart.flags",
                 f"--dicom_dir={DICOM}", f"--output_dir={out}", "--slices=12",
                 "--batch_size=4", "--steps=3", "--image_size=64", "--crop_size=32")
    report = json.loads((out / "report.json").read_text())
    kept, survey = unlabelled_slices.find_series(DICOM, ("train", "validation"))
    assert report["data"]["patients"] == survey.patients_kept == len({s.patient for s in kept})
    assert report["data"]["slices_used"] == 12
    assert report["history"]["steps"] == [3]
    spec = trunk_file.read_spec(str(out / "trunk"))
    assert spec.width_multiplier == 0.25 and spec.provenance["slices"] == 12
    assert (out / "pretraining.png").stat().st_size > 1000
    texts = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    phi.assert_absent(phi.identifiers(DICOM), texts)
    refused = subprocess.run(
        [sys.executable, "bin/pretrain_trunk", f"--dicom_dir={DICOM}", "--norm=none",
         f"--output_dir={tmp_path / 'none'}"], capture_output=True, text=True, timeout=300,
        cwd=binaries.REPO_ROOT)
    assert refused.returncode == 1 and contrastive.UNNORMALISED_TRUNK in refused.stderr
    assert not (tmp_path / "none" / "trunk").exists()
