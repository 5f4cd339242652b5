"""Where the phantom's pixels are: the axial slice grid, and ellipses drawn on it.

`SliceGrid` maps pixel centres to millimetres (LPS `x`, `y`); `Ellipse` is an
in-plane shape and `Ellipsoid` a solid whose `c` axis is the body axis. The
window helpers find the pixels an ellipse covers without evaluating the whole
slice, for the painter and for lesions alike.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import numpy as np


class SliceGrid(NamedTuple):
    """Pixel centres of an axial slice: `x = x0 + col * spacing`, `y = y0 + row * spacing`.

    Attributes:
      size: rows = columns.
      spacing_mm: pixel spacing, the same along rows and columns.
      x0_mm: x of the centre of column 0.
      y0_mm: y of the centre of row 0.
    """

    size: int
    spacing_mm: float
    x0_mm: float
    y0_mm: float

    def columns_mm(self) -> np.ndarray:
        return self.x0_mm + self.spacing_mm * np.arange(self.size, dtype=np.float64)

    def rows_mm(self) -> np.ndarray:
        return self.y0_mm + self.spacing_mm * np.arange(self.size, dtype=np.float64)

    def to_pixels(self, x_mm, y_mm) -> Tuple[np.ndarray, np.ndarray]:
        """(x, y) in mm to 0-based `(column, row)` pixel coordinates."""
        return ((np.asarray(x_mm) - self.x0_mm) / self.spacing_mm,
                (np.asarray(y_mm) - self.y0_mm) / self.spacing_mm)


def make_grid(fov_mm: float, size: int, center_mm: Tuple[float, float] = (0.0, 0.0)) -> SliceGrid:
    """A `size` x `size` grid covering a square field of view.

    The spacing is rounded to 6 decimals and the origin to 3, so that the values
    written to DICOM headers are exactly the grid's.
    """
    spacing = round(fov_mm / size, 6)
    half = spacing * (size - 1) / 2.0
    return SliceGrid(size, spacing, round(center_mm[0] - half, 3), round(center_mm[1] - half, 3))


class Ellipse(NamedTuple):
    """An ellipse in a slice: centre (mm), semi-axes (mm), rotation of `a` from +x toward +y."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float = 0.0


class Ellipsoid(NamedTuple):
    """An ellipsoid whose `c` axis is the body axis; in-plane, `Ellipse(cx, cy, a, b, angle)`."""

    cx: float
    cy: float
    cz: float
    a: float
    b: float
    c: float
    angle: float = 0.0

    def scale_at(self, z: float) -> float:
        """Ratio of the cross-section at height `z` to the equator (0 outside)."""
        t = (z - self.cz) / self.c
        return math.sqrt(1.0 - t * t) if abs(t) < 1.0 else 0.0

    def cross_section(self, z: float) -> Optional[Ellipse]:
        """The slice of the ellipsoid at height `z`, or None where it misses."""
        f = self.scale_at(z)
        if f <= 0.0:
            return None
        return Ellipse(self.cx, self.cy, self.a * f, self.b * f, self.angle)


# Private to the phantom package: `painting` and `lesions` share these helpers.


def _window(grid: SliceGrid, x0: float, x1: float, y0: float, y1: float) -> Tuple[slice, slice]:
    """Rows and columns of the pixels whose centres may lie in `[x0, x1] x [y0, y1]` mm."""
    c0 = max(int(math.floor((x0 - grid.x0_mm) / grid.spacing_mm)), 0)
    c1 = min(int(math.ceil((x1 - grid.x0_mm) / grid.spacing_mm)) + 1, grid.size)
    r0 = max(int(math.floor((y0 - grid.y0_mm) / grid.spacing_mm)), 0)
    r1 = min(int(math.ceil((y1 - grid.y0_mm) / grid.spacing_mm)) + 1, grid.size)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _local_coordinates(x: np.ndarray, y: np.ndarray, window: Tuple[slice, slice],
                       e: Ellipse) -> Tuple[np.ndarray, np.ndarray]:
    """`(u, v)` over a window: pixel centres in units of `e`'s semi-axes, in `e`'s frame."""
    cos, sin = math.cos(e.angle), math.sin(e.angle)
    dx = x[window[1]][None, :] - e.cx
    dy = y[window[0]][:, None] - e.cy
    return (dx * cos + dy * sin) / e.a, (dy * cos - dx * sin) / e.b


def _ellipse_mask(grid: SliceGrid, x: np.ndarray, y: np.ndarray, e: Ellipse
                  ) -> Tuple[Tuple[slice, slice], Optional[np.ndarray]]:
    """The pixels whose centres lie inside `e`, as a window and a mask over it (None: none).

    `x`, `y` are `grid.columns_mm()`, `grid.rows_mm()`, passed in to be computed once.
    """
    cos, sin = math.cos(e.angle), math.sin(e.angle)
    ex = math.hypot(e.a * cos, e.b * sin)
    ey = math.hypot(e.a * sin, e.b * cos)
    window = _window(grid, e.cx - ex, e.cx + ex, e.cy - ey, e.cy + ey)
    if window[0].start >= window[0].stop or window[1].start >= window[1].stop:
        return window, None
    u, v = _local_coordinates(x, y, window, e)
    return window, u * u + v * v <= 1.0
