"""Where lesions go: each site's host tissues, heights and sizes, and placing a lesion there.

Placement is decided on a 1 mm planning grid and checked against the host
tissue's label map and the lesions already placed, so that a lesion lies
inside its host tissue and clears every other lesion of its series.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from deeplesion_tf.data import lesion_categories
from deeplesion_tf.data.phantom.anatomy import Anatomy, Tissue, aorta_center
from deeplesion_tf.data.phantom.geometry import SliceGrid, make_grid
from deeplesion_tf.data.phantom.lesions import Lesion, lesion_window


class Host(NamedTuple):
    """A tissue a lesion may sit in, and the lesion's HU range there."""

    tissues: Tuple[Tissue, ...]
    hu: Tuple[float, float]


class Site(NamedTuple):
    """Where a category's lesions occur and how they look.

    Attributes:
      name: the site (`truth.csv`'s `site`).
      category: a `lesion_categories.LesionCategory`.
      coarse_type: the release's `Coarse_lesion_type` code of the site.
      diameter_mm: range of the measured diameter (long axis, or short when
        `short_axis_sized`).
      axis_ratio: range of short / long.
      hosts: the tissues to pick from, with the lesion's HU in each.
      lobulation: largest relative amplitude of lobes.
      short_axis_sized: `diameter_mm` is the short axis (lymph nodes).
      core_probability: chance of a necrotic core in lesions over 25 mm.
      sampled_as: the category whose draws place lesions here, where it
        differs from `category`: which primary-site group picks the site and
        its weight as a secondary lesion (`synthetic_plan`). None: `category`.
    """

    name: str
    category: lesion_categories.LesionCategory
    coarse_type: int
    diameter_mm: Tuple[float, float]
    axis_ratio: Tuple[float, float]
    hosts: Tuple[Host, ...]
    lobulation: float = 0.0
    short_axis_sized: bool = False
    core_probability: float = 0.0
    sampled_as: Optional[lesion_categories.LesionCategory] = None

    @property
    def sampling_category(self) -> lesion_categories.LesionCategory:
        """The category the planner draws this site under (`sampled_as` or `category`)."""
        return self.sampled_as if self.sampled_as is not None else self.category


_C = lesion_categories
SITES: Dict[str, Site] = {s.name: s for s in (
    Site("liver", _C.LIVER_LESION, 4, (10.0, 45.0), (0.7, 1.0),
         (Host((Tissue.LIVER, Tissue.LIVER_VESSEL), (10.0, 35.0)),), core_probability=0.4),
    Site("lung", _C.LUNG_NODULE, 5, (6.0, 25.0), (0.75, 1.0),
         (Host((Tissue.LUNG, Tissue.LUNG_VESSEL), (20.0, 60.0)),), lobulation=0.12),
    Site("kidney", _C.ABDOMINAL_LESION, 6, (10.0, 30.0), (0.8, 1.0),
         (Host((Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA), (0.0, 20.0)),)),
    Site("abdominal node", _C.ABDOMINAL_LESION, 2, (10.0, 30.0), (0.55, 0.85),
         (Host((Tissue.ABDOMINAL_FAT,), (35.0, 50.0)),)),
    Site("mediastinum", _C.CHEST_LYMPH_NODE, 3, (10.0, 25.0), (0.55, 0.85),
         (Host((Tissue.MEDIASTINAL_FAT,), (35.0, 50.0)),), short_axis_sized=True),
    Site("bone", _C.MIXED, 1, (15.0, 50.0), (0.7, 1.0),
         (Host((Tissue.CANCELLOUS_BONE, Tissue.CORTICAL_BONE), (20.0, 80.0)),)),
    Site("soft tissue", _C.MIXED, 7, (15.0, 50.0), (0.6, 0.95),
         (Host((Tissue.SUBCUTANEOUS_FAT,), (30.0, 60.0)), Host((Tissue.MUSCLE,), (95.0, 125.0))),
         core_probability=0.3),
    # Pelvic lesions are pelvic lymph nodes, which the paper's abdominal class ("mainly
    # kidney lesions and lymph nodes") covers. They were first planted as mixed, and are
    # still drawn as mixed, so that the random draws, hence the images, bookmarks and
    # TFDS datasets (and `dummy_data/`) written before the change, stay valid: only
    # truth.csv's category columns differ.
    Site("pelvis", _C.ABDOMINAL_LESION, 8, (15.0, 50.0), (0.6, 0.95),
         (Host((Tissue.PELVIC_FAT,), (35.0, 55.0)),), core_probability=0.5,
         sampled_as=_C.MIXED),
)}
del _C


def site_z_range(anatomy: Anatomy, site: str) -> Tuple[float, float]:
    """Heights (mm) where a lesion of `site` may be centred."""
    organs = anatomy.organs
    if site == "liver":
        liver = organs["liver"]
        return liver.cz - 0.7 * liver.c, liver.cz + 0.55 * liver.c
    if site == "lung":
        return anatomy.lung_base + 30.0, anatomy.lung_apex - 35.0
    if site == "kidney":
        right, left = organs["kidney_right"], organs["kidney_left"]
        return min(right.cz, left.cz) - 0.45 * right.c, max(right.cz, left.cz) + 0.45 * left.c
    if site == "abdominal node":
        return anatomy.iliac_crest + 30.0, organs["liver"].cz - 20.0
    if site == "mediastinum":
        return anatomy.heart.cz + 20.0, anatomy.lung_apex - 40.0
    if site == "bone":
        return anatomy.femoral_z - 20.0, anatomy.lung_apex - 30.0
    if site == "soft tissue":
        return anatomy.femoral_z - 20.0, anatomy.lung_apex - 30.0
    if site == "pelvis":
        return anatomy.femoral_z - 25.0, anatomy.sacrum_top - 30.0
    raise KeyError(f"unknown lesion site {site!r}")


def site_mask(anatomy: Anatomy, labels: np.ndarray, grid: SliceGrid, z: float,
              host: Host, site: str) -> np.ndarray:
    """`[H, W]` bool: where a lesion of `site` may lie on the slice at `z`."""
    mask = np.isin(labels, np.asarray(host.tissues, np.uint8))
    if site == "abdominal node":
        # Retroperitoneal and mesenteric fat near the aorta, not any abdominal fat.
        ax, ay, _ = aorta_center(anatomy, z)
        dx = grid.columns_mm()[None, :] - ax
        dy = grid.rows_mm()[:, None] - ay
        mask &= (np.hypot(dx, dy) < 65.0) & (dy > -45.0)
    return mask


def lesions_overlap(first: Lesion, second: Lesion, gap_mm: float = 3.0) -> bool:
    """Whether two lesions' bounding spheres come within `gap_mm` of each other."""
    distance = math.dist(first.center_mm, second.center_mm)
    return distance < _reach(first) + _reach(second) + gap_mm


def _reach(lesion: Lesion) -> float:
    """Radius of a sphere around the lesion's centre that holds all of it."""
    return max(lesion.semi_axes_mm) * (1.0 + lesion.lobulation)


# Placement is decided on a 1 mm grid, whatever the output size, so that a
# patient's lesions are the same at every image size.
PLANNING_SPACING_MM = 1.0
_MARGIN_MM = 2.0


def planning_grid(anatomy: Anatomy) -> SliceGrid:
    """The 1 mm grid covering the patient's field of view."""
    size = int(math.ceil(anatomy.fov_mm / PLANNING_SPACING_MM))
    return make_grid(size * PLANNING_SPACING_MM, size, anatomy.fov_center)


def _sample_shape(site: Site, rng: np.random.Generator) -> Tuple[float, float]:
    """Measured (long, short) diameters of a new lesion, mm."""
    diameter = rng.uniform(*site.diameter_mm)
    ratio = rng.uniform(*site.axis_ratio)
    if site.short_axis_sized:
        return min(diameter / ratio, 40.0), diameter
    return diameter, diameter * ratio


def place_lesion(anatomy: Anatomy, site_name: str, z: float, interval_mm: float,
                 labels: np.ndarray, grid: SliceGrid, rng: np.random.Generator,
                 existing: Sequence[Lesion] = (), attempts: int = 12) -> Optional[Lesion]:
    """Finds room for a lesion of `site_name` whose key slice is at height `z`.

    The lesion's cross-section at `z` lies inside its host tissue with a 2 mm
    margin, and its bounding sphere clears every `existing` lesion. When it
    does not fit, it shrinks (not below the site's smallest size).

    Args:
      anatomy: the patient.
      site_name: a key of `SITES`.
      z: height of the key slice, mm.
      interval_mm: slice interval; the centre stays within a third of it of `z`.
      labels: `label_slice(anatomy, z, grid)`.
      grid: the grid of `labels` (`planning_grid(anatomy)`).
      rng: the generator to draw from.
      existing: lesions already placed in the same series.
      attempts: positions tried per size.

    Returns:
      The `Lesion`, or None where nothing fits.
    """
    site = SITES[site_name]
    host = site.hosts[int(rng.integers(len(site.hosts)))]
    mask = site_mask(anatomy, labels, grid, z, host, site_name)
    if not mask.any():
        return None
    depth = ndimage.distance_transform_edt(mask) * grid.spacing_mm
    long_mm, short_mm = _sample_shape(site, rng)
    smallest = site.diameter_mm[0]
    for shrink in range(7):
        scale = max(0.85 ** shrink, smallest / (short_mm if site.short_axis_sized else long_mm))
        lesion = _try_positions(anatomy, site, host, z, interval_mm, long_mm * scale,
                                short_mm * scale, depth, grid, rng, existing, attempts)
        if lesion is not None:
            return lesion
        if scale > 0.85 ** shrink:
            break
    return None


def _try_positions(anatomy: Anatomy, site: Site, host: Host, z: float, interval_mm: float,
                   long_mm: float, short_mm: float, depth: np.ndarray, grid: SliceGrid,
                   rng: np.random.Generator, existing: Sequence[Lesion],
                   attempts: int) -> Optional[Lesion]:
    lobulation = rng.uniform(0.0, site.lobulation) if site.lobulation else 0.0
    reach = 0.5 * short_mm * (1.0 + lobulation) + _MARGIN_MM
    rows, cols = np.nonzero(depth >= reach)
    if rows.size == 0:
        return None
    for _ in range(attempts):
        i = int(rng.integers(rows.size))
        lesion = _make_lesion(site, host, grid, rows[i], cols[i], z, interval_mm, long_mm,
                              short_mm, lobulation, rng)
        window, rho = lesion_window(lesion, z, grid)
        if rho is None:
            continue
        inside = rho < 1.0 + 0.5 / max(long_mm, 1.0)
        if not np.all(depth[window][inside] >= _MARGIN_MM):
            continue
        if any(lesions_overlap(lesion, other) for other in existing):
            continue
        return lesion
    return None


def _make_lesion(site: Site, host: Host, grid: SliceGrid, row: int, col: int, z: float,
                 interval_mm: float, long_mm: float, short_mm: float, lobulation: float,
                 rng: np.random.Generator) -> Lesion:
    """A lesion whose cross-section at `z` measures `long_mm` x `short_mm`."""
    x = grid.x0_mm + col * grid.spacing_mm + rng.uniform(-0.5, 0.5) * grid.spacing_mm
    y = grid.y0_mm + row * grid.spacing_mm + rng.uniform(-0.5, 0.5) * grid.spacing_mm
    c = 0.25 * (long_mm + short_mm) * rng.uniform(0.8, 1.2)
    dz = rng.uniform(-1.0, 1.0) * min(interval_mm / 3.0, 0.4 * c)
    f = math.sqrt(1.0 - (dz / c) ** 2)
    hu = rng.uniform(*host.hu)
    core = hu
    if long_mm > 25.0 and rng.random() < site.core_probability:
        core = hu - rng.uniform(15.0, 30.0)
    lobes = int(rng.choice([4, 6, 8])) if lobulation else 0
    return Lesion(site.name, (x, y, z + dz), (0.5 * long_mm / f, 0.5 * short_mm / f, c),
                  rng.uniform(0.0, math.pi), hu, core, lobulation, lobes)
