"""Drawing one patient: tissue HU, body habitus, organs, vessels and bowel.

`sample_anatomy` takes every draw from one generator in a fixed order, so a
patient's anatomy is a function of that generator's seed alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List

import numpy as np

from deeplesion_tf.data.phantom.anatomy import (Z_BOTTOM_MM, Z_TOP_MM, Anatomy, Tissue, spine,
                                                trunk)
from deeplesion_tf.data.phantom.geometry import Ellipsoid

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
