"""Exporting a trained detector as a versioned SavedModel for TF Serving.

Layout (TF Serving's): `export_dir/<version>/saved_model.pb`, `variables/`,
`assets.extra/tf_serving_warmup_requests`. The version is the checkpoint's
step unless given. The signatures are `detector_module.SIGNATURES`.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from deeplesion_tf.data.release_format import HU_OFFSET
from deeplesion_tf.detection import model_dir as model_dir_lib
from deeplesion_tf.serving import detector_module
from deeplesion_tf.serving import warmup

DEFAULT_MODEL_NAME = "deeplesion"
# Air outside, soft tissue inside: a plausible slice for warmup requests.
_AIR_HU, _TISSUE_HU = -1000.0, 40.0


class Export(NamedTuple):
    path: str  # export_dir/<version>
    version: int
    checkpoint: str


def checkpoint_step(checkpoint: str) -> int:
    """The step of a `.../ckpt-<step>` checkpoint path.

    Raises:
      ValueError: the path does not end in `ckpt-<step>`.
    """
    match = re.search(r"ckpt-(\d+)$", checkpoint)
    if not match:
        raise ValueError(f"cannot read a step from checkpoint path {checkpoint!r} "
                         "(expected .../ckpt-<step>); pass a version")
    return int(match.group(1))


def warmup_slice(size: int) -> np.ndarray:
    """`[size, size]` float32 HU: a disc of soft tissue in air."""
    y, x = np.mgrid[:size, :size]
    centre = (size - 1) / 2.0
    inside = (y - centre) ** 2 + (x - centre) ** 2 <= (0.4 * size) ** 2
    return np.where(inside, _TISSUE_HU, _AIR_HU).astype(np.float32)


def encode_png16(hu: np.ndarray) -> bytes:
    """A `[H, W]` HU slice as a 16-bit grayscale PNG of HU + 32768 (Pillow)."""
    stored = np.clip(np.rint(hu) + HU_OFFSET, 0, 65535).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG")
    return buffer.getvalue()


def warmup_requests(image_size: int, needs_spacing: bool = False, num_slices: int = 3):
    """One batch-1 request per signature on an `image_size` square slice (only the
    spacing signatures' where the model needs spacing: the others refuse by design,
    and TF Serving does not load a model whose warmup fails)."""
    hu = warmup_slice(image_size)
    images = np.repeat(hu[np.newaxis, :, :, np.newaxis], num_slices, axis=-1)
    png = np.array([[encode_png16(hu)] * num_slices], dtype=object)
    spacing = np.array([[0.8, 0.8]], np.float32)
    m = detector_module
    requests = [
        warmup.WarmupRequest(m.SERVING_DEFAULT, {m.IMAGES: images}),
        warmup.WarmupRequest(m.HU_WITH_SPACING, {m.IMAGES: images, m.PIXEL_SPACING: spacing}),
        warmup.WarmupRequest(m.PNG, {m.PNG_SLICES: png}),
        warmup.WarmupRequest(m.PNG_WITH_SPACING, {m.PNG_SLICES: png, m.PIXEL_SPACING: spacing}),
    ]
    if needs_spacing:
        return [r for r in requests if m.PIXEL_SPACING in r.inputs]
    return requests


def module_from_model_dir(model_dir: str, checkpoint: Optional[str] = None, **overrides: Any):
    """(`DetectorModule`, checkpoint path) of a `bin/train_detector` model dir."""
    loaded = model_dir_lib.load_model(model_dir, checkpoint, **overrides)
    module = detector_module.DetectorModule(
        loaded.model, loaded.class_names, image_size=loaded.inputs.image_size,
        windows=loaded.inputs.windows, box_padding_px=loaded.inputs.box_padding_px,
        pixel_spacing_mm=loaded.inputs.pixel_spacing_mm,
        slice_interval_mm=loaded.inputs.slice_interval_mm)
    return module, loaded.checkpoint


def export_module(module: detector_module.DetectorModule, export_dir: str, version: int, *,
                  model_name: str = DEFAULT_MODEL_NAME, overwrite: bool = False,
                  write_warmup: bool = True) -> str:
    """Saves `module` to `export_dir/<version>`; returns that path.

    Raises:
      FileExistsError: the version folder exists and `overwrite` is False.
      ValueError: a negative version.
    """
    if version < 0:
        raise ValueError(f"version must be >= 0, got {version}")
    path = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(path):
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass another version or overwrite")
        tf.io.gfile.rmtree(path)
    # Written to a temporary folder first: TF Serving polls export_dir and must
    # never see a half-written version.
    temporary = os.path.join(export_dir, f".tmp-{version}")
    if tf.io.gfile.exists(temporary):
        tf.io.gfile.rmtree(temporary)
    tf.saved_model.save(module, temporary, signatures=module.signatures())
    if write_warmup:
        warmup.write_warmup_requests(temporary, model_name, warmup_requests(
            module.image_size, needs_spacing=module.pixel_spacing_mm is not None,
            num_slices=module.num_slices))
    tf.io.gfile.rename(temporary, path)
    logging.info("Exported %s (signatures %s)", path, ", ".join(detector_module.SIGNATURES))
    return path


def export_detector(model_dir: str, export_dir: str, *, version: Optional[int] = None,
                    checkpoint: Optional[str] = None, model_name: str = DEFAULT_MODEL_NAME,
                    overwrite: bool = False, **overrides: Any) -> Export:
    """Exports the detector of a `bin/train_detector` model dir for TF Serving.

    Args:
      model_dir: written by `bin/train_detector`.
      export_dir: the model's base path in TF Serving (`--model_base_path`).
      version: the version folder; by default the checkpoint's step.
      checkpoint: a checkpoint path instead of the latest.
      model_name: `model_spec.name` of the warmup requests.
      overwrite: replace an existing version folder.
      **overrides: `build_faster_rcnn` settings to change (e.g. `score_threshold`).
    """
    module, checkpoint_path = module_from_model_dir(model_dir, checkpoint, **overrides)
    if version is None:
        version = checkpoint_step(checkpoint_path)
    path = export_module(module, export_dir, version, model_name=model_name, overwrite=overwrite)
    return Export(path, version, checkpoint_path)
