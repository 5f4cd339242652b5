"""The official FROC by lesion size and by lesion type, as the NIH papers report it.

The rule, from the 3DCE author (CADLab issue #31, "[3DCE] Sensitivity of Different
Lesion Sizes"): the lesions of a group (a long-diameter range, or a type) are the
ground truth, and *all* detections are scored against them with the official rule
(`froc.official_froc`). So images without a lesion of the group drop out (step 1 of
the rule), and on the images that remain a detection of a lesion outside the group
is a false positive, as it would be on a test set holding only that group. That
code and the papers agree; the papers give no more detail.

Groups:
  * by size: the long diameter in mm (`lesions/diameters_mm`), `< 10`, `10-30`,
    `> 30` (3DCE, Yan et al. 2018, Table 1; MULAN, Table 2): 10 and 30 fall in
    `10-30`;
  * by type: the rows of the evaluation's categories (`categories.Categories`):
    the release's eight coarse types (validation and test only; the training
    split has none), the synthetic truth's categories, or the pseudo labels.
Noisy lesions are dropped as in the overall FROC. Every group's sensitivities have
the same patient-bootstrap intervals as the overall FROC's (`intervals.froc_bootstrap`).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deeplesion_tf.evaluation import categories as categories_lib
from deeplesion_tf.evaluation import froc as froc_lib
from deeplesion_tf.evaluation import intervals
from deeplesion_tf.evaluation import records

# (name, lowest long diameter in the group, highest), mm.
SIZE_GROUPS: Tuple[Tuple[str, float, float], ...] = (
    ("< 10 mm", 0.0, 10.0), ("10-30 mm", 10.0, 30.0), ("> 30 mm", 30.0, math.inf))


def _in_size_group(long_mm: np.ndarray, low: float, high: float) -> np.ndarray:
    if low == 0.0:
        return long_mm < high
    if math.isinf(high):
        return long_mm > low
    return (long_mm >= low) & (long_mm <= high)


def size_masks(truths: Sequence[records.ImageTruth]) -> Dict[str, List[np.ndarray]]:
    """`{group: [n] bool per image}` of the size groups (empty without diameters)."""
    if any(t.diameters_mm is None for t in truths):
        return {}
    return {name: [_in_size_group(np.asarray(t.diameters_mm, np.float64).reshape([-1, 2])[:, 0],
                                  low, high) for t in truths]
            for name, low, high in SIZE_GROUPS}


def type_masks(truths: Sequence[records.ImageTruth],
               categories: categories_lib.Categories) -> Dict[str, List[np.ndarray]]:
    """`{row name: [n] bool per image}` of the categories' rows."""
    return {name: [np.array([categories.category(i) == row for i in t.lesion_ids], bool)
                   for t in truths]
            for row, name in categories.rows}


def select(truth: records.ImageTruth, keep: np.ndarray) -> records.ImageTruth:
    """`truth` with only the lesions `keep` `[n]` selects."""
    keep = np.asarray(keep, bool)
    return truth._replace(
        lesion_ids=tuple(i for i, k in zip(truth.lesion_ids, keep) if k),
        measurements=np.asarray(truth.measurements).reshape([-1, 8])[keep],
        noisy=np.asarray(truth.noisy, bool)[keep],
        coarse_types=np.asarray(truth.coarse_types)[keep],
        diameters_mm=None if truth.diameters_mm is None
        else np.asarray(truth.diameters_mm).reshape([-1, 2])[keep])


def group_froc(truths: Sequence[records.ImageTruth],
               detections: Sequence[records.ImageDetections], masks: Sequence[np.ndarray], *,
               gt_padding: float, detection_padding: float, iou_convention: str,
               resamples: int, seed: int) -> Optional[Dict]:
    """The FROC of one group (module docstring), or None when no lesion of it is scored.

    Returns:
      `{"num_lesions", "num_images", "sensitivity_at_fp", "mean_0.5_to_4",
      "mean_0.5_to_16", "sensitivity_all_detections", "intervals", "curve"}`:
      intervals None when `resamples` is 0; `curve` the group's precision-recall
      over the pooled detections in score order (`{"recall", "precision"}`, a
      detection precise when it is no false positive), whose last recall is
      `sensitivity_all_detections` (Fig. 5b per category).
    """
    subset = [select(t, m) for t, m in zip(truths, masks)]
    try:
        result = froc_lib.official_froc(subset, detections, gt_padding=gt_padding,
                                        detection_padding=detection_padding,
                                        iou_convention=iou_convention)
    except ValueError:  # No image keeps a lesion of the group.
        return None
    summary = result.as_dict()
    group = {"num_lesions": summary["num_lesions"], "num_images": summary["num_images"],
             "sensitivity_at_fp": summary["sensitivity_at_fp"],
             "mean_0.5_to_4": summary["mean_0.5_to_4"],
             "mean_0.5_to_16": summary["mean_0.5_to_16"], "intervals": None}
    outcomes = result.outcomes
    found = np.cumsum(outcomes.new_hits) / max(result.curve.num_lesions, 1)
    precise = np.cumsum(~outcomes.false_positive) / np.arange(1, len(outcomes.scores) + 1)
    group["sensitivity_all_detections"] = float(found[-1]) if len(found) else 0.0
    group["curve"] = {"recall": found.tolist(), "precision": precise.tolist()}
    if resamples:
        group["intervals"] = intervals.froc_bootstrap(
            intervals.froc_scores(subset, result), resamples=resamples, seed=seed)
    return group


def froc_by_group(truths: Sequence[records.ImageTruth],
                  detections: Sequence[records.ImageDetections],
                  categories: Optional[categories_lib.Categories], *, gt_padding: float,
                  detection_padding: float, iou_convention: str, resamples: int,
                  seed: int) -> Dict[str, Dict[str, Optional[Dict]]]:
    """`{"size": {group: ...}, "type": {row: ...}}` of `group_froc` (a group without a
    scored lesion is None; "type" is empty without categories)."""
    kinds = {"size": size_masks(truths),
             "type": type_masks(truths, categories) if categories and categories.rows else {}}
    return {kind: {name: group_froc(truths, detections, masks, gt_padding=gt_padding,
                                    detection_padding=detection_padding,
                                    iou_convention=iou_convention, resamples=resamples,
                                    seed=seed)
                   for name, masks in groups.items()}
            for kind, groups in kinds.items()}
