"""The analytic torso phantom and its lesions, checked value by value."""

import math

import numpy as np
import pytest

from deeplesion_tf.data import phantom
from deeplesion_tf.data.phantom import Tissue

SIZE = 256


@pytest.fixture(scope="module")
def anatomy():
    return phantom.sample_anatomy(np.random.default_rng(7))


@pytest.fixture(scope="module")
def grid(anatomy):
    return phantom.make_grid(anatomy.fov_mm, SIZE, anatomy.fov_center)


def _levels(anatomy):
    liver = anatomy.organs["liver"]
    kidney = anatomy.organs["kidney_right"]
    return {
        "chest": anatomy.heart.cz + 60.0,
        "liver": liver.cz + 10.0,
        "kidney": kidney.cz,
        "pelvis": anatomy.femoral_z,
    }


def test_ellipsoid_cross_section_is_hand_computed():
    ball = phantom.Ellipsoid(1.0, 2.0, 0.0, 10.0, 5.0, 10.0, 0.3)
    # At 6 mm from the equator of a 10 mm semi-axis the section shrinks by sqrt(1 - 0.36) = 0.8.
    assert ball.cross_section(6.0) == phantom.Ellipse(1.0, 2.0, 8.0, 4.0, 0.3)
    assert ball.cross_section(-10.0) is None
    assert ball.scale_at(0.0) == 1.0


def test_grid_maps_pixels_to_mm_and_back():
    grid = phantom.make_grid(400.0, 512, (3.0, 7.0))
    assert grid.spacing_mm == 0.78125
    # The field of view is centred: the middle of the image is the centre.
    assert grid.x0_mm + grid.spacing_mm * 255.5 == pytest.approx(3.0, abs=1e-3)
    assert grid.y0_mm + grid.spacing_mm * 255.5 == pytest.approx(7.0, abs=1e-3)
    cols, rows = grid.to_pixels(grid.columns_mm()[10], grid.rows_mm()[20])
    assert (float(cols), float(rows)) == pytest.approx((10.0, 20.0))


def test_tissues_have_their_hu(anatomy, grid):
    levels = _levels(anatomy)
    for z in levels.values():
        rendered = phantom.render_slice(anatomy, [], z, grid)
        labels = phantom.label_slice(anatomy, z, grid)
        # Away from edges (no blur), each tissue shows its patient's HU.
        for tissue in (Tissue.MUSCLE, Tissue.SUBCUTANEOUS_FAT, Tissue.LIVER, Tissue.BLADDER):
            mask = labels == tissue
            if mask.sum() > 200:
                core = mask & np.roll(mask, 2, 0) & np.roll(mask, -2, 0) & np.roll(mask, 2, 1) \
                    & np.roll(mask, -2, 1)
                assert np.median(rendered.hu[core]) == pytest.approx(anatomy.hu[tissue], abs=1.0)
        assert rendered.hu[0, 0] == pytest.approx(-1000.0)  # air outside the body
    assert -110.0 <= anatomy.hu[Tissue.SUBCUTANEOUS_FAT] <= -90.0
    assert 50.0 <= anatomy.hu[Tissue.LIVER] <= 70.0


def test_organs_are_where_anatomy_puts_them(anatomy, grid):
    levels = _levels(anatomy)
    middle = SIZE / 2.0
    chest = phantom.label_slice(anatomy, levels["chest"], grid)
    lung_cols = np.nonzero(chest == Tissue.LUNG)[1]
    # Two lungs, one each side of the mediastinum.
    assert (lung_cols < middle - 10).sum() > 500 and (lung_cols > middle + 10).sum() > 500
    hu = phantom.render_slice(anatomy, [], levels["chest"], grid).hu
    assert -900.0 < np.median(hu[chest == Tissue.LUNG]) < -760.0
    liver = phantom.label_slice(anatomy, levels["liver"], grid)
    # The liver is on the patient's right: the image's left.
    assert np.nonzero(liver == Tissue.LIVER)[1].mean() < middle - 20
    kidneys = phantom.label_slice(anatomy, levels["kidney"], grid)
    kidney_cols = np.nonzero(kidneys == Tissue.KIDNEY_CORTEX)[1]
    assert (kidney_cols < middle).sum() > 50 and (kidney_cols > middle).sum() > 50
    pelvis = phantom.label_slice(anatomy, levels["pelvis"], grid)
    assert (pelvis == Tissue.BLADDER).sum() > 100
    assert not (pelvis == Tissue.LUNG).any() and not (pelvis == Tissue.LIVER).any()


def test_spine_at_every_level(anatomy, grid):
    for z in np.arange(anatomy.sacrum_top + 5.0, anatomy.lung_apex - 10.0, 7.0):
        s = phantom.spine(anatomy, z)
        col, row = (int(round(float(v))) for v in grid.to_pixels(0.0, s.y))
        label = phantom.label_slice(anatomy, z, grid)[row, col]
        assert label == (Tissue.DISC if s.disc else Tissue.CANCELLOUS_BONE), z
    z = anatomy.heart.cz
    s = phantom.spine(anatomy, z)
    if s.disc:
        z += 10.0
    hu = phantom.render_slice(anatomy, [], z, grid).hu
    labels = phantom.label_slice(anatomy, z, grid)
    assert np.max(hu[labels == Tissue.CORTICAL_BONE]) > 500.0  # the cortical rim


def test_adjacent_slices_vary_smoothly(anatomy, grid):
    z = _levels(anatomy)["liver"]
    hu = {dz: phantom.render_slice(anatomy, [], z + dz, grid).hu for dz in (0.0, 2.5, 100.0)}
    near = np.abs(hu[0.0] - hu[2.5]).mean()
    far = np.abs(hu[0.0] - hu[100.0]).mean()
    assert near < far / 4.0


def test_same_anatomy_at_any_resolution(anatomy):
    z = _levels(anatomy)["chest"]
    areas = {}
    for size in (128, 512):
        g = phantom.make_grid(anatomy.fov_mm, size, anatomy.fov_center)
        labels = phantom.label_slice(anatomy, z, g)
        areas[size] = {t: (labels == t).sum() * g.spacing_mm ** 2
                       for t in (Tissue.LUNG, Tissue.HEART, Tissue.MUSCLE, Tissue.SUBCUTANEOUS_FAT)}
    for tissue, area in areas[512].items():
        assert areas[128][tissue] == pytest.approx(area, rel=0.06), tissue


def test_correlated_noise_has_the_requested_sigma():
    noise = phantom.correlated_noise((512, 512), 12.0, np.random.default_rng(0))
    assert noise.dtype == np.float32
    assert noise.std() == pytest.approx(12.0, rel=0.05)
    assert abs(noise.mean()) < 0.5
    neighbours = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    assert 0.3 < neighbours < 0.9  # slightly correlated, not white, not smooth


def test_stored_hu_are_rounded_and_clipped():
    stored = phantom.to_stored_hu(np.array([-2000.0, -1000.4, 39.5, 40.5, 5000.0]))
    np.testing.assert_array_equal(stored, [-1024, -1000, 40, 40, 3071])
    assert stored.dtype == np.int16


def _place(anatomy, site, rng, existing=()):
    grid = phantom.planning_grid(anatomy)
    low, high = phantom.site_z_range(anatomy, site)
    for z in np.linspace(low, high, 25)[1:-1]:
        z = round(float(z), 1)
        lesion = phantom.place_lesion(anatomy, site, z, 5.0, phantom.label_slice(anatomy, z, grid),
                                      grid, rng, existing)
        if lesion is not None:
            return lesion, z
    raise AssertionError(f"no {site} lesion fits")


@pytest.mark.parametrize("site", sorted(phantom.SITES))
def test_lesion_lies_in_its_host_and_stands_out(anatomy, grid, site):
    lesion, z = _place(anatomy, site, np.random.default_rng(3))
    spec = phantom.SITES[site]
    hosts = {t for h in spec.hosts for t in h.tissues}
    labels = phantom.label_slice(anatomy, z, grid)
    mask = phantom.lesion_mask(lesion, z, grid)
    assert mask.sum() >= 3
    assert set(np.unique(labels[mask])) <= hosts
    long_mm = 2.0 * lesion.cross_section(z).a
    lowest, highest = spec.diameter_mm
    if spec.short_axis_sized:
        assert lowest - 1e-6 <= 2.0 * lesion.cross_section(z).b <= highest + 1e-6
    else:
        assert lowest - 1e-6 <= long_mm <= highest + 1e-6
    # The key slice is the slice nearest the centre.
    assert abs(lesion.center_mm[2] - z) <= 5.0 / 3.0 + 1e-9
    hu = phantom.render_slice(anatomy, [lesion], z, grid).hu
    rho_window, rho = phantom.lesion_window(lesion, z, grid)
    inner = np.zeros_like(mask)
    inner[rho_window] = rho < 0.5
    grown = mask.copy()
    for _ in range(3):
        grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) \
            | np.roll(grown, -1, 1)
    ring = grown & ~mask & np.isin(labels, list(hosts))
    lesion_hu = hu[inner].mean() if inner.any() else hu[mask].mean()
    assert abs(lesion_hu - np.median(hu[ring])) > 25.0


def test_lesions_in_one_series_do_not_overlap(anatomy, grid):
    rng = np.random.default_rng(11)
    first, z = _place(anatomy, "liver", rng)
    second = phantom.place_lesion(anatomy, "liver", z, 5.0,
                                  phantom.label_slice(anatomy, z, phantom.planning_grid(anatomy)),
                                  phantom.planning_grid(anatomy), rng, [first])
    assert second is not None
    assert not phantom.lesions_overlap(first, second)
    assert not (phantom.lesion_mask(first, z, grid) & phantom.lesion_mask(second, z, grid)).any()


def test_measurement_axes_end_on_the_lobulated_edge():
    lesion = phantom.Lesion("lung", (10.0, -20.0, 100.0), (12.0, 8.0, 10.0), 0.7, 40.0, 40.0,
                            lobulation=0.1, lobes=6)
    z = 103.0
    ends = phantom.measurement_endpoints(lesion, z)
    section = lesion.cross_section(z)
    f = math.sqrt(1.0 - 0.09)
    assert section.a == pytest.approx(12.0 * f) and section.b == pytest.approx(8.0 * f)
    assert np.hypot(*(ends[0] - ends[1])) == pytest.approx(2.0 * section.a)
    assert np.hypot(*(ends[2] - ends[3])) == pytest.approx(2.0 * section.b)
    assert np.dot(ends[1] - ends[0], ends[3] - ends[2]) == pytest.approx(0.0, abs=1e-9)
    outline = phantom.lesion_outline(lesion, z, points=3600)
    for end in ends:
        assert np.min(np.hypot(*(outline - end).T)) < 0.02


def test_sites_categories_and_sampling_categories():
    categories = {name: site.category.short_name for name, site in phantom.SITES.items()}
    assert categories == {"liver": "LV", "lung": "LN", "kidney": "AB", "abdominal node": "AB",
                          "mediastinum": "CL", "bone": "MX", "soft tissue": "MX",
                          "pelvis": "AB"}
    # Pelvic nodes are abdominal lesions but still drawn as mixed, so the draws (and
    # every image and bookmark) are those of the PACS that planted them as mixed.
    sampled = {name: site.sampling_category.short_name for name, site in phantom.SITES.items()}
    assert sampled == dict(categories, pelvis="MX")
