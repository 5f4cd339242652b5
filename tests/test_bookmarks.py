"""Bookmark geometry against hand-computed cases and the real release rows."""

import csv
import math

import numpy as np
import pytest

from deeplesion_tf.data import bookmarks
from deeplesion_tf.data import release_format
from deeplesion_tf.data.bookmarks import Bookmark, BookmarkError


def _bookmark(coords, height=100, width=100, spacing=None, name="b1"):
    return Bookmark(name, tuple(coords), height, width, spacing)


def test_axis_aligned_measurement_hand_computed():
    # Long axis horizontal from x=30..50 at y=40; short axis vertical y=35..45 at x=40.
    geo = bookmarks.measure(_bookmark((30, 40, 50, 40, 40, 35, 40, 45), spacing=(0.5, 0.8)),
                            padding=5)
    np.testing.assert_allclose(geo.tight_box, [35, 30, 45, 50])
    np.testing.assert_allclose(geo.box, [30, 25, 50, 55])
    assert geo.long_diameter_px == pytest.approx(20.0)
    assert geo.short_diameter_px == pytest.approx(10.0)
    # Columns are 0.8 mm wide, rows 0.5 mm tall.
    assert geo.long_diameter_mm == pytest.approx(16.0)
    assert geo.short_diameter_mm == pytest.approx(5.0)
    assert geo.center == pytest.approx((40.0, 40.0))


def test_oblique_axes_lengths_and_anisotropic_mm():
    geo = bookmarks.measure(_bookmark((10, 10, 13, 14, 13, 10, 9, 13), spacing=(2.0, 1.0)),
                            padding=0)
    assert geo.long_diameter_px == pytest.approx(5.0)
    assert geo.short_diameter_px == pytest.approx(5.0)
    # dx=3 at 1 mm, dy=4 at 2 mm -> sqrt(9 + 64).
    assert geo.long_diameter_mm == pytest.approx(math.sqrt(73.0))
    assert geo.short_diameter_mm == pytest.approx(math.sqrt(16.0 + 36.0))
    np.testing.assert_allclose(geo.tight_box, [10, 9, 14, 13])


def test_paper_padding_is_clipped_to_the_image():
    geo = bookmarks.measure(_bookmark((5, 90, 15, 95, 10, 88, 10, 97), height=100, width=120))
    # 20 px padding: ymin 88-20=68, xmin 5-20 -> 0, ymax 97+20 -> 99, xmax 15+20=35.
    np.testing.assert_allclose(geo.box, [68, 0, 99, 35])
    assert math.isnan(geo.long_diameter_mm)


@pytest.mark.parametrize(
    "coords, message",
    [
        ((10, 10, 10, 10, 12, 8, 12, 14), "long axis has zero length"),
        ((10, 10, 20, 10, 15, 7, 15, 7), "short axis has zero length"),
        ((10, float("nan"), 20, 10, 15, 7, 15, 13), "NaN"),
        ((10, 10, 20, 10, 15, 7, float("inf"), 13), "NaN or infinity"),
        ((-0.5, 10, 20, 10, 15, 7, 15, 13), "outside"),
        ((10, 10, 100, 10, 15, 7, 15, 13), "outside"),  # x = width is past the last column.
        ((10, 10, 20, 10, 15, 7, 15, 100.01), "outside"),
        ((10, 10, 20, 10, 15, 7), "expected 8 coordinates"),
    ],
)
def test_invalid_bookmarks_raise_naming_the_bookmark(coords, message):
    with pytest.raises(BookmarkError, match=message) as info:
        bookmarks.measure(_bookmark(coords, name="lesion-42"))
    assert "lesion-42" in str(info.value)


def test_endpoint_on_last_pixel_is_inside():
    geo = bookmarks.measure(_bookmark((0, 0, 99, 99, 0, 99, 99, 0)), padding=20)
    np.testing.assert_allclose(geo.box, [0, 0, 99, 99])


def test_release_conversions_round_trip():
    coords = (1.0, 2.0, 3.5, 4.25, 5.0, 6.0, 7.0, 8.0)
    assert bookmarks.from_release_coordinates(bookmarks.to_release_coordinates(coords)) == coords
    box = np.array([3.0, 1.0, 9.5, 7.25])
    assert bookmarks.box_to_release(box) == (2.0, 4.0, 8.25, 10.5)
    np.testing.assert_allclose(bookmarks.box_from_release(bookmarks.box_to_release(box)), box)


def test_reproduces_release_bounding_boxes_on_851_real_rows(release_subset_csv):
    with open(release_subset_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 851
    worst_box = worst_diameter = 0.0
    for i, row in enumerate(rows):
        width, height = (int(v) for v in release_format.parse_numbers(row["Image_size"]))
        coords = bookmarks.from_release_coordinates(
            release_format.parse_numbers(row["Measurement_coordinates"]))
        geo = bookmarks.measure(
            Bookmark(str(i), coords, height, width), padding=bookmarks.RELEASE_PADDING_PX)
        expected = release_format.parse_numbers(row["Bounding_boxes"])
        worst_box = max(worst_box, np.max(np.abs(np.subtract(bookmarks.box_to_release(geo.box),
                                                             expected))))
        long_px, short_px = release_format.parse_numbers(row["Lesion_diameters_Pixel_"])
        worst_diameter = max(worst_diameter, abs(geo.long_diameter_px - long_px),
                             abs(geo.short_diameter_px - short_px))
    assert worst_box < 0.01
    # The release rounds coordinates and diameters to 6 significant digits.
    assert worst_diameter < 2e-3


def test_release_number_cells():
    assert release_format.parse_numbers("233.537, 95.0204") == [233.537, 95.0204]
    assert release_format.format_numbers([233.537, 95.02041234, 5]) == "233.537, 95.0204, 5"
    with pytest.raises(ValueError):
        release_format.parse_numbers("1.0, , 2.0")
    with pytest.raises(ValueError):
        release_format.parse_numbers("abc")
