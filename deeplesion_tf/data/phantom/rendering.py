"""Rendering a slice: tissue HU, lesions and partial-volume blur; then noise and storage.

`render_slice` is noise-free; the caller adds `correlated_noise` (drawn from
its own generator) and stores the sum with `to_stored_hu`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Tuple

import numpy as np
from scipy import ndimage

from deeplesion_tf.data.phantom.anatomy import Anatomy, Tissue, trunk
from deeplesion_tf.data.phantom.geometry import SliceGrid
from deeplesion_tf.data.phantom.lesions import Lesion, paint_lesions
from deeplesion_tf.data.phantom.painting import label_slice


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
