"""COCO files of the ground truth and the detections, and AP@0.5 by pycocotools.

`groundtruth.json` (COCO detection format) holds one image per evaluated key
slice (`records` defines its id) and one annotation per bookmarked lesion, all
of the single category 1 `lesion`: the paper's criteria ignore the class. Extra
fields keep what COCO has no place for: `lesion_id`, `noisy` and the Table 1
`lesion_category` of each annotation; `file_name`, `patient_id`, `study_id`,
`series_id`, `slice_index` of each image. `detections.json` is a COCO results
list (`image_id`, `category_id` 1, `bbox`, `score`) with the detector's own
class in `detector_class` and `class_name`.

Boxes: COCO's `[x, y, w, h]` from `[ymin, xmin, ymax, xmax]` original pixels
as `x = xmin, y = ymin, w = xmax - xmin (+ 1), h = ymax - ymin (+ 1)`, the
`+ 1` under `matching.INCLUSIVE_PIXELS`. Then pycocotools' IoU on these files
is exactly our IoU under the chosen convention. Reading results inverts this.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np
from absl import logging

from deeplesion_tf.evaluation import categories as categories_lib
from deeplesion_tf.evaluation import matching
from deeplesion_tf.evaluation import records

LESION_CATEGORY_ID = 1
# pycocotools' recall points (101, 0 to 1).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def to_coco_box(boxes: np.ndarray, convention: str) -> np.ndarray:
    """`[N, 4]` `[ymin, xmin, ymax, xmax]` -> `[N, 4]` COCO `[x, y, w, h]`."""
    boxes = np.asarray(boxes, np.float64).reshape([-1, 4])
    offset = matching.extent_offset(convention)
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1] + offset,
                     boxes[:, 2] - boxes[:, 0] + offset], axis=-1)


def from_coco_box(boxes: np.ndarray, convention: str) -> np.ndarray:
    """Inverse of `to_coco_box`."""
    boxes = np.asarray(boxes, np.float64).reshape([-1, 4])
    offset = matching.extent_offset(convention)
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 1] + boxes[:, 3] - offset,
                     boxes[:, 0] + boxes[:, 2] - offset], axis=-1)


def groundtruth_dict(truths: Sequence[records.ImageTruth], *, box_padding_px: float,
                     iou_convention: str,
                     categories: Optional[categories_lib.Categories] = None) -> Dict:
    """The COCO ground truth of `truths` (lesion boxes padded by `box_padding_px`)."""
    names = dict(categories.rows) if categories else {}
    images, annotations = [], []
    for truth in truths:
        patient, study, series, slice_index = truth.file_name.rsplit("_", 3)
        images.append({"id": truth.image_id, "file_name": truth.file_name,
                       "height": truth.height, "width": truth.width, "patient_id": patient,
                       "study_id": study, "series_id": series,
                       "slice_index": int(slice_index)})
        coco = to_coco_box(records.truth_boxes(truth, box_padding_px), iou_convention)
        for k, lesion_id in enumerate(truth.lesion_ids):
            annotation = {"id": len(annotations) + 1, "image_id": truth.image_id,
                          "category_id": LESION_CATEGORY_ID,
                          "bbox": [round(float(v), 4) for v in coco[k]],
                          "area": round(float(coco[k, 2] * coco[k, 3]), 4), "iscrowd": 0,
                          "lesion_id": lesion_id, "noisy": bool(truth.noisy[k])}
            if categories:
                annotation["lesion_category"] = names[categories.category(lesion_id)]
            annotations.append(annotation)
    return {"info": {"description": "deeplesion_tf evaluation ground truth",
                     "box_padding_px": box_padding_px, "iou_convention": iou_convention},
            "images": images, "annotations": annotations,
            "categories": [{"id": LESION_CATEGORY_ID, "name": "lesion"}]}


def results_list(detections: Sequence[records.ImageDetections], *, iou_convention: str,
                 class_names: Optional[Sequence[str]] = None) -> List[Dict]:
    """COCO results of `detections` (original pixels)."""
    results = []
    for d in detections:
        coco = to_coco_box(d.boxes, iou_convention)
        for k in range(len(d.scores)):
            result = {"image_id": d.image_id, "category_id": LESION_CATEGORY_ID,
                      "bbox": [round(float(v), 4) for v in coco[k]],
                      "score": round(float(d.scores[k]), 6),
                      "detector_class": int(d.classes[k])}
            if class_names and 1 <= d.classes[k] <= len(class_names):
                result["class_name"] = class_names[d.classes[k] - 1]
            results.append(result)
    return results


def read_results(path: str, image_ids: Sequence[int], *, iou_convention: str
                 ) -> List[records.ImageDetections]:
    """Detections of a COCO results file, one entry per image of `image_ids`.

    `category_id` is ignored (the criteria are class-agnostic); `detector_class`
    is kept when present (else 1).

    Raises:
      ValueError: results on images outside `image_ids`, or without a score.
    """
    with open(path) as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"{path}: a COCO results file is a JSON list")
    known = set(int(i) for i in image_ids)
    strays = sorted({int(r["image_id"]) for r in results} - known)
    if strays:
        raise ValueError(f"{path}: {len(strays)} image ids are not in the split's ground truth "
                         f"(e.g. {strays[:5]}); ids are 1-based positions in the split "
                         "(see groundtruth.json)")
    grouped: Dict[int, list] = {i: [] for i in image_ids}
    for r in results:
        if "score" not in r:
            raise ValueError(f"{path}: a result without a score: {r}")
        grouped[int(r["image_id"])].append(r)
    detections = []
    for image_id, rows in grouped.items():
        if not rows:
            detections.append(records.empty_detections(image_id))
            continue
        detections.append(records.ImageDetections(
            image_id, from_coco_box([r["bbox"] for r in rows], iou_convention),
            np.array([r["score"] for r in rows], np.float64),
            np.array([int(r.get("detector_class", 1)) for r in rows], np.int64)))
    logging.info("Read %d detections on %d images from %s", len(results), len(grouped), path)
    return detections


class CocoMatches(NamedTuple):
    """pycocotools' per-image matching at IoU 0.5, what AP is accumulated from.

    Shape shorthand: Q detections kept by pycocotools (each image's best
    `maxDets`), in image order and, within an image, by descending score.

    Attributes:
      image_ids: `[Q]` int, the detection's image.
      scores: `[Q]` float64.
      true_positive: `[Q]` bool, matched to a lesion at IoU >= 0.5.
      positives: `{image_id: lesions}` of every ground-truth image.
    """

    image_ids: np.ndarray
    scores: np.ndarray
    true_positive: np.ndarray
    positives: Dict[int, int]


class CocoAP(NamedTuple):
    """pycocotools' class-agnostic AP at IoU 0.5 and its precision-recall curve.

    Attributes:
      ap50: AP@0.5 (pycocotools' `stats[1]`), -1 when the ground truth is empty.
      recall: `[101]` recall points.
      precision: `[101]` interpolated precision at them (-1 where undefined).
      matches: the per-image matches it was accumulated from.
    """

    ap50: float
    recall: np.ndarray
    precision: np.ndarray
    matches: CocoMatches


def _matches(evaluator, iou_index: int) -> CocoMatches:
    """The matches of `evaluator.evalImgs` (after `evaluate`) for area `all`, one IoU."""
    image_ids = list(evaluator.params.imgIds)
    # evalImgs runs over categories x area ranges x images; one category, area `all` first.
    per_image = evaluator.evalImgs[:len(image_ids)]
    ids, scores, tp = [], [], []
    positives = {int(i): 0 for i in image_ids}
    for image_id, e in zip(image_ids, per_image):
        if e is None:
            continue
        positives[int(image_id)] = int(np.sum(np.asarray(e["gtIgnore"]) == 0))
        n = len(e["dtScores"])
        ids.append(np.full([n], int(image_id), np.int64))
        scores.append(np.asarray(e["dtScores"], np.float64))
        tp.append(np.asarray(e["dtMatches"])[iou_index] > 0)
    empty = [np.zeros([0])]
    return CocoMatches(np.concatenate(ids + [np.zeros([0], np.int64)]).astype(np.int64),
                       np.concatenate(scores + empty), np.concatenate(tp + empty).astype(bool),
                       positives)


def coco_ap50(groundtruth: Mapping, results: Sequence[Mapping]) -> CocoAP:
    """AP@0.5 of `results` against `groundtruth` by pycocotools (class-agnostic).

    `maxDets` is raised to the most detections of an image (at least 100), so
    that no detection is cut off.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        positives = {}
        for a in groundtruth["annotations"]:
            positives[a["image_id"]] = positives.get(a["image_id"], 0) + 1
        no_matches = CocoMatches(np.zeros([0], np.int64), np.zeros([0]), np.zeros([0], bool),
                                 {int(i["id"]): positives.get(i["id"], 0)
                                  for i in groundtruth["images"]})
        return CocoAP(0.0, RECALL_POINTS.copy(), np.zeros_like(RECALL_POINTS), no_matches)
    per_image: Dict[int, int] = {}
    for r in results:
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(groundtruth))
        gt.createIndex()
        dt = gt.loadRes(json.loads(json.dumps(list(results))))
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.useCats = 0
        evaluator.params.maxDets = [1, 10, max(100, max(per_image.values()))]
        evaluator.evaluate()
        evaluator.accumulate()
    logging.debug("pycocotools: %s", output.getvalue())
    t = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    precision = evaluator.eval["precision"][t, :, 0, 0, -1]  # [R]: area all, most dets
    valid = precision > -1
    ap = float(precision[valid].mean()) if valid.any() else -1.0
    return CocoAP(ap, np.asarray(evaluator.params.recThrs), precision, _matches(evaluator, t))
