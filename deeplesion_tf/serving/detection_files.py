"""`bin/detect`'s files: one JSON document per key slice, and the key slice drawn with its boxes.

Neither holds an input path or a DICOM identifier: the JSON's `source` and
`context` are the pseudonymous names of `slice_inputs`.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from deeplesion_tf.serving.slice_inputs import SliceInput

BOX_CONVENTION = ("[ymin, xmin, ymax, xmax]: 0-based rows and columns of the key slice, "
                  "pixel centres at integers")
MM_CONVENTION = "box_px times the pixel spacing: mm from the centre of the top-left pixel"
DIAMETER_ESTIMATE = ("the box without the training's padding on each side; long = its longer "
                     "side, short = its shorter (exact for diameters along the image axes, "
                     "short of an oblique long diameter by up to 1/sqrt(2))")
SOFT_TISSUE_WINDOW = (-160.0, 240.0)
# Colours of classes 1, 2, ... (cycled).
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230))


def _round(values, digits=3):
    return [round(float(v), digits) for v in values]


def result_json(item: SliceInput, outputs: Dict[str, np.ndarray], i: int,
                saved_model: str) -> dict:
    """The JSON document of image `i` of a batch's outputs."""
    detections = []
    has_mm = "detection_boxes_mm" in outputs
    for d in range(int(outputs["num_detections"][i])):
        long_px, short_px = outputs["detection_diameters_px"][i, d]
        detection = {
            "class_name": outputs["detection_class_names"][i, d].decode(),
            "class_id": int(outputs["detection_classes"][i, d]),
            "score": round(float(outputs["detection_scores"][i, d]), 5),
            "box_px": _round(outputs["detection_boxes"][i, d]),
            "box_mm": _round(outputs["detection_boxes_mm"][i, d]) if has_mm else None,
            "long_diameter_px": round(float(long_px), 3),
            "short_diameter_px": round(float(short_px), 3),
            "long_diameter_mm": None, "short_diameter_mm": None,
        }
        if has_mm:
            long_mm, short_mm = outputs["detection_diameters_mm"][i, d]
            detection.update(long_diameter_mm=round(float(long_mm), 3),
                             short_diameter_mm=round(float(short_mm), 3))
        detections.append(detection)
    return {
        # Output names, never input paths (module docstring).
        "source": item.name,
        "context": {"previous": item.context[0], "next": item.context[1], "notes": item.notes},
        "image_shape": list(item.hu.shape[:2]),
        "pixel_spacing_mm": list(item.spacing_mm) if item.spacing_mm else None,
        "saved_model": saved_model,
        "box_convention": BOX_CONVENTION,
        "box_mm_convention": MM_CONVENTION,
        "diameter_estimate": DIAMETER_ESTIMATE,
        "detections": detections,
    }


def draw(item: SliceInput, result: dict, path: str,
         window: Tuple[float, float] = SOFT_TISSUE_WINDOW) -> None:
    """Writes the key slice under `window` with its detections as an RGB PNG."""
    from PIL import Image, ImageDraw

    low, high = window
    gray = np.clip((item.hu[:, :, 1] - low) / (high - low), 0.0, 1.0)
    image = Image.fromarray((gray * 255).round().astype(np.uint8)).convert("RGB")
    canvas = ImageDraw.Draw(image)
    for detection in result["detections"]:
        ymin, xmin, ymax, xmax = detection["box_px"]
        colour = PALETTE[(detection["class_id"] - 1) % len(PALETTE)]
        canvas.rectangle([xmin, ymin, xmax, ymax], outline=colour, width=2)
        canvas.text((xmin + 2, max(ymin - 11, 0)),
                    f"{detection['class_name']} {detection['score']:.2f}", fill=colour)
    image.save(path)
