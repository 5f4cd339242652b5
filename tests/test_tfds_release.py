"""The `release` config on PNGs laid out for the 851 real rows of DL_info.csv."""

import collections
import csv
import shutil

import numpy as np
import pytest

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import png16
from deeplesion_tf.data import release_format
from tests import tfds_helpers



def _slice_hu(number):
    """Each slice file holds a constant HU that tells which slice it is."""
    return float((number % 50) * 10 - 200)


@pytest.fixture(scope="module")
def real_rows(release_subset_csv):
    with open(release_subset_csv, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def release_build(tmp_path_factory, release_subset_csv, real_rows):
    root = tmp_path_factory.mktemp("release")
    shutil.copy(release_subset_csv, root / "DL_info.csv")
    encoded = {}

    def png(width, height, hu):
        if (width, height, hu) not in encoded:
            encoded[(width, height, hu)] = png16.encode_hu(np.full((height, width), hu))
        return encoded[(width, height, hu)]

    for row in real_rows:
        width, height = (int(v) for v in release_format.parse_numbers(row["Image_size"]))
        folder = root / "Images_png" / row["File_name"][:12]
        folder.mkdir(parents=True, exist_ok=True)
        key = int(row["Key_slice_index"])
        low, high = (int(v) for v in release_format.parse_numbers(row["Slice_range"]))
        # The key slice and its neighbours; slices outside `Slice_range` do not exist.
        for number in range(max(key - 1, low), min(key + 1, high) + 1):
            (folder / release_format.slice_file(number)).write_bytes(
                png(width, height, _slice_hu(number)))
    builder = tfds_helpers.build("release", tmp_path_factory.mktemp("data"), manual_dir=root)
    return builder, tfds_helpers.all_examples(builder)


def test_counts_and_official_splits(release_build, real_rows):
    builder, examples = release_build
    key_slices = {r["File_name"] for r in real_rows}
    assert len(key_slices) == 830
    assert sum(len(v) for v in examples.values()) == 830
    official = collections.defaultdict(set)
    for row in real_rows:
        official[release_format.SPLITS[int(row["Train_Val_Test"])]].add(row["File_name"])
    for split, items in examples.items():
        assert {f"{e['series_id'].decode()}_{e['slice_index'] + 1:03d}.png" for e in items} == \
            official[split]
    assert builder.info.metadata["skipped_bookmarks"] == {}
    assert builder.info.metadata["box_padding_px"] == 5.0


def test_every_lesion_reproduces_its_bounding_box(release_build, real_rows):
    _, examples = release_build
    by_index = {str(i): row for i, row in enumerate(real_rows)}
    seen = 0
    for example in (e for items in examples.values() for e in items):
        boxes = tfds_helpers.box_pixels(example)
        for lesion_id, box, measurement, noisy, coarse in zip(
                example["lesions"]["lesion_id"], boxes, example["lesions"]["measurement"],
                example["lesions"]["noisy"], example["lesions"]["coarse_type"]):
            row = by_index.pop(lesion_id.decode())
            expected = release_format.parse_numbers(row["Bounding_boxes"])
            np.testing.assert_allclose(bookmarks.box_to_release(box), expected, atol=0.01)
            np.testing.assert_allclose(
                bookmarks.to_release_coordinates(measurement),
                release_format.parse_numbers(row["Measurement_coordinates"]), atol=1e-3)
            assert noisy == bool(int(row["Possibly_noisy"]))
            assert coarse == int(row["Coarse_lesion_type"])
            seen += 1
    assert seen == 851 and not by_index  # every row, exactly once


def test_slices_with_two_lesions_keep_both(release_build, real_rows):
    _, examples = release_build
    per_key = collections.Counter(r["File_name"] for r in real_rows)
    multi = {name for name, n in per_key.items() if n > 1}
    assert multi  # 851 rows on 830 key slices
    for example in (e for items in examples.values() for e in items):
        name = f"{example['series_id'].decode()}_{example['slice_index'] + 1:03d}.png"
        assert len(example["lesions"]["lesion_id"]) == per_key[name]


def test_pngs_pass_through_with_neighbours_and_metadata(release_build, real_rows):
    _, examples = release_build
    row_by_name = {r["File_name"]: r for r in real_rows}
    for example in examples["test"] + examples["validation"]:
        name = f"{example['series_id'].decode()}_{example['slice_index'] + 1:03d}.png"
        row = row_by_name[name]
        width, height = (int(v) for v in release_format.parse_numbers(row["Image_size"]))
        assert example["image"].shape == (height, width, 1)
        assert example["image"].dtype == np.uint16
        key = int(row["Key_slice_index"])
        low, high = (int(v) for v in release_format.parse_numbers(row["Slice_range"]))
        offset = release_format.HU_OFFSET
        np.testing.assert_array_equal(example["image"], _slice_hu(key) + offset)
        # Clamped at the series edge: the key slice stands in for the missing neighbour.
        np.testing.assert_array_equal(example["previous_slice"], _slice_hu(max(key - 1, low)) + offset)
        np.testing.assert_array_equal(example["next_slice"], _slice_hu(min(key + 1, high)) + offset)
        spacing = release_format.parse_numbers(row["Spacing_mm_px_"])
        np.testing.assert_allclose(example["spacing_mm"], [spacing[1], spacing[0]], rtol=1e-6)
        assert example["slice_interval_mm"] == pytest.approx(spacing[2])
        np.testing.assert_allclose(example["window"],
                                   release_format.parse_numbers(row["DICOM_windows"]))
