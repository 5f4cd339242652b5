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
    """

    fp_rates: Tuple[float, ...]
    sensitivities: Tuple[float, ...]
    mean_0p5_to_4: float
    mean_all: float
    curve: FrocCurve
    num_noisy_lesions_dropped: int
    num_images_dropped: int

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


def froc_curve(gt_boxes: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray],
               det_scores: Sequence[np.ndarray], *, iou_threshold: float = IOU_THRESHOLD,
               iou_convention: str = matching.CONTINUOUS) -> FrocCurve:
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
    image_of = np.concatenate([np.full([len(s)], i, np.int64) for i, s in enumerate(det_scores)]
                              + [np.zeros([0], np.int64)])
    index_in_image = np.concatenate([np.arange(len(s)) for s in det_scores]
                                    + [np.zeros([0], np.int64)]).astype(np.int64)
    scores = np.concatenate([np.asarray(s, np.float64) for s in det_scores] + [np.zeros([0])])
    order = np.argsort(-scores, kind="stable")
    hit = [np.zeros([len(g)], bool) for g in gt_boxes]
    ious = [matching.pairwise_iou(d, g, iou_convention) for d, g in zip(det_boxes, gt_boxes)]
    false_positives, hits = [0], [0]
    for p in order:
        image, k = image_of[p], index_in_image[p]
        iou = ious[image][k]  # [n]
        if iou.size == 0 or iou.max() < iou_threshold:
            false_positives.append(false_positives[-1] + 1)
            hits.append(hits[-1])
            continue
        new = (iou >= iou_threshold) & ~hit[image]
        hit[image] |= new
        false_positives.append(false_positives[-1])
        hits.append(hits[-1] + int(new.sum()))
    return FrocCurve(np.array(false_positives), np.array(hits), len(gt_boxes),
                     int(sum(len(g) for g in gt_boxes)))


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
    gt_boxes, det_boxes, det_scores = [], [], []
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
    if not gt_boxes:
        raise ValueError("no image keeps a lesion that is not noisy")
    curve = froc_curve(gt_boxes, det_boxes, det_scores, iou_threshold=iou_threshold,
                       iou_convention=iou_convention)
    sensitivities = sensitivity_at(curve, fp_rates)
    low = [s for r, s in zip(fp_rates, sensitivities) if r <= 4.0]
    return FrocResult(tuple(float(r) for r in fp_rates), sensitivities,
                      float(np.mean(low)) if low else float("nan"),
                      float(np.mean(sensitivities)), curve, num_noisy, num_dropped)
