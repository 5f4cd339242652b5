"""Bookmark geometry: from two measured diameters to a lesion box (paper Sec. 2.1).

A radiologist's bookmark is two line segments on one CT slice: the lesion's long
axis `(x11, y11)-(x12, y12)` and the longest diameter perpendicular to it,
`(x21, y21)-(x22, y22)`.

Coordinates here are 0-based pixel coordinates of the slice, `x` the column and
`y` the row, pixel centres at integers. The NIH release writes them 1-based
(`from_release_coordinates` converts). Boxes follow the project's convention,
`[ymin, xmin, ymax, xmax]` in absolute pixels, clipped to `[0, size - 1]`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

# The paper pads the measurement's extent by 20 px; the NIH release's
# `Bounding_boxes` column used 5 px.
PAPER_PADDING_PX = 20.0
RELEASE_PADDING_PX = 5.0

COORDINATE_NAMES = ("x11", "y11", "x12", "y12", "x21", "y21", "x22", "y22")


class BookmarkError(ValueError):
    """A bookmark whose geometry cannot describe a lesion; the message names it."""


@dataclasses.dataclass(frozen=True)
class Bookmark:
    """One lesion measurement on one slice.

    Attributes:
      bookmark_id: a name for error messages and provenance (e.g. the lesion id).
      coords: `(x11, y11, x12, y12, x21, y21, x22, y22)`, 0-based pixels.
      image_height: rows of the slice.
      image_width: columns of the slice.
      spacing_mm: `(row_spacing, column_spacing)` in mm, or None where unknown.
    """

    bookmark_id: str
    coords: Tuple[float, ...]
    image_height: int
    image_width: int
    spacing_mm: Optional[Tuple[float, float]] = None


class LesionGeometry(NamedTuple):
    """What a bookmark says about its lesion.

    Attributes:
      box: `[ymin, xmin, ymax, xmax]`, the measurement's extent widened by the
        padding and clipped to the image, float64 absolute pixels.
      tight_box: the same extent without padding or clipping.
      long_diameter_px: length of the first (long) axis.
      short_diameter_px: length of the second (short) axis.
      long_diameter_mm: the long axis in mm; NaN without spacing.
      short_diameter_mm: the short axis in mm; NaN without spacing.
      center: `(y, x)`, the centre of `tight_box`.
    """

    box: np.ndarray
    tight_box: np.ndarray
    long_diameter_px: float
    short_diameter_px: float
    long_diameter_mm: float
    short_diameter_mm: float
    center: Tuple[float, float]


def validate(bookmark: Bookmark) -> np.ndarray:
    """Checks a bookmark and returns its coordinates as a `[4, 2]` (x, y) array.

    Raises:
      BookmarkError: wrong number of values, NaN or infinite values, a
        zero-length axis, or an endpoint outside the image.
    """
    name = f"bookmark {bookmark.bookmark_id!r}"
    if len(bookmark.coords) != 8:
        raise BookmarkError(f"{name}: expected 8 coordinates, got {len(bookmark.coords)}")
    try:
        points = np.asarray(bookmark.coords, dtype=np.float64).reshape(4, 2)
    except (TypeError, ValueError) as e:
        raise BookmarkError(f"{name}: coordinates are not numbers: {bookmark.coords!r}") from e
    if not np.all(np.isfinite(points)):
        raise BookmarkError(f"{name}: coordinates contain NaN or infinity: {bookmark.coords!r}")
    if bookmark.image_height <= 0 or bookmark.image_width <= 0:
        raise BookmarkError(
            f"{name}: image size {bookmark.image_height}x{bookmark.image_width} is empty")
    for axis, (a, b) in (("long", (0, 1)), ("short", (2, 3))):
        if np.hypot(*(points[a] - points[b])) == 0.0:
            raise BookmarkError(f"{name}: the {axis} axis has zero length")
    x, y = points[:, 0], points[:, 1]
    outside = (x < 0) | (x > bookmark.image_width - 1) | (y < 0) | (y > bookmark.image_height - 1)
    if np.any(outside):
        i = int(np.argmax(outside))
        raise BookmarkError(
            f"{name}: endpoint (x={x[i]:g}, y={y[i]:g}) lies outside the "
            f"{bookmark.image_width}x{bookmark.image_height} image")
    return points


def measure(bookmark: Bookmark, padding: float = PAPER_PADDING_PX) -> LesionGeometry:
    """Derives the box, diameters and centre of a bookmarked lesion.

    Args:
      bookmark: the measurement, 0-based pixels.
      padding: pixels added on each side of the measurement's extent
        (20 in the paper, 5 in the NIH release).

    Returns:
      A `LesionGeometry`; boxes are `[ymin, xmin, ymax, xmax]`, 0-based pixels.

    Raises:
      BookmarkError: see `validate`.
    """
    points = validate(bookmark)
    (xmin, ymin), (xmax, ymax) = points.min(axis=0), points.max(axis=0)
    tight = np.array([ymin, xmin, ymax, xmax])
    box = tight + np.array([-padding, -padding, padding, padding])
    box = np.clip(box, 0.0, [bookmark.image_height - 1, bookmark.image_width - 1] * 2)
    long_px = float(np.hypot(*(points[0] - points[1])))
    short_px = float(np.hypot(*(points[2] - points[3])))
    long_mm = short_mm = math.nan
    if bookmark.spacing_mm is not None:
        # Pixels need not be square: scale each axis's x and y separately.
        row_mm, col_mm = bookmark.spacing_mm
        scale = np.array([col_mm, row_mm])
        long_mm = float(np.hypot(*((points[0] - points[1]) * scale)))
        short_mm = float(np.hypot(*((points[2] - points[3]) * scale)))
    return LesionGeometry(
        box=box,
        tight_box=tight,
        long_diameter_px=long_px,
        short_diameter_px=short_px,
        long_diameter_mm=long_mm,
        short_diameter_mm=short_mm,
        center=((ymin + ymax) / 2.0, (xmin + xmax) / 2.0),
    )


def from_release_coordinates(values: Sequence[float]) -> Tuple[float, ...]:
    """The release's 1-based `Measurement_coordinates` as 0-based pixels."""
    return tuple(float(v) - 1.0 for v in values)


def to_release_coordinates(coords: Sequence[float]) -> Tuple[float, ...]:
    """0-based measurement coordinates as the release's 1-based ones."""
    return tuple(float(v) + 1.0 for v in coords)


def box_to_release(box: Sequence[float]) -> Tuple[float, float, float, float]:
    """`[ymin, xmin, ymax, xmax]` 0-based to the release's 1-based `x1, y1, x2, y2`."""
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return (xmin + 1.0, ymin + 1.0, xmax + 1.0, ymax + 1.0)


def box_from_release(values: Sequence[float]) -> np.ndarray:
    """The release's 1-based `Bounding_boxes` `x1, y1, x2, y2` as `[ymin, xmin, ymax, xmax]` 0-based."""
    x1, y1, x2, y2 = (float(v) - 1.0 for v in values)
    return np.array([y1, x1, y2, x2])
