"""An analytic CT phantom of the adult torso, and lesions planted in it.

Everything is defined in millimetres in the DICOM patient coordinate system
(LPS): `x` grows toward the patient's left (image right, so the liver, on the
patient's right, is on the image left), `y` toward the back (image down) and
`z` toward the head. An axial slice at height `z` is drawn by evaluating the
analytic shapes at the pixel centres of a `SliceGrid`, so adjacent slices vary
smoothly, a lesion (an ellipsoid) also shows on the slices it crosses, and a
128-pixel slice is the same anatomy as a 512-pixel one.

Shape shorthand: `H = W = grid.size`; label maps are `[H, W]` uint8 `Tissue`
values, HU maps `[H, W]` float32.

Modules, in the order a slice is made:
  geometry   the slice grid, ellipses and ellipsoids, the pixels an ellipse covers
  anatomy    tissues, the imaged z range, `Anatomy`, trunk geometry along z
  sampling   `sample_anatomy`: one patient's HU, habitus, organs, vessels, bowel
  painting   `label_slice`: a slice's tissue label map
  lesions    `Lesion`, its pixels, outline and measured axes, `paint_lesions`
  rendering  `render_slice`, noise, stored HU
  sites      where each category's lesions go, and `place_lesion`

Callers use the names below as `phantom.<name>`.
"""

from deeplesion_tf.data.phantom.anatomy import (Z_BOTTOM_MM, Z_TOP_MM, Anatomy, Spine, Tissue,
                                                Trunk, aorta_center, body_extent, lung_profile,
                                                spine, trunk)
from deeplesion_tf.data.phantom.geometry import Ellipse, Ellipsoid, SliceGrid, make_grid
from deeplesion_tf.data.phantom.lesions import (Lesion, lesion_mask, lesion_outline,
                                                lesion_window, measurement_endpoints,
                                                paint_lesions)
from deeplesion_tf.data.phantom.painting import label_slice
from deeplesion_tf.data.phantom.rendering import (RenderedSlice, correlated_noise, render_slice,
                                                  to_stored_hu)
from deeplesion_tf.data.phantom.sampling import sample_anatomy
from deeplesion_tf.data.phantom.sites import (PLANNING_SPACING_MM, SITES, Host, Site,
                                              lesions_overlap, place_lesion, planning_grid,
                                              site_mask, site_z_range)

__all__ = [
    "Anatomy", "Ellipse", "Ellipsoid", "Host", "Lesion", "PLANNING_SPACING_MM", "RenderedSlice",
    "SITES", "Site", "SliceGrid", "Spine", "Tissue", "Trunk", "Z_BOTTOM_MM", "Z_TOP_MM",
    "aorta_center", "body_extent", "correlated_noise", "label_slice", "lesion_mask",
    "lesion_outline", "lesion_window", "lesions_overlap", "lung_profile", "make_grid",
    "measurement_endpoints", "paint_lesions", "place_lesion", "planning_grid", "render_slice",
    "sample_anatomy", "site_mask", "site_z_range", "spine", "to_stored_hu", "trunk",
]
