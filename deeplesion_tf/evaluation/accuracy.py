"""The paper's detection accuracy (Sec. 3), over IoU thresholds (Fig. 5a) and per category (Table 1).

The criterion of Sec. 3: the top-1 detection of each image (highest score;
the first of equal scores) is correct when its IoU with the bookmarked box
*exceeds* the threshold (0.5); the class is ignored. A key slice may hold
several bookmarks: the top-1 box is correct when it exceeds the threshold
with any of them. An image without detections counts as wrong. Every
bookmarked lesion counts, `noisy` ones too (the paper predates that flag; the
FROC drops them, as the NIH script does).

Per category (Table 1): a category's row holds the images with a lesion of
that category (its size), and an image is correct there when its top-1 box
hits one of *that category's* lesions. `overall` counts each image once.

Shape shorthand: I images; n lesions of one image; T thresholds.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from deeplesion_tf.evaluation import categories as categories_lib
from deeplesion_tf.evaluation import matching
from deeplesion_tf.evaluation import records

IOU_THRESHOLD = 0.5
# Fig. 5a's thresholds.
ACCURACY_IOU_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))


def by_image(detections: Sequence[records.ImageDetections]
             ) -> Dict[int, records.ImageDetections]:
    """`{image_id: detections}`.

    Raises:
      ValueError: two entries for one image.
    """
    result = {}
    for d in detections:
        if d.image_id in result:
            raise ValueError(f"two sets of detections for image {d.image_id}")
        result[d.image_id] = d
    return result


def top1_ious(truths: Sequence[records.ImageTruth],
              detections: Sequence[records.ImageDetections], *, box_padding_px: float,
              iou_convention: str = matching.CONTINUOUS) -> List[np.ndarray]:
    """IoU of each image's top-1 detection with each of its lesions.

    Args:
      truths: I images.
      detections: their detections (any order; an image without an entry has none).
      box_padding_px: padding of the lesion boxes (`records.truth_boxes`);
        the detections are taken as they are.
      iou_convention: see `matching`.

    Returns:
      I arrays `[n]`, in the order of `truths`; zeros where an image has no detection.
    """
    dets = by_image(detections)
    result = []
    for truth in truths:
        gt = records.truth_boxes(truth, box_padding_px)
        d = dets.get(truth.image_id)
        if d is None or len(d.scores) == 0:
            result.append(np.zeros([len(gt)]))
            continue
        top = d.boxes[int(np.argmax(d.scores))]
        result.append(matching.pairwise_iou(top[np.newaxis], gt, iou_convention)[0])
    return result


def detection_accuracy(ious: Sequence[np.ndarray], threshold: float = IOU_THRESHOLD) -> float:
    """Share of images whose top-1 IoU (`top1_ious`) exceeds `threshold` with some lesion."""
    if not ious:
        raise ValueError("no images")
    return float(np.mean([bool(np.any(iou > threshold)) for iou in ious]))


def accuracy_by_iou(ious: Sequence[np.ndarray],
                    thresholds: Sequence[float] = ACCURACY_IOU_THRESHOLDS) -> Dict[str, float]:
    """`{"0.1": accuracy, ...}`: Fig. 5a's curve."""
    return {f"{t:g}": detection_accuracy(ious, t) for t in thresholds}


class CategoryHits(NamedTuple):
    """Which images each Table 1 row holds and gets right (shape shorthand: C rows).

    Attributes:
      member: `[C, I]` bool, the image holds a lesion of the row's category.
      correct: `[C, I]` bool, its top-1 box hits one of those lesions.
    """

    member: np.ndarray
    correct: np.ndarray


def category_hits(truths: Sequence[records.ImageTruth], ious: Sequence[np.ndarray],
                  categories: categories_lib.Categories,
                  threshold: float = IOU_THRESHOLD) -> CategoryHits:
    """The per-image facts of Table 1's rows (`categories.rows`, in order)."""
    member = np.zeros([len(categories.rows), len(truths)], bool)
    correct = np.zeros_like(member)
    for c, (category, _) in enumerate(categories.rows):
        for k, (truth, iou) in enumerate(zip(truths, ious)):
            mine = np.array([categories.category(i) == category for i in truth.lesion_ids],
                            bool)
            member[c, k] = mine.any()
            correct[c, k] = mine.any() and bool(np.any(iou[mine] > threshold))
    return CategoryHits(member, correct)


def per_category_accuracy(truths: Sequence[records.ImageTruth], ious: Sequence[np.ndarray],
                          categories: categories_lib.Categories,
                          threshold: float = IOU_THRESHOLD) -> List[Mapping[str, object]]:
    """Table 1's rows: `{cluster, name, size, correct, accuracy}` per category, then `overall`.

    `accuracy` is None for a category without images (size 0).
    """
    hits = category_hits(truths, ious, categories, threshold)
    rows = [_row(category, name, int(member.sum()), int(correct.sum()))
            for (category, name), member, correct in zip(categories.rows, hits.member,
                                                         hits.correct)]
    overall = sum(bool(np.any(iou > threshold)) for iou in ious)
    rows.append(_row(None, "overall", len(ious), overall))
    return rows


def _row(cluster: Optional[int], name: str, size: int, correct: int) -> Mapping[str, object]:
    return {"cluster": cluster, "name": name, "size": size, "correct": correct,
            "accuracy": correct / size if size else None}
