"""An analytic CT phantom of the adult torso, and lesions planted in it.

Everything is defined in millimetres in the DICOM patient coordinate system
(LPS): `x` grows toward the patient's left (image right, so the liver, on the
patient's right, is on the image left), `y` toward the back (image down) and
`z` toward the head. An axial slice at height `z` is drawn by evaluating the
analytic shapes at the pixel centres of a `SliceGrid`, so adjacent slices vary
smoothly, a lesion (an ellipsoid) also shows on the slices it crosses, and a
128-pixel slice is the same anatomy as a 512-pixel one.

Heights (mm, before per-patient jitter): lung apex ~ +228, carina ~ +100,
liver dome ~ +20, kidneys ~ -160, iliac crest ~ -330, femoral heads ~ -475,
perineum ~ -540.

Shape shorthand: `H = W = grid.size`; label maps are `[H, W]` uint8 `Tissue`
values, HU maps `[H, W]` float32.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from deeplesion_tf.data import lesion_categories

# The imaged z range: series never extend beyond it.
Z_BOTTOM_MM = -540.0
Z_TOP_MM = 255.0


class Tissue(enum.IntEnum):
    """Labels of the phantom's label map; `LESION` marks planted lesions."""

    AIR = 0
    TABLE = 1
    SUBCUTANEOUS_FAT = 2
    MUSCLE = 3
    LUNG = 4
    LUNG_VESSEL = 5
    MEDIASTINAL_FAT = 6
    HEART = 7
    BLOOD = 8
    AIRWAY = 9
    SOFT_TISSUE = 10
    LIVER = 11
    LIVER_VESSEL = 12
    SPLEEN = 13
    KIDNEY_CORTEX = 14
    KIDNEY_MEDULLA = 15
    ABDOMINAL_FAT = 16
    BOWEL_WALL = 17
    BOWEL_FLUID = 18
    BOWEL_GAS = 19
    BOWEL_CONTRAST = 20
    PELVIC_FAT = 21
    BLADDER = 22
    CORTICAL_BONE = 23
    CANCELLOUS_BONE = 24
    DISC = 25
    SPINAL_CANAL = 26
    LESION = 27


# (low, high) HU drawn once per patient; `_CONTRAST_HU` replaces them in
# contrast-enhanced patients.
_HU_RANGES = {
    Tissue.AIR: (-1000, -1000),
    Tissue.TABLE: (150, 250),
    Tissue.SUBCUTANEOUS_FAT: (-110, -90),
    Tissue.MUSCLE: (45, 58),
    Tissue.LUNG: (-870, -830),
    Tissue.LUNG_VESSEL: (35, 45),
    Tissue.MEDIASTINAL_FAT: (-100, -80),
    Tissue.HEART: (38, 48),
    Tissue.BLOOD: (35, 45),
    Tissue.AIRWAY: (-1000, -980),
    Tissue.SOFT_TISSUE: (35, 45),
    Tissue.LIVER: (56, 66),
    Tissue.LIVER_VESSEL: (35, 45),
    Tissue.SPLEEN: (45, 55),
    Tissue.KIDNEY_CORTEX: (32, 40),
    Tissue.KIDNEY_MEDULLA: (28, 34),
    Tissue.ABDOMINAL_FAT: (-110, -90),
    Tissue.BOWEL_WALL: (40, 50),
    Tissue.BOWEL_FLUID: (5, 20),
    Tissue.BOWEL_GAS: (-1000, -950),
    Tissue.BOWEL_CONTRAST: (200, 320),
    Tissue.PELVIC_FAT: (-105, -85),
    Tissue.BLADDER: (5, 15),
    Tissue.CORTICAL_BONE: (650, 800),
    Tissue.CANCELLOUS_BONE: (230, 320),
    Tissue.DISC: (75, 95),
    Tissue.SPINAL_CANAL: (15, 30),
    Tissue.LESION: (0, 0),
}
_CONTRAST_HU = {
    Tissue.BLOOD: (140, 190),
    Tissue.LUNG_VESSEL: (120, 170),
    Tissue.LIVER_VESSEL: (100, 140),
    Tissue.HEART: (90, 110),
    Tissue.KIDNEY_CORTEX: (140, 170),
    Tissue.KIDNEY_MEDULLA: (95, 120),
}

# Body profile along z (mm): lateral and anterior semi-axes of the skin outline.
_PROFILE_Z = (-560.0, -480.0, -400.0, -330.0, -200.0, -60.0, 60.0, 180.0, 235.0, 265.0, 320.0)
_PROFILE_A = (150.0, 170.0, 168.0, 156.0, 150.0, 152.0, 158.0, 152.0, 140.0, 80.0, 65.0)
_PROFILE_B = (105.0, 112.0, 112.0, 112.0, 118.0, 118.0, 118.0, 112.0, 100.0, 62.0, 55.0)
# Subcutaneous fat thickness (mm) for fat_scale 1.
_FAT_Z = (-560.0, -330.0, -60.0, 120.0, 270.0)
_FAT_MM = (24.0, 28.0, 26.0, 14.0, 8.0)
_MUSCLE_MM = 10.0
_SKIN_EXPONENT = 2.3


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


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """One patient's torso; every length in mm, every height a z in mm.

    Attributes:
      sex: "F" or "M" (uterus or prostate).
      contrast: whether blood, kidneys and vessels are contrast-enhanced.
      hu: `[len(Tissue)]` float32, the HU of each tissue.
      size_a, size_b: lateral and antero-posterior scale of the trunk.
      fat_scale: subcutaneous fat thickness relative to the profile.
      vertebra_scale: size of the vertebrae.
      vertebra_period, vertebra_phase: level height and offset of the discs.
      lung_apex, lung_base, heart, arch_z, carina_z: chest landmarks.
      organs: named abdominal and pelvic ellipsoids.
      iliac_crest, sacrum_top, femoral_z: pelvic landmarks.
      rib_top, rib_spacing, rib_drop: posterior height of the first rib, rib
        pitch, and how much lower a rib is anteriorly than at the spine.
      lung_vessels, liver_vessels: `[N, 4]` spheres `(x, y, z, r)` along branching vessels.
      bowel: `[N, 5]` spheres `(x, y, z, r, content)` of bowel loops, content a `Tissue`.
      fov_mm, fov_center: the scanner's field of view.
    """

    sex: str
    contrast: bool
    hu: np.ndarray
    size_a: float
    size_b: float
    fat_scale: float
    vertebra_scale: float
    vertebra_period: float
    vertebra_phase: float
    lung_apex: float
    lung_base: float
    heart: Ellipsoid
    arch_z: float
    carina_z: float
    organs: Dict[str, Ellipsoid]
    iliac_crest: float
    sacrum_top: float
    femoral_z: float
    rib_top: float
    rib_spacing: float
    rib_drop: float
    lung_vessels: np.ndarray
    liver_vessels: np.ndarray
    bowel: np.ndarray
    fov_mm: float
    fov_center: Tuple[float, float]


# ----------------------------------------------------------------------------
# Trunk geometry as functions of z.


class Trunk(NamedTuple):
    """Semi-axes of the nested trunk outlines at one height (superellipses).

    Each outline is `(a, b_anterior, b_posterior)`: lateral semi-axis and the
    extents in front of and behind the centre.
    """

    skin: Tuple[float, float, float]
    muscle: Tuple[float, float, float]
    cavity: Tuple[float, float, float]
    fat_mm: float


def trunk(anatomy: Anatomy, z: float) -> Trunk:
    """The skin, muscle and cavity outlines at height `z`."""
    a = float(np.interp(z, _PROFILE_Z, _PROFILE_A)) * anatomy.size_a
    b = float(np.interp(z, _PROFILE_Z, _PROFILE_B)) * anatomy.size_b
    fat = float(np.interp(z, _FAT_Z, _FAT_MM)) * anatomy.fat_scale
    # Supine patients are flattened at the back, where the fat is also thinner.
    skin = (a + fat * 0.5, b + fat * 0.5, 0.92 * b + fat * 0.3)
    muscle = (skin[0] - fat, skin[1] - fat, skin[2] - 0.6 * fat)
    cavity = (muscle[0] - _MUSCLE_MM, muscle[1] - _MUSCLE_MM, muscle[2] - _MUSCLE_MM)
    return Trunk(skin, muscle, cavity, fat)


class Spine(NamedTuple):
    """The vertebral body at one height: centre y, semi-axes, and whether a disc is cut."""

    y: float
    a: float
    b: float
    disc: bool


def spine(anatomy: Anatomy, z: float) -> Spine:
    """The vertebral column at height `z` (its centre is at x = 0)."""
    t = trunk(anatomy, z)
    y = t.muscle[2] - 58.0 * anatomy.vertebra_scale
    lumbar = float(np.clip((20.0 - z) / 180.0, 0.0, 1.0))
    a = (16.0 + 8.0 * lumbar) * anatomy.vertebra_scale
    b = (14.0 + 4.0 * lumbar) * anatomy.vertebra_scale
    disc = ((z - anatomy.vertebra_phase) % anatomy.vertebra_period) < 7.0
    return Spine(y, a, b, disc)


def aorta_center(anatomy: Anatomy, z: float) -> Tuple[float, float, float]:
    """Centre `(x, y)` and radius of the descending aorta at height `z` (radius 0 below it)."""
    s = spine(anatomy, z)
    # Beside the thoracic spine, then in front of the lumbar spine.
    lumbar = float(np.clip((anatomy.heart.cz - 40.0 - z) / 80.0, 0.0, 1.0))
    x = (s.a + 12.0) * (1.0 - lumbar) + 12.0 * lumbar
    y = (s.y - 0.4 * s.b) * (1.0 - lumbar) + (s.y - s.b - 12.0) * lumbar
    radius = 12.0 - 1.5 * lumbar if z > anatomy.iliac_crest else 0.0
    return x, y, radius


def lung_profile(anatomy: Anatomy, z: float) -> float:
    """Relative size of the lungs' cross-section at height `z` (0 outside the lungs)."""
    if not anatomy.lung_base < z < anatomy.lung_apex:
        return 0.0
    return float(np.interp(z, (anatomy.lung_base, anatomy.lung_base + 45.0,
                               anatomy.lung_apex - 70.0, anatomy.lung_apex),
                           (0.35, 1.0, 1.0, 0.25)))


def body_extent(anatomy: Anatomy, z: float) -> Tuple[float, float, float, float]:
    """`(xmin, xmax, ymin, ymax)` of the skin at height `z`, mm."""
    a, b_ant, b_post = trunk(anatomy, z).skin
    return -a, a, -b_ant, b_post


# ----------------------------------------------------------------------------
# Sampling one patient.


def _sample_hu(rng: np.random.Generator, contrast: bool) -> np.ndarray:
    table = np.zeros(len(Tissue), np.float32)
    for tissue in Tissue:
        low, high = (_CONTRAST_HU if contrast and tissue in _CONTRAST_HU else _HU_RANGES)[tissue]
        table[tissue] = rng.uniform(low, high)
    return table


def _branch_spheres(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray,
                    length: float, r0: float, r1: float, depth: int) -> List[np.ndarray]:
    """Spheres along a gently curving vessel and, recursively, its two children."""
    steps = max(int(length / 1.5), 2)
    points = []
    position = start.astype(np.float64)
    d = direction / np.linalg.norm(direction)
    for i in range(steps):
        d = d + rng.normal(0.0, 0.06, 3)
        d /= np.linalg.norm(d)
        position = position + 1.5 * d
        radius = r0 + (r1 - r0) * i / (steps - 1)
        points.append(np.array([*position, radius]))
    if depth > 0:
        for _ in range(2):
            child = d + rng.normal(0.0, 0.6, 3)
            at = points[int(rng.integers(steps // 3, steps))]
            points += _branch_spheres(rng, at[:3], child, length * 0.65,
                                      at[3] * 0.75, max(r1 * 0.8, 0.6), depth - 1)
    return points


def _sample_lung_vessels(rng: np.random.Generator, size_a: float, carina_z: float,
                         spine_y: float) -> np.ndarray:
    spheres = []
    for side in (-1.0, 1.0):
        hilum = np.array([side * 45.0 * size_a, spine_y - 35.0, carina_z - 15.0])
        for _ in range(18):
            direction = np.array([side * rng.uniform(0.3, 1.0), rng.uniform(-0.9, 0.9),
                                  rng.uniform(-1.2, 1.2)])
            spheres += _branch_spheres(rng, hilum, direction, rng.uniform(80.0, 130.0),
                                       rng.uniform(4.0, 6.0), 1.0, depth=3)
    return np.array(spheres, np.float64)


def _sample_liver_vessels(rng: np.random.Generator, liver: Ellipsoid) -> np.ndarray:
    spheres = []
    root = np.array([liver.cx + 0.45 * liver.a, liver.cy, liver.cz + 0.6 * liver.c])
    for _ in range(4):
        direction = np.array([-rng.uniform(0.3, 1.0), rng.uniform(-0.6, 0.6),
                              -rng.uniform(0.2, 1.0)])
        spheres += _branch_spheres(rng, root, direction, rng.uniform(50.0, 90.0),
                                   rng.uniform(4.0, 5.5), 1.5, depth=1)
    return np.array(spheres, np.float64)


def _sample_bowel(rng: np.random.Generator, anatomy: Anatomy, oral_contrast: bool) -> np.ndarray:
    """Random walks of spheres (bowel loops) in front of the retroperitoneum."""
    contents = [Tissue.BOWEL_FLUID, Tissue.BOWEL_GAS]
    weights = [0.65, 0.35]
    if oral_contrast:
        contents.append(Tissue.BOWEL_CONTRAST)
        weights = [0.4, 0.2, 0.4]
    loops = []
    for _ in range(int(rng.integers(34, 46))):
        content = float(contents[int(rng.choice(len(contents), p=weights))])
        z = rng.uniform(-450.0, -45.0)
        radius = rng.uniform(10.0, 16.0)
        x, y = rng.uniform(-0.7, 0.7), rng.uniform(-0.8, 0.0)
        t = trunk(anatomy, z)
        x, y = x * t.cavity[0], y * t.cavity[1]
        for _ in range(int(rng.integers(6, 12))):
            t = trunk(anatomy, z)
            s = spine(anatomy, z)
            back = s.y - s.b - 22.0
            x = float(np.clip(x + rng.normal(0, 12.0), -0.72 * t.cavity[0], 0.72 * t.cavity[0]))
            y = float(np.clip(y + rng.normal(0, 9.0), -0.85 * t.cavity[1], back))
            loops.append((x, y, z, radius, content))
            z = float(np.clip(z + rng.normal(0, 12.0), -460.0, -35.0))
    return np.array(loops, np.float64)


def _sample_abdominal_organs(rng: np.random.Generator, anatomy: Anatomy) -> Dict[str, Ellipsoid]:
    u = rng.uniform
    liver_cz = -65.0 + u(-10.0, 10.0)
    t = trunk(anatomy, liver_cz)
    a_c, b_ant, b_post = t.cavity
    s = spine(anatomy, liver_cz)
    kidney_cz = -160.0 + u(-12.0, 12.0)
    sk = spine(anatomy, kidney_cz)
    kidney_x = sk.a + 48.0 * anatomy.size_a
    kidney_size = u(0.9, 1.1)
    organs = {
        "liver": Ellipsoid(-0.38 * a_c, -0.1 * b_ant, liver_cz, 0.6 * a_c * u(0.95, 1.08),
                           0.82 * b_ant * u(0.95, 1.05), 85.0 * u(0.92, 1.08), u(-0.15, 0.15)),
        "liver_left": Ellipsoid(15.0, -0.5 * b_ant, liver_cz + 25.0, 55.0 * u(0.85, 1.15),
                                28.0 * u(0.85, 1.15), 42.0, u(0.0, 0.3)),
        "spleen": Ellipsoid(0.62 * a_c, s.y - 5.0, -55.0 + u(-10.0, 10.0), 48.0 * u(0.85, 1.15),
                            26.0 * u(0.85, 1.1), 50.0, -0.8 + u(-0.2, 0.2)),
        "stomach": Ellipsoid(40.0, -0.35 * b_ant, liver_cz + 25.0, 50.0 * u(0.85, 1.1),
                             34.0 * u(0.85, 1.1), 45.0, -0.5 + u(-0.2, 0.2)),
        "pancreas": Ellipsoid(18.0, sk.y - sk.b - 32.0, -118.0 + u(-8.0, 8.0), 60.0, 12.0, 18.0,
                              -0.25 + u(-0.1, 0.1)),
        "kidney_right": Ellipsoid(-kidney_x, sk.y + 4.0, kidney_cz - 8.0, 33.0 * kidney_size,
                                  24.0 * kidney_size, 55.0, math.radians(55.0)),
        "kidney_left": Ellipsoid(kidney_x, sk.y + 4.0, kidney_cz + 8.0, 33.0 * kidney_size,
                                 24.0 * kidney_size, 55.0, math.radians(125.0)),
    }
    femoral_z = anatomy.femoral_z
    tp = trunk(anatomy, femoral_z)
    organs["bladder"] = Ellipsoid(0.0, -0.4 * tp.cavity[1], femoral_z - 5.0, 45.0 * u(0.8, 1.15),
                                  35.0 * u(0.8, 1.15), 40.0 * u(0.85, 1.15))
    if anatomy.sex == "F":
        organs["uterus"] = Ellipsoid(0.0, -5.0, femoral_z + 35.0, 35.0, 24.0, 38.0, u(-0.2, 0.2))
    else:
        organs["prostate"] = Ellipsoid(0.0, -0.15 * tp.cavity[1], femoral_z - 50.0,
                                       20.0, 17.0, 18.0)
    for side, name in ((-1.0, "femoral_head_right"), (1.0, "femoral_head_left")):
        organs[name] = Ellipsoid(side * 0.62 * tp.cavity[0], -8.0, femoral_z, 24.0, 24.0, 24.0)
    return organs


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draws one patient's torso: body habitus, organ sizes and positions, vessels, bowel.

    Args:
      rng: the patient's generator (every draw comes from it, in a fixed order).

    Returns:
      An `Anatomy`.
    """
    u = rng.uniform
    contrast = bool(rng.random() < 0.75)
    base = Anatomy(
        sex="F" if rng.random() < 0.5 else "M",
        contrast=contrast,
        hu=_sample_hu(rng, contrast),
        size_a=u(0.88, 1.1),
        size_b=u(0.88, 1.1),
        fat_scale=u(0.4, 1.6),
        vertebra_scale=u(0.9, 1.1),
        vertebra_period=u(26.0, 31.0),
        vertebra_phase=u(0.0, 31.0),
        lung_apex=228.0 + u(-8.0, 8.0),
        lung_base=-35.0 + u(-10.0, 10.0),
        heart=Ellipsoid(22.0, 0.0, 45.0 + u(-8.0, 8.0), 62.0 * u(0.9, 1.1), 45.0 * u(0.9, 1.1),
                        55.0, math.radians(-40.0 + u(-8.0, 8.0))),
        arch_z=135.0 + u(-6.0, 6.0),
        carina_z=100.0 + u(-6.0, 6.0),
        organs={},
        iliac_crest=-330.0 + u(-10.0, 10.0),
        sacrum_top=-355.0 + u(-8.0, 8.0),
        femoral_z=-475.0 + u(-8.0, 8.0),
        rib_top=u(205.0, 215.0),
        rib_spacing=u(23.0, 26.0),
        rib_drop=u(130.0, 165.0),
        lung_vessels=np.zeros((0, 4)),
        liver_vessels=np.zeros((0, 4)),
        bowel=np.zeros((0, 5)),
        fov_mm=0.0,
        fov_center=(0.0, 0.0),
    )
    heart_t = trunk(base, base.heart.cz)
    base = dataclasses.replace(
        base, heart=base.heart._replace(cy=-0.3 * heart_t.cavity[1]))
    organs = _sample_abdominal_organs(rng, base)
    s = spine(base, base.carina_z)
    widest = max(trunk(base, z).skin[0] for z in np.arange(Z_BOTTOM_MM, Z_TOP_MM, 10.0))
    return dataclasses.replace(
        base,
        organs=organs,
        lung_vessels=_sample_lung_vessels(rng, base.size_a, base.carina_z, s.y),
        liver_vessels=_sample_liver_vessels(rng, organs["liver"]),
        bowel=_sample_bowel(rng, base, oral_contrast=bool(rng.random() < 0.5)),
        fov_mm=float(np.clip(2.0 * widest + u(20.0, 60.0), 300.0, 420.0)),
        fov_center=(u(-8.0, 8.0), u(0.0, 15.0)),
    )


# ----------------------------------------------------------------------------
# Painting a label map.


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


class _Painter:
    """Paints tissues into a label map, later shapes over earlier ones."""

    def __init__(self, grid: SliceGrid):
        self.grid = grid
        self.labels = np.zeros((grid.size, grid.size), np.uint8)
        self.x = grid.columns_mm()
        self.y = grid.rows_mm()

    def window(self, x0: float, x1: float, y0: float, y1: float) -> Tuple[slice, slice]:
        return _window(self.grid, x0, x1, y0, y1)

    def ellipse_mask(self, e: Ellipse) -> Tuple[Tuple[slice, slice], Optional[np.ndarray]]:
        return _ellipse_mask(self.grid, self.x, self.y, e)

    def ellipse(self, e: Optional[Ellipse], tissue: Tissue,
                over: Optional[Sequence[Tissue]] = None, clip: Optional[np.ndarray] = None) -> None:
        """Paints `e`; only over the `over` tissues and inside `clip` where given."""
        if e is None or e.a <= 0.0 or e.b <= 0.0:
            return
        window, mask = self.ellipse_mask(e)
        if mask is None:
            return
        target = self.labels[window]
        if over is not None:
            mask = mask & np.isin(target, np.asarray(over, np.uint8))
        if clip is not None:
            mask = mask & clip[window]
        target[mask] = tissue

    def layered(self, e: Optional[Ellipse], rim_mm: float, outer: Tissue, inner: Tissue,
                clip: Optional[np.ndarray] = None) -> None:
        """An ellipse of `inner` with a rim of `outer` (cortex and marrow, wall and content)."""
        if e is None:
            return
        self.ellipse(e, outer, clip=clip)
        if e.a > rim_mm and e.b > rim_mm:
            self.ellipse(e._replace(a=e.a - rim_mm, b=e.b - rim_mm), inner, clip=clip)

    def superellipse_norm(self, center_y: float, axes: Tuple[float, float, float]) -> np.ndarray:
        """`[H, W]` generalized radius of a trunk outline: < 1 inside."""
        a, b_ant, b_post = axes
        dy = self.y[:, None] - center_y
        b = np.where(dy < 0.0, b_ant, b_post)
        p = _SKIN_EXPONENT
        return (np.abs(self.x[None, :] / a) ** p + np.abs(dy / b) ** p) ** (1.0 / p)

    def spheres(self, spheres: np.ndarray, z: float, tissue: Tissue,
                over: Sequence[Tissue], shrink_mm: float = 0.0) -> None:
        """Paints the cross-sections of `[N, >=4]` spheres `(x, y, z, r)` at height `z`."""
        if spheres.size == 0:
            return
        radius = spheres[:, 3] - shrink_mm
        dz = spheres[:, 2] - z
        hit = np.abs(dz) < radius
        for x, y, r in zip(spheres[hit, 0], spheres[hit, 1],
                           np.sqrt(radius[hit] ** 2 - dz[hit] ** 2)):
            self.ellipse(Ellipse(x, y, r, r), tissue, over=over)


def _paint_table(p: _Painter, anatomy: Anatomy) -> None:
    top = max(trunk(anatomy, z).skin[2] for z in (-450.0, -200.0, 0.0, 150.0)) + 4.0
    for y0, y1 in ((top, top + 3.0), (top + 28.0, top + 31.0)):
        rows, cols = p.window(-220.0, 220.0, y0, y1)
        p.labels[rows, cols] = Tissue.TABLE


def _cavity_default(anatomy: Anatomy, z: float) -> Tissue:
    liver = anatomy.organs["liver"]
    if z > liver.cz + liver.c:
        return Tissue.MEDIASTINAL_FAT
    if z < anatomy.sacrum_top - 20.0:
        return Tissue.PELVIC_FAT
    return Tissue.ABDOMINAL_FAT


def _paint_trunk(p: _Painter, anatomy: Anatomy, z: float) -> np.ndarray:
    """Skin, fat, muscle wall and cavity; returns the cavity's generalized radius."""
    t = trunk(anatomy, z)
    p.labels[p.superellipse_norm(0.0, t.skin) < 1.0] = Tissue.SUBCUTANEOUS_FAT
    p.labels[p.superellipse_norm(0.0, t.muscle) < 1.0] = Tissue.MUSCLE
    cavity_norm = p.superellipse_norm(0.0, t.cavity)
    p.labels[cavity_norm < 1.0] = _cavity_default(anatomy, z)
    return cavity_norm


def _paint_bowel(p: _Painter, anatomy: Anatomy, z: float) -> None:
    fats = (Tissue.ABDOMINAL_FAT, Tissue.PELVIC_FAT)
    p.spheres(anatomy.bowel, z, Tissue.BOWEL_WALL, over=fats)
    walls = (Tissue.BOWEL_WALL,)
    for content in np.unique(anatomy.bowel[:, 4]) if anatomy.bowel.size else ():
        chosen = anatomy.bowel[anatomy.bowel[:, 4] == content]
        p.spheres(chosen, z, Tissue(int(content)), over=walls, shrink_mm=2.5)
    # The colon frames the abdomen: ascending on the right, descending on the left.
    liver = anatomy.organs["liver"]
    if anatomy.iliac_crest - 40.0 < z < liver.cz + 10.0:
        t = trunk(anatomy, z)
        s = spine(anatomy, z)
        # The descending colon rises higher (to the splenic flexure) than the ascending.
        for side in ((-1.0, 1.0) if z < liver.cz - 40.0 else (1.0,)):
            colon = Ellipse(side * 0.72 * t.cavity[0], s.y - 15.0, 20.0, 18.0)
            p.layered(colon, 2.5, Tissue.BOWEL_WALL, Tissue.BOWEL_GAS)
    if abs(z - (liver.cz - 60.0)) < 15.0:  # transverse colon, cut along its length
        t = trunk(anatomy, z)
        colon = Ellipse(0.0, -0.62 * t.cavity[1], 0.42 * t.cavity[0], 13.0, 0.08)
        p.layered(colon, 2.5, Tissue.BOWEL_WALL, Tissue.BOWEL_FLUID)
        p.ellipse(colon._replace(cy=colon.cy - 4.0, a=colon.a * 0.8, b=6.0), Tissue.BOWEL_GAS,
                  over=(Tissue.BOWEL_FLUID,))


def _paint_lungs(p: _Painter, anatomy: Anatomy, z: float, cavity_norm: np.ndarray) -> None:
    f = lung_profile(anatomy, z)
    if f <= 0.0:
        return
    t = trunk(anatomy, z)
    a_c, b_ant, b_post = t.cavity
    b = 0.5 * (b_ant + b_post)
    # Toward the bases the lungs shrink into the posterior recesses.
    low = z < 0.5 * (anatomy.lung_base + anatomy.lung_apex)
    cy = (0.05 * b + (0.55 * b_post * (1.0 - f) if low else 0.0))
    inside = cavity_norm < 1.0
    for side in (-1.0, 1.0):
        lung = Ellipse(side * 0.5 * a_c, cy, 0.62 * a_c * f, 0.98 * b * f)
        p.ellipse(lung, Tissue.LUNG, clip=inside)
    p.spheres(anatomy.lung_vessels, z, Tissue.LUNG_VESSEL, over=(Tissue.LUNG,))


def _paint_mediastinum(p: _Painter, anatomy: Anatomy, z: float) -> None:
    heart = anatomy.heart
    if not heart.cz - heart.c - 10.0 < z < anatomy.lung_apex:
        return
    t = trunk(anatomy, z)
    s = spine(anatomy, z)
    front = -t.cavity[1]
    back = s.y - s.b
    half_width = float(np.interp(z, (heart.cz - heart.c, heart.cz, heart.cz + 50.0,
                                     heart.cz + 80.0, anatomy.lung_apex), (45, 72, 56, 40, 28)))
    p.ellipse(Ellipse(4.0, 0.5 * (front + back), half_width, 0.5 * (back - front) + 6.0),
              Tissue.MEDIASTINAL_FAT)
    _paint_heart_and_vessels(p, anatomy, z, front, s)
    _paint_airway(p, anatomy, z, s)


def _paint_heart_and_vessels(p: _Painter, anatomy: Anatomy, z: float, front: float,
                             s: Spine) -> None:
    heart = anatomy.heart
    section = heart.cross_section(z)
    if section is not None:
        p.ellipse(section, Tissue.HEART)
        p.ellipse(section._replace(a=section.a * 0.72, b=section.b * 0.7), Tissue.BLOOD)
    heart_top = heart.cz + heart.c
    ascending = (12.0, front * 0.45)
    if heart_top - 40.0 < z < anatomy.arch_z:
        p.ellipse(Ellipse(*ascending, 15.0, 15.0), Tissue.BLOOD)
    if heart_top - 30.0 < z < heart_top - 8.0:  # pulmonary arteries toward the hila
        for side, tilt in ((-1.0, 0.35), (1.0, -0.35)):
            p.ellipse(Ellipse(side * 28.0, front * 0.25, 32.0, 10.0, tilt * side), Tissue.BLOOD)
    if heart_top - 15.0 < z < 195.0:  # superior vena cava
        p.ellipse(Ellipse(-26.0, front * 0.4, 10.0, 10.0), Tissue.BLOOD)
    dx, dy, radius = aorta_center(anatomy, z)
    if abs(z - anatomy.arch_z) < 8.0:
        mid = ((ascending[0] + dx) / 2.0, (ascending[1] + dy) / 2.0)
        half = 0.5 * math.hypot(dx - ascending[0], dy - ascending[1]) + radius
        angle = math.atan2(dy - ascending[1], dx - ascending[0])
        p.ellipse(Ellipse(*mid, half, radius, angle), Tissue.BLOOD)
    elif z > anatomy.arch_z + 8.0 and z < 200.0:  # the arch's branches
        for x, y in ((-8.0, front * 0.5), (6.0, front * 0.45), (18.0, front * 0.35)):
            p.ellipse(Ellipse(x, y, 6.5, 6.5), Tissue.BLOOD)
    if z < anatomy.arch_z:
        p.ellipse(Ellipse(dx, dy, radius, radius), Tissue.BLOOD)


def _paint_airway(p: _Painter, anatomy: Anatomy, z: float, s: Spine) -> None:
    front_of_spine = s.y - s.b
    p.ellipse(Ellipse(-3.0, front_of_spine - 8.0, 7.0, 6.0), Tissue.SOFT_TISSUE)  # oesophagus
    if z > anatomy.carina_z:
        trachea = Ellipse(-2.0, front_of_spine - 26.0, 11.0, 10.0)
        p.layered(trachea, 2.0, Tissue.SOFT_TISSUE, Tissue.AIRWAY)
    elif z > anatomy.carina_z - 25.0:
        spread = 12.0 + (anatomy.carina_z - z) * 0.9
        for side in (-1.0, 1.0):
            p.layered(Ellipse(side * spread, front_of_spine - 22.0, 7.0, 7.0), 1.5,
                      Tissue.SOFT_TISSUE, Tissue.AIRWAY)


def _paint_abdomen(p: _Painter, anatomy: Anatomy, z: float, cavity_norm: np.ndarray) -> None:
    organs = anatomy.organs
    inside = cavity_norm < 1.0
    for name in ("liver", "liver_left"):
        p.ellipse(organs[name].cross_section(z), Tissue.LIVER, clip=inside)
    p.spheres(anatomy.liver_vessels, z, Tissue.LIVER_VESSEL, over=(Tissue.LIVER,))
    _paint_stomach(p, organs["stomach"].cross_section(z), inside)
    p.ellipse(organs["spleen"].cross_section(z), Tissue.SPLEEN, clip=inside)
    p.ellipse(organs["pancreas"].cross_section(z), Tissue.SOFT_TISSUE)
    for name in ("kidney_right", "kidney_left"):
        _paint_kidney(p, organs[name], z)
    s = spine(anatomy, z)
    if anatomy.iliac_crest < z < anatomy.organs["liver"].cz + 40.0:
        p.ellipse(Ellipse(-20.0, s.y - s.b - 10.0, 14.0, 10.0), Tissue.BLOOD)  # IVC
    ax, ay, radius = aorta_center(anatomy, z)
    if radius > 0.0 and z < anatomy.heart.cz - anatomy.heart.c - 10.0:
        p.ellipse(Ellipse(ax, ay, radius, radius), Tissue.BLOOD)
    elif anatomy.femoral_z < z <= anatomy.iliac_crest:  # the iliac arteries
        spread = 10.0 + 0.35 * (anatomy.iliac_crest - z)
        for side in (-1.0, 1.0):
            p.ellipse(Ellipse(side * spread, s.y - s.b - 8.0, 7.0, 7.0), Tissue.BLOOD)
    _paint_psoas(p, anatomy, z)


def _paint_stomach(p: _Painter, stomach: Optional[Ellipse], inside: np.ndarray) -> None:
    if stomach is None:
        return
    p.layered(stomach, 4.0, Tissue.BOWEL_WALL, Tissue.BOWEL_FLUID, clip=inside)
    # Supine: the gas floats to the front (image top), above a horizontal level.
    level = stomach.cy - 0.35 * stomach.b
    (rows, cols), mask = p.ellipse_mask(stomach)
    if mask is None:
        return
    block = p.labels[rows, cols]
    above = (p.y[rows] < level)[:, None]
    block[mask & above & (block == Tissue.BOWEL_FLUID)] = Tissue.BOWEL_GAS


def _paint_kidney(p: _Painter, kidney: Ellipsoid, z: float) -> None:
    section = kidney.cross_section(z)
    if section is None:
        return
    p.ellipse(section, Tissue.KIDNEY_CORTEX)
    p.ellipse(section._replace(a=section.a * 0.62, b=section.b * 0.55), Tissue.KIDNEY_MEDULLA)
    # The renal sinus opens toward the hilum, in front and medial.
    medial = -math.copysign(1.0, section.cx)
    nx, ny = -math.sin(section.angle), math.cos(section.angle)
    if nx * medial < 0:
        nx, ny = -nx, -ny
    sinus = Ellipse(section.cx + 0.55 * section.b * nx, section.cy + 0.55 * section.b * ny,
                    section.a * 0.4, section.b * 0.35, section.angle)
    p.ellipse(sinus, Tissue.ABDOMINAL_FAT)


def _paint_psoas(p: _Painter, anatomy: Anatomy, z: float) -> None:
    if not anatomy.femoral_z < z < -130.0:
        return
    s = spine(anatomy, z)
    grow = float(np.clip((-130.0 - z) / 250.0, 0.0, 1.0))
    for side in (-1.0, 1.0):
        p.ellipse(Ellipse(side * (s.a + 10.0 + 16.0 * grow), s.y - 2.0 - 10.0 * grow,
                          8.0 + 14.0 * grow, 10.0 + 10.0 * grow, side * 0.4), Tissue.MUSCLE)


def _paint_pelvis(p: _Painter, anatomy: Anatomy, z: float) -> None:
    organs = anatomy.organs
    p.ellipse(organs["bladder"].cross_section(z), Tissue.BLADDER)
    for name in ("uterus", "prostate"):
        if name in organs:
            p.ellipse(organs[name].cross_section(z), Tissue.SOFT_TISSUE)
    if z < anatomy.sacrum_top - 30.0:
        s = spine(anatomy, z)
        rectum = Ellipse(0.0, s.y - 38.0, 16.0, 14.0)
        p.layered(rectum, 3.0, Tissue.BOWEL_WALL, Tissue.BOWEL_GAS)
    if z < anatomy.sacrum_top - 20.0:
        t = trunk(anatomy, z)
        s = spine(anatomy, z)
        grow = float(np.clip((anatomy.sacrum_top - 20.0 - z) / 80.0, 0.2, 1.0))
        for side in (-1.0, 1.0):
            gluteus = Ellipse(side * 0.55 * t.cavity[0], s.y + 30.0, 55.0 * grow, 32.0 * grow,
                              -side * 0.45)
            p.ellipse(gluteus, Tissue.MUSCLE)


def _paint_vertebra(p: _Painter, anatomy: Anatomy, z: float) -> None:
    s = spine(anatomy, z)
    if z < anatomy.sacrum_top:
        width = float(np.interp(z, (anatomy.sacrum_top - 120.0, anatomy.sacrum_top), (18.0, 48.0)))
        if z > anatomy.sacrum_top - 120.0:
            p.layered(Ellipse(0.0, s.y + 10.0, width, 20.0), 2.0,
                      Tissue.CORTICAL_BONE, Tissue.CANCELLOUS_BONE)
        return
    body = Ellipse(0.0, s.y, s.a, s.b)
    if s.disc:
        p.ellipse(body, Tissue.DISC)
    else:
        p.layered(body, 2.0, Tissue.CORTICAL_BONE, Tissue.CANCELLOUS_BONE)
        for side in (-1.0, 1.0):  # transverse processes
            p.ellipse(Ellipse(side * (s.a + 6.0), s.y + s.b + 6.0, 14.0, 4.5, -side * 0.35),
                      Tissue.CORTICAL_BONE)
    canal_y = s.y + s.b + 10.0
    p.ellipse(Ellipse(0.0, canal_y, 13.0, 12.0), Tissue.CORTICAL_BONE)
    p.ellipse(Ellipse(0.0, canal_y + 24.0, 4.5, 15.0), Tissue.CORTICAL_BONE)
    p.ellipse(Ellipse(0.0, canal_y, 9.0, 8.0), Tissue.SPINAL_CANAL)


def _paint_paraspinal(p: _Painter, anatomy: Anatomy, z: float) -> None:
    s = spine(anatomy, z)
    for side in (-1.0, 1.0):
        p.ellipse(Ellipse(side * (s.a + 16.0), s.y + s.b + 26.0, 24.0, 21.0), Tissue.MUSCLE)


def _paint_ribs(p: _Painter, anatomy: Anatomy, z: float, cavity_norm: np.ndarray) -> None:
    """Ribs: bands of the chest wall that slope down from the spine to the front."""
    lowest = anatomy.rib_top - 11.0 * anatomy.rib_spacing - 0.6 * anatomy.rib_drop - 10.0
    if not lowest < z < anatomy.rib_top + 10.0:
        return
    t = trunk(anatomy, z)
    depth = 9.0 / (0.5 * (t.cavity[0] + t.cavity[1]))
    band = (cavity_norm >= 1.0 + 0.1 * depth) & (cavity_norm < 1.0 + depth)
    rows, cols = np.nonzero(band)
    if rows.size == 0:
        return
    x = p.x[cols]
    y = p.y[rows]
    theta = np.abs(np.arctan2(x, y))  # 0 at the spine, pi at the sternum
    drop = anatomy.rib_drop * theta / np.pi
    level = (anatomy.rib_top - drop - z) / anatomy.rib_spacing
    index = np.rint(level)
    reach = np.interp(index, (0.0, 7.0, 9.0, 11.0), (2.6, 2.6, 2.0, 1.3))
    on_rib = ((np.abs(level - index) * anatomy.rib_spacing < 5.0) & (index >= 0) & (index <= 11)
              & (theta > 0.35) & (theta < reach))
    # Cortex at the band's edges, marrow in its middle.
    rim = np.abs(cavity_norm[rows, cols] - 1.0 - 0.55 * depth) > 0.3 * depth
    p.labels[rows[on_rib], cols[on_rib]] = np.where(rim[on_rib], Tissue.CORTICAL_BONE,
                                                    Tissue.CANCELLOUS_BONE)
    if anatomy.heart.cz - 60.0 < z < anatomy.rib_top - 10.0:
        p.layered(Ellipse(0.0, -t.cavity[1] - 5.0, 14.0, 6.0), 2.0, Tissue.CORTICAL_BONE,
                  Tissue.CANCELLOUS_BONE)  # sternum


def _paint_pelvic_bones(p: _Painter, anatomy: Anatomy, z: float) -> None:
    if not z < anatomy.iliac_crest:
        return
    t = trunk(anatomy, z)
    s = spine(anatomy, z)
    length = float(np.interp(z, (anatomy.femoral_z + 25.0, anatomy.femoral_z + 45.0,
                                 anatomy.iliac_crest - 40.0, anatomy.iliac_crest),
                             (0.0, 0.7, 1.0, 0.55)))
    for side in (-1.0, 1.0):
        joint = (side * 40.0, s.y + 12.0)
        spine_tip = (side * 0.8 * t.cavity[0], -0.25 * t.cavity[1])
        if length > 0.0:
            half = 0.5 * math.hypot(spine_tip[0] - joint[0], spine_tip[1] - joint[1]) * length
            angle = math.atan2(spine_tip[1] - joint[1], spine_tip[0] - joint[0])
            center = (joint[0] + math.cos(angle) * half, joint[1] + math.sin(angle) * half)
            p.layered(Ellipse(*center, half, 11.0, angle), 2.5, Tissue.CORTICAL_BONE,
                      Tissue.CANCELLOUS_BONE)
        head = anatomy.organs["femoral_head_left" if side > 0 else "femoral_head_right"]
        socket = head._replace(cx=head.cx - side * 8.0, a=32.0, b=32.0, c=34.0).cross_section(z)
        p.layered(socket, 2.5, Tissue.CORTICAL_BONE, Tissue.CANCELLOUS_BONE)
        section = head.cross_section(z)
        if section is not None:
            p.ellipse(section._replace(a=section.a + 2.0, b=section.b + 2.0), Tissue.MUSCLE)
            p.layered(section, 2.0, Tissue.CORTICAL_BONE, Tissue.CANCELLOUS_BONE)
    if z < anatomy.femoral_z - 15.0:  # pubic bones
        for side in (-1.0, 1.0):
            p.layered(Ellipse(side * 30.0, -0.72 * t.cavity[1], 26.0, 10.0, side * 0.3), 2.0,
                      Tissue.CORTICAL_BONE, Tissue.CANCELLOUS_BONE)


def label_slice(anatomy: Anatomy, z: float, grid: SliceGrid) -> np.ndarray:
    """The `[H, W]` uint8 `Tissue` label map of the axial slice at height `z` (no lesions)."""
    p = _Painter(grid)
    _paint_table(p, anatomy)
    cavity_norm = _paint_trunk(p, anatomy, z)
    _paint_bowel(p, anatomy, z)
    _paint_lungs(p, anatomy, z, cavity_norm)
    _paint_mediastinum(p, anatomy, z)
    _paint_abdomen(p, anatomy, z, cavity_norm)
    _paint_pelvis(p, anatomy, z)
    _paint_paraspinal(p, anatomy, z)
    _paint_vertebra(p, anatomy, z)
    _paint_ribs(p, anatomy, z, cavity_norm)
    _paint_pelvic_bones(p, anatomy, z)
    return p.labels


# ----------------------------------------------------------------------------
# Lesions.


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


# ----------------------------------------------------------------------------
# Rendering.


class RenderedSlice(NamedTuple):
    """A noise-free slice: `labels` `[H, W]` uint8 `Tissue`, `hu` `[H, W]` float32."""

    labels: np.ndarray
    hu: np.ndarray


def _lung_gradient(anatomy: Anatomy, labels: np.ndarray, hu: np.ndarray, grid: SliceGrid,
                   z: float) -> None:
    """Gravity-dependent lung density: the back of a supine lung is denser."""
    lung = labels == Tissue.LUNG
    if lung.any():
        t = trunk(anatomy, z)
        depth = np.clip(grid.rows_mm() / t.cavity[2], -1.0, 1.0).astype(np.float32)
        hu += lung * (35.0 * depth)[:, None]


def render_slice(anatomy: Anatomy, lesions: Sequence[Lesion], z: float,
                 grid: SliceGrid) -> RenderedSlice:
    """The noise-free slice at height `z`: tissues, lesions, then partial-volume blur.

    Args:
      anatomy: the patient.
      lesions: every lesion of the series (those missing `z` are skipped).
      z: slice position, mm.
      grid: where the pixels are.

    Returns:
      A `RenderedSlice`; `hu` is blurred, `labels` are not.
    """
    labels = label_slice(anatomy, z, grid)
    hu = anatomy.hu[labels]
    _lung_gradient(anatomy, labels, hu, grid, z)
    paint_lesions(hu, labels, lesions, z, grid)
    # Partial volume: about 0.6 mm of blur, at least half a pixel.
    sigma = max(0.5, 0.6 / grid.spacing_mm)
    return RenderedSlice(labels, ndimage.gaussian_filter(hu, sigma, mode="nearest"))


def correlated_noise(shape: Tuple[int, int], sigma_hu: float, rng: np.random.Generator,
                     correlation_px: float = 0.8) -> np.ndarray:
    """Gaussian-filtered white noise with standard deviation `sigma_hu`, float32."""
    white = rng.standard_normal(shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(white, correlation_px, mode="wrap")
    # A 2-D Gaussian of width s keeps 1 / (2 s sqrt(pi)) of white noise's std.
    return smooth * np.float32(sigma_hu * 2.0 * correlation_px * math.sqrt(math.pi))


def to_stored_hu(hu: np.ndarray) -> np.ndarray:
    """HU as CT stores them: rounded integers in [-1024, 3071], int16."""
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


# ----------------------------------------------------------------------------
# Where lesions go.


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
    Site("pelvis", _C.MIXED, 8, (15.0, 50.0), (0.6, 0.95),
         (Host((Tissue.PELVIC_FAT,), (35.0, 55.0)),), core_probability=0.5),
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
