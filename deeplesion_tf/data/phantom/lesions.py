"""Lesions: ellipsoids with lobulated edges, their pixels, outlines and measured axes.

A lesion is analytic like the anatomy, so the pixels it covers, its edge and
the axes a radiologist would measure are all exact at any slice and grid.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from deeplesion_tf.data.phantom.anatomy import Tissue
from deeplesion_tf.data.phantom.geometry import (Ellipse, Ellipsoid, SliceGrid, _ellipse_mask,
                                                 _local_coordinates)


class Lesion(NamedTuple):
    """A planted lesion: an ellipsoid whose `c` axis is the body axis.

    Attributes:
      site: a key of `SITES`.
      center_mm: `(x, y, z)`.
      semi_axes_mm: `(a, b, c)` with `a >= b` in-plane, `c` along z.
      angle: rotation of the `a` axis from +x toward +y, radians.
      hu: attenuation of the lesion.
      core_hu: attenuation inside half its radius (a necrotic core; = hu when homogeneous).
      lobulation: relative amplitude of the edge's lobes (0 for a smooth edge).
      lobes: number of lobes, even, so the lobes vanish at the four axis ends
        and the measured axes end on the lesion's edge.
    """

    site: str
    center_mm: Tuple[float, float, float]
    semi_axes_mm: Tuple[float, float, float]
    angle: float
    hu: float
    core_hu: float
    lobulation: float = 0.0
    lobes: int = 0

    def cross_section(self, z: float) -> Optional[Ellipse]:
        """The lesion's smooth (unlobulated) cross-section at height `z`, or None."""
        x, y, cz = self.center_mm
        a, b, c = self.semi_axes_mm
        return Ellipsoid(x, y, cz, a, b, c, self.angle).cross_section(z)


def _lesion_radius(lesion: Lesion, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Normalized radius of local points `(u, v)` (units of the semi-axes); < 1 inside."""
    rho = np.hypot(u, v)
    if lesion.lobulation > 0.0:
        phi = np.arctan2(v, u)
        rho = rho / (1.0 + lesion.lobulation * np.sin(lesion.lobes * phi))
    return rho


def lesion_window(lesion: Lesion, z: float, grid: SliceGrid
                  ) -> Tuple[Tuple[slice, slice], Optional[np.ndarray]]:
    """Window and `[h, w]` normalized radius of the lesion on the slice at `z` (None: misses)."""
    section = lesion.cross_section(z)
    if section is None:
        return (slice(0, 0), slice(0, 0)), None
    x, y = grid.columns_mm(), grid.rows_mm()
    grow = 1.0 + lesion.lobulation
    window, mask = _ellipse_mask(grid, x, y, section._replace(a=section.a * grow,
                                                              b=section.b * grow))
    if mask is None:
        return window, None
    u, v = _local_coordinates(x, y, window, section)
    return window, _lesion_radius(lesion, u, v)


def lesion_mask(lesion: Lesion, z: float, grid: SliceGrid) -> np.ndarray:
    """`[H, W]` bool: the pixels whose centres lie inside the lesion at height `z`."""
    mask = np.zeros((grid.size, grid.size), bool)
    window, rho = lesion_window(lesion, z, grid)
    if rho is not None:
        mask[window] = rho < 1.0
    return mask


def lesion_outline(lesion: Lesion, z: float, points: int = 720) -> np.ndarray:
    """`[points, 2]` `(x, y)` mm along the lesion's edge at height `z` (empty if it misses)."""
    section = lesion.cross_section(z)
    if section is None:
        return np.zeros((0, 2))
    phi = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    r = 1.0 + lesion.lobulation * np.sin(lesion.lobes * phi) if lesion.lobulation else 1.0
    u = section.a * r * np.cos(phi)
    v = section.b * r * np.sin(phi)
    cos, sin = math.cos(section.angle), math.sin(section.angle)
    return np.stack([section.cx + u * cos - v * sin, section.cy + u * sin + v * cos], axis=1)


def measurement_endpoints(lesion: Lesion, z: float) -> np.ndarray:
    """`[4, 2]` `(x, y)` mm: the long axis' two ends, then the short axis' two ends.

    The long axis is the cross-section's major axis, the short axis its
    perpendicular minor axis; both end on the edge (lobes vanish there).

    Raises:
      ValueError: the lesion does not reach height `z`.
    """
    section = lesion.cross_section(z)
    if section is None:
        raise ValueError(f"lesion at z={lesion.center_mm[2]:.1f} does not reach z={z:.1f}")
    cos, sin = math.cos(section.angle), math.sin(section.angle)
    long_axis = np.array([cos, sin]) * section.a
    short_axis = np.array([-sin, cos]) * section.b
    center = np.array([section.cx, section.cy])
    return np.stack([center - long_axis, center + long_axis,
                     center - short_axis, center + short_axis])


def paint_lesions(hu: np.ndarray, labels: np.ndarray, lesions: Sequence[Lesion], z: float,
                  grid: SliceGrid) -> None:
    """Paints the lesions crossing height `z` into `hu` and `labels` (in place)."""
    for lesion in lesions:
        window, rho = lesion_window(lesion, z, grid)
        if rho is None:
            continue
        inside = rho < 1.0
        values = np.where(rho < 0.5, lesion.core_hu, lesion.hu).astype(np.float32)
        hu[window][inside] = values[inside]
        labels[window][inside] = Tissue.LESION
