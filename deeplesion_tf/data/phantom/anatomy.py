"""The torso's frame: tissues, the imaged z range, one patient's `Anatomy`, trunk geometry.

Heights (mm, before per-patient jitter): lung apex ~ +228, carina ~ +100,
liver dome ~ +20, kidneys ~ -160, iliac crest ~ -330, femoral heads ~ -475,
perineum ~ -540. The trunk's outlines, the spine, the aorta and the lungs'
extent are functions of `z` so that every slice is drawn from the same body.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Dict, NamedTuple, Tuple

import numpy as np

from deeplesion_tf.data.phantom.geometry import Ellipsoid

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


# Body profile along z (mm): lateral and anterior semi-axes of the skin outline.
_PROFILE_Z = (-560.0, -480.0, -400.0, -330.0, -200.0, -60.0, 60.0, 180.0, 235.0, 265.0, 320.0)
_PROFILE_A = (150.0, 170.0, 168.0, 156.0, 150.0, 152.0, 158.0, 152.0, 140.0, 80.0, 65.0)
_PROFILE_B = (105.0, 112.0, 112.0, 112.0, 118.0, 118.0, 118.0, 112.0, 100.0, 62.0, 55.0)
# Subcutaneous fat thickness (mm) for fat_scale 1.
_FAT_Z = (-560.0, -330.0, -60.0, 120.0, 270.0)
_FAT_MM = (24.0, 28.0, 26.0, 14.0, 8.0)
_MUSCLE_MM = 10.0


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
