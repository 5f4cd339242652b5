"""The official DeepLesion FROC (the NIH evaluation script, used by 3DCE, MULAN, MVP-Net).

The rule:
  1. Lesions flagged `noisy` are dropped, and so are the images left without
     a lesion (their detections take no part). N is the images that remain.
  2. All detections of all images are pooled and sorted by score (descending;
     equal scores keep image order, then detection order).
  3. In that order, a detection is a false positive when its image has no
     lesion or its best IoU with the image's lesions is below the threshold
     (0.5). Otherwise every lesion of its image with IoU >= threshold that is
     not yet hit becomes hit (so a lesion is counted once). A detection that
     overlaps only lesions already hit counts as neither.
  4. The sensitivity at an average of r false positives per image is the best
     sensitivity reached with fewer than `r * N` false positives (reading the
     curve before the detection that makes the `ceil(r * N)`-th one).

Boxes: the NIH script scores against the release's `Bounding_boxes`, the
measurement's extent padded by 5 px (`bookmarks.RELEASE_PADDING_PX`), and uses
inclusive-pixel IoU (`matching.INCLUSIVE_PIXELS`). `official_froc` derives the
lesion boxes with `gt_padding` and moves each detection's sides inwards by
`detection_padding - gt_padding` (a detector trained on boxes padded by 20 px
predicts boxes 15 px wider on each side than the release's), in original pixels.

Shape shorthand: n lesions and D detections of one image; P pooled detections.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

import numpy as np

from deeplesion_tf.evaluation import accuracy
from deeplesion_tf.evaluation import matching
from deeplesion_tf.evaluation import records

FP_RATES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
IOU_THRESHOLD = 0.5


class FrocCurve(NamedTuple):
    """The curve over the pooled detections, starting before the first.

    Attributes:
      false_positives: `[P + 1]` int, false positives after each detection.
      hits: `[P + 1]` int, lesions hit after each detection.
      num_images: N.
      num_lesions: lesions scored.
    """

    false_positives: np.ndarray
    hits: np.ndarray
    num_images: int
    num_lesions: int

    @property
    def sensitivity(self) -> np.ndarray:
        return self.hits / max(self.num_lesions, 1)

    @property
    def fps_per_image(self) -> np.ndarray:
        return self.false_positives / max(self.num_images, 1)


class FrocResult(NamedTuple):
    """Sensitivities at the FP rates and what was scored.

    Attributes:
      fp_rates: the rates r.
      sensitivities: the sensitivity at each rate.
      mean_0p5_to_4: their mean over r in 0.5, 1, 2, 4 (MULAN's summary).
      mean_all: their mean over all rates.
      curve: the `FrocCurve`.
      num_noisy_lesions_dropped, num_images_dropped: step 1.
      outcomes: the `FrocOutcomes` the curve is summed from.
      image_ids: `[N]` the `image_id` of each scored image (`outcomes.image`
        indexes these).
    """

    fp_rates: Tuple[float, ...]
    sensitivities: Tuple[float, ...]
    mean_0p5_to_4: float
    mean_all: float
    curve: FrocCurve
    num_noisy_lesions_dropped: int
    num_images_dropped: int
    outcomes: FrocOutcomes
    image_ids: np.ndarray

    def as_dict(self):
        return {
            "sensitivity_at_fp": {f"{r:g}": s for r, s in zip(self.fp_rates,
                                                              self.sensitivities)},
            "mean_0.5_to_4": self.mean_0p5_to_4,
            "mean_0.5_to_16": self.mean_all,
            "num_images": self.curve.num_images,
            "num_lesions": self.curve.num_lesions,
            "num_noisy_lesions_dropped": self.num_noisy_lesions_dropped,
            "num_images_dropped": self.num_images_dropped,
        }


class FrocOutcomes(NamedTuple):
    """What each detection did, in the pooled order of step 2 (steps 2 and 3 of the rule).

    A detection's outcome depends only on its own image (which of its lesions
    the image's higher-scored detections hit before it), so the curve of any
    subset or resample of the images is a cumulative sum of these in this
    order (`deeplesion_tf.evaluation.intervals`).

    Attributes:
      image: `[P]` int, the detection's image (index into the N images).
      scores: `[P]` float64, descending.
      false_positive: `[P]` bool.
      new_hits: `[P]` int, lesions it hits that no detection before it hit.
      lesions: `[N]` int, lesions of each image.
    """

    image: np.ndarray
    scores: np.ndarray
    false_positive: np.ndarray
    new_hits: np.ndarray
    lesions: np.ndarray


def _image_outcomes(gt: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    iou_threshold: float, iou_convention: str):
    """Step 3 within one image: `[D]` false positive and new hits, in `scores`' stable order."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    iou = matching.pairwise_iou(boxes, gt, iou_convention)  # [D, n]
    false_positive = np.zeros([len(order)], bool)
    new_hits = np.zeros([len(order)], np.int64)
    hit = np.zeros([len(gt)], bool)
    for k in order:
        if iou.shape[1] == 0 or iou[k].max() < iou_threshold:
            false_positive[k] = True
            continue
        new = (iou[k] >= iou_threshold) & ~hit
        hit |= new
        new_hits[k] = int(new.sum())
    return false_positive, new_hits


def froc_outcomes(gt_boxes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray],
                  det_scores: Sequence[np.ndarray], *, iou_threshold: float = IOU_THRESHOLD,
                  iou_convention: str = matching.CONTINUOUS) -> FrocOutcomes:
    """Steps 2 and 3 of the rule over N images.

    Args:
      gt_boxes: N arrays `[n, 4]` of lesion boxes.
      det_boxes: N arrays `[D, 4]` of detection boxes.
      det_scores: N arrays `[D]`.
      iou_threshold: a detection hits lesions with IoU >= this.
      iou_convention: see `matching`.
    """
    if not len(gt_boxes) == len(det_boxes) == len(det_scores):
        raise ValueError("gt_boxes, det_boxes and det_scores must hold the same images")
    per_image = [_image_outcomes(np.asarray(g, np.float64).reshape([-1, 4]),
                                 np.asarray(d, np.float64).reshape([-1, 4]), s,
                                 iou_threshold, iou_convention)
                 for g, d, s in zip(gt_boxes, det_boxes, det_scores)]
    empty_int = [np.zeros([0], np.int64)]
    image = np.concatenate([np.full([len(s)], i, np.int64) for i, s in enumerate(det_scores)]
                           + empty_int)
    scores = np.concatenate([np.asarray(s, np.float64) for s in det_scores] + [np.zeros([0])])
    false_positive = np.concatenate([fp for fp, _ in per_image] + [np.zeros([0], bool)])
    new_hits = np.concatenate([h for _, h in per_image] + empty_int)
    # Equal scores keep image order, then detection order.
    order = np.argsort(-scores, kind="stable")
    return FrocOutcomes(image[order], scores[order], false_positive[order], new_hits[order],
                        np.array([len(g) for g in gt_boxes], np.int64))


def curve_of(outcomes: FrocOutcomes) -> FrocCurve:
    """The curve of all N images of `outcomes`."""
    return FrocCurve(np.concatenate([[0], np.cumsum(outcomes.false_positive)]).astype(np.int64),
                     np.concatenate([[0], np.cumsum(outcomes.new_hits)]).astype(np.int64),
                     len(outcomes.lesions), int(outcomes.lesions.sum()))


def froc_curve(gt_boxes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray],
               det_scores: Sequence[np.ndarray], *, iou_threshold: float = IOU_THRESHOLD,
               iou_convention: str = matching.CONTINUOUS) -> FrocCurve:
    """Steps 2 and 3 of the rule over N images (arguments as `froc_outcomes`)."""
    return curve_of(froc_outcomes(gt_boxes, det_boxes, det_scores, iou_threshold=iou_threshold,
                                  iou_convention=iou_convention))


def sensitivity_at(curve: FrocCurve, fp_rates: Sequence[float] = FP_RATES) -> Tuple[float, ...]:
    """Step 4: the best sensitivity with fewer than `r * N` false positives, per rate r."""
    sensitivity = curve.sensitivity
    return tuple(float(sensitivity[curve.false_positives < r * curve.num_images].max())
                 for r in fp_rates)


def official_froc(truths: Sequence[records.ImageTruth],
                  detections: Sequence[records.ImageDetections], *, gt_padding: float,
                  detection_padding: float, iou_convention: str = matching.CONTINUOUS,
                  iou_threshold: float = IOU_THRESHOLD,
                  fp_rates: Sequence[float] = FP_RATES) -> FrocResult:
    """The whole rule on dataset records.

    Args:
      truths: the images and their bookmarked lesions.
      detections: detections in original pixels (an image without an entry has none).
      gt_padding: pixels around the measurement of the scored lesion boxes
        (5: the release's `Bounding_boxes`).
      detection_padding: the padding of the boxes the detector learned; each
        detection side moves in by `detection_padding - gt_padding`.
      iou_convention: see `matching` (the NIH script: `INCLUSIVE_PIXELS`).
      iou_threshold: 0.5.
      fp_rates: FP per image at which to read the sensitivity.

    Raises:
      ValueError: no image keeps a lesion.
    """
    dets = accuracy.by_image(detections)
    gt_boxes, det_boxes, det_scores, image_ids = [], [], [], []
    num_noisy = num_dropped = 0
    for truth in truths:
        keep = ~np.asarray(truth.noisy, bool)
        num_noisy += int((~keep).sum())
        if not keep.any():
            num_dropped += 1
            continue
        gt_boxes.append(records.truth_boxes(truth, gt_padding)[keep])
        d = dets.get(truth.image_id, records.empty_detections(truth.image_id))
        det_boxes.append(records.change_padding(d.boxes, detection_padding, gt_padding))
        det_scores.append(np.asarray(d.scores, np.float64))
        image_ids.append(truth.image_id)
    if not gt_boxes:
        raise ValueError("no image keeps a lesion that is not noisy")
    outcomes = froc_outcomes(gt_boxes, det_boxes, det_scores, iou_threshold=iou_threshold,
                             iou_convention=iou_convention)
    curve = curve_of(outcomes)
    sensitivities = sensitivity_at(curve, fp_rates)
    low = [s for r, s in zip(fp_rates, sensitivities) if r <= 4.0]
    return FrocResult(tuple(float(r) for r in fp_rates), sensitivities,
                      float(np.mean(low)) if low else float("nan"),
                      float(np.mean(sensitivities)), curve, num_noisy, num_dropped, outcomes,
                      np.array(image_ids, np.int64))
