"""Painting a label map: the tissues of one axial slice, drawn shape over shape.

`label_slice` paints the table, the trunk's layers, then the organs of the
chest, abdomen and pelvis, then bone; later shapes cover earlier ones, which
is how organs are nested without computing their boundaries.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from deeplesion_tf.data.phantom.anatomy import (Anatomy, Spine, Tissue, aorta_center,
                                                lung_profile, spine, trunk)
from deeplesion_tf.data.phantom.geometry import (Ellipse, Ellipsoid, SliceGrid, _ellipse_mask,
                                                 _window)

# Exponent of the trunk's superellipse outlines (`anatomy.Trunk`).
_SKIN_EXPONENT = 2.3


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
