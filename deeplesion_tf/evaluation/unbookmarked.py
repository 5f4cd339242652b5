"""The synthetic PACS' unbookmarked lesions: how many "false positives" are real lesions.

The footnote to the paper's Table 1: clinical bookmarks are partial, so some
detections scored as false are true lesions. The synthetic PACS knows every
planted lesion (`truth.csv`); a bookmarked lesion's dataset `lesion_id` is its
truth `lesion_id`, which places it on its key slice
`(patient_index, study_index, series_index, slice_index)`, and the truth rows
of that slice with `bookmarked == 0` are its unbookmarked lesions. (A noisy
bookmark is still `bookmarked`; its lesion is not counted here.)

`truth.csv` boxes are the lesion outline's extent in 0-based original pixels,
without padding; they are widened by the same padding as the bookmarked boxes
and clipped to the image, so both are scored alike. Hits use the accuracy
criterion: IoU *above* 0.5.
"""

from __future__ import annotations

import csv
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from deeplesion_tf.data import synthetic_location
from deeplesion_tf.evaluation import accuracy
from deeplesion_tf.evaluation import matching
from deeplesion_tf.evaluation import records

IOU_THRESHOLD = 0.5
SCORE_THRESHOLD = 0.5
_SLICE_COLUMNS = ("patient_index", "study_index", "series_index", "slice_index")


def read_truth_csv(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def default_truth_csv(data_dir: str, builder_config) -> Optional[str]:
    """Where `deeplesion/synthetic` generated its PACS' `truth.csv`, if it is there."""
    return synthetic_location.find_truth_csv(
        data_dir, builder_config.synthetic_seed, builder_config.synthetic_num_patients,
        builder_config.synthetic_image_size)


def unbookmarked_boxes(truths: Sequence[records.ImageTruth],
                       truth_rows: Sequence[Mapping[str, str]], box_padding_px: float
                       ) -> Dict[int, np.ndarray]:
    """`{image_id: [u, 4]}` boxes of the unbookmarked lesions on each key slice.

    Raises:
      ValueError: an image none of whose lesions `truth.csv` knows (a truth
        file of another PACS).
    """
    by_id = {r["lesion_id"]: r for r in truth_rows}
    by_slice: Dict[tuple, list] = {}
    for r in truth_rows:
        if int(r["bookmarked"]) == 0:
            by_slice.setdefault(tuple(int(r[c]) for c in _SLICE_COLUMNS), []).append(r)
    result = {}
    for truth in truths:
        known = [by_id[i] for i in truth.lesion_ids if i in by_id]
        if not known:
            raise ValueError(f"truth.csv knows none of the lesions {truth.lesion_ids} of image "
                             f"{truth.image_id} ({truth.file_name}): not this dataset's PACS")
        rows = by_slice.get(tuple(int(known[0][c]) for c in _SLICE_COLUMNS), [])
        boxes = np.array([[float(r[c]) for c in ("ymin", "xmin", "ymax", "xmax")] for r in rows],
                         np.float64).reshape([-1, 4])
        boxes[:, :2] -= box_padding_px
        boxes[:, 2:] += box_padding_px
        result[truth.image_id] = np.clip(
            boxes, 0.0, np.array([truth.height - 1, truth.width - 1] * 2, np.float64))
    return result


def unbookmarked_metrics(truths: Sequence[records.ImageTruth],
                         detections: Sequence[records.ImageDetections],
                         unbookmarked: Mapping[int, np.ndarray], *, box_padding_px: float,
                         iou_convention: str = matching.CONTINUOUS,
                         score_threshold: float = SCORE_THRESHOLD) -> Dict[str, object]:
    """What the detections find besides the bookmarks.

    Returns:
      `num_unbookmarked_lesions` (on the evaluated key slices);
      `sensitivity` (of those, the share hit by a detection scoring >=
      `score_threshold`); `num_false_positives` (detections scoring >=
      `score_threshold` that hit no bookmarked lesion) and
      `false_positives_on_unbookmarked` (of those, hitting an unbookmarked
      lesion); `top1_wrong`, `top1_wrong_on_unbookmarked` and
      `detection_accuracy_with_unbookmarked` (the top-1 accuracy when an
      unbookmarked lesion counts as well).
    """
    dets = accuracy.by_image(detections)
    lesions = hits = false_positives = fp_on_unbookmarked = 0
    top1_correct = top1_wrong = top1_wrong_on_unbookmarked = 0
    for truth in truths:
        extra = unbookmarked.get(truth.image_id, np.zeros([0, 4]))
        bookmarked = records.truth_boxes(truth, box_padding_px)
        d = dets.get(truth.image_id, records.empty_detections(truth.image_id))
        on_bookmarked = matching.pairwise_iou(d.boxes, bookmarked, iou_convention) > IOU_THRESHOLD
        on_extra = matching.pairwise_iou(d.boxes, extra, iou_convention) > IOU_THRESHOLD
        confident = np.asarray(d.scores) >= score_threshold
        lesions += len(extra)
        hits += int(on_extra[confident].any(axis=0).sum())
        false = confident & ~on_bookmarked.any(axis=1)
        false_positives += int(false.sum())
        fp_on_unbookmarked += int(on_extra[false].any(axis=1).sum())
        if len(d.scores):
            top = int(np.argmax(d.scores))
            if on_bookmarked[top].any():
                top1_correct += 1
            else:
                top1_wrong += 1
                top1_wrong_on_unbookmarked += int(on_extra[top].any())
        else:
            top1_wrong += 1
    return {
        "num_unbookmarked_lesions": lesions,
        "score_threshold": score_threshold,
        "sensitivity": hits / lesions if lesions else None,
        "num_false_positives": false_positives,
        "false_positives_on_unbookmarked": fp_on_unbookmarked,
        "top1_wrong": top1_wrong,
        "top1_wrong_on_unbookmarked": top1_wrong_on_unbookmarked,
        "detection_accuracy_with_unbookmarked":
            (top1_correct + top1_wrong_on_unbookmarked) / len(truths) if truths else None,
    }
