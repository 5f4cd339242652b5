"""`bin/detect`'s findings as DICOM SR, so a PACS viewer shows them beside the radiologist's.

One TID 1500 measurement report per key slice (`sr_bookmarks.report_document`, the
form of the bookmarks): per detection a planar ROI group (TID 1410) whose region is
the box as a closed five-point SCOORD POLYLINE on the source image, its finding type
"Lesion" (SCT 52988006), its class a qualitative evaluation ("Lesion category", coded
by class name), and its score.
A qualitative evaluation's value is a code, so the score, a number, is a NUM
measurement ("Detection score", unit UCUM "1") in the same group. Codes the standard
does not have use the private scheme `99DLTF`. The observer is a device: the model.

Coordinates: `box_px` is `[ymin, xmin, ymax, xmax]` with pixel centres at integers
(`detection_files.BOX_CONVENTION`); SCOORD's origin is the top-left pixel's corner,
so +0.5 on the way out and -0.5 on the way in (as `sr_bookmarks`), rounded to
0.001 px (SCOORD values are 32-bit floats).

The report is the source image's: its patient and study identifiers are copied from
the source header by highdicom, which is what lets the PACS file it with the study.
Its UIDs derive from the source image's and the model's, so running the same model on
the same slice again gives the same report (a server keeps one).
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np
import pydicom
from pydicom import uid as dicom_uid

from deeplesion_tf.data import sr_bookmarks

PRIVATE_SCHEME = "99DLTF"
CATEGORY = ("CATEGORY", PRIVATE_SCHEME, "Lesion category")
LESION = ("52988006", "SCT", "Lesion")
SCORE = ("SCORE", PRIVATE_SCHEME, "Detection score")
SERIES_NUMBER = 901
SERIES_DESCRIPTION = "deeplesion-tf detections"
_OFFSET = 0.5  # SCOORD's origin minus ours (module docstring).


@dataclasses.dataclass(frozen=True)
class DetectionFinding:
    """One detection read back from a report (`box_px` as `detection_files.BOX_CONVENTION`)."""

    class_name: str
    score: float
    box_px: Tuple[float, float, float, float]
    sop_instance_uid: str


def _concept(code):
    from highdicom import sr

    return sr.CodedConcept(*code)


def _class_code(class_name: str):
    return _concept((class_name.upper().replace(" ", "_")[:16], PRIVATE_SCHEME, class_name))


def detection_report(source: pydicom.Dataset, detections: Sequence[dict], *, model: str
                     ) -> pydicom.Dataset:
    """The report of `detections` (`result_json`'s list) on the `source` image's header.

    Args:
      source: the key slice's DICOM header (pixel data not needed).
      detections: dicts with `class_name`, `score` and `box_px`.
      model: the SavedModel's path: names the device observer and enters the UIDs.

    Raises:
      ValueError: no detections (a TID 1500 report holds at least one measurement
        group; `bin/detect` writes no report for such a slice).
    """
    from highdicom import sr
    from pydicom.sr.codedict import codes

    if not detections:
        raise ValueError("no detections: a measurement report needs at least one")
    uid = str(source.SOPInstanceUID)
    region_image = sr.SourceImageForRegion(source.SOPClassUID, uid)
    groups = []
    for number, detection in enumerate(detections, start=1):
        ymin, xmin, ymax, xmax = (float(v) + _OFFSET for v in detection["box_px"])
        corners = np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax],
                            [xmin, ymin]], np.float64)
        groups.append(sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=sr.TrackingIdentifier(
                uid=dicom_uid.generate_uid(entropy_srcs=[uid, model, str(number)]),
                identifier=f"detection {number}"),
            referenced_region=sr.ImageRegion(sr.GraphicTypeValues.POLYLINE, corners,
                                             region_image),
            finding_type=_concept(LESION),
            qualitative_evaluations=[sr.QualitativeEvaluation(
                _concept(CATEGORY), _class_code(detection["class_name"]))],
            measurements=[sr.Measurement(name=_concept(SCORE),
                                         value=round(float(detection["score"]), 5),
                                         unit=codes.UCUM.NoUnits)]))
    context = sr.ObservationContext(observer_device_context=sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=sr.DeviceObserverIdentifyingAttributes(
            uid=dicom_uid.generate_uid(entropy_srcs=[model]), name="deeplesion-tf detector",
            model_name=model[-64:])))
    return sr_bookmarks.report_document(
        [source], groups, context,
        series_instance_uid=dicom_uid.generate_uid(
            entropy_srcs=[str(source.SeriesInstanceUID), model, "detections"]),
        sop_instance_uid=dicom_uid.generate_uid(entropy_srcs=[uid, model, "detections"]),
        series_number=SERIES_NUMBER, series_description=SERIES_DESCRIPTION)


def read_detection_report(dataset: pydicom.Dataset) -> List[DetectionFinding]:
    """The detections of a report `detection_report` wrote, in its order.

    Raises:
      ValueError: not such a report.
    """
    from highdicom import sr

    try:
        document = sr.ComprehensiveSR.from_dataset(dataset, copy=True)
        groups = document.content.get_planar_roi_measurement_groups()
    except Exception as error:  # highdicom raises several types for a foreign document
        raise ValueError(f"not a TID 1500 report of detections ({error})") from None
    found = []
    for group in groups:
        region = group.roi
        points = np.asarray(region.value, np.float64).reshape(-1, 2) - _OFFSET
        (xmin, ymin), (xmax, ymax) = points.min(axis=0), points.max(axis=0)
        category = [e for e in group.get_qualitative_evaluations()
                   if (e.name.value, e.name.scheme_designator) == CATEGORY[:2]]
        score = [m for m in group.get_measurements()
                 if (m.name.value, m.name.scheme_designator) == SCORE[:2]]
        if len(category) != 1 or len(score) != 1:
            raise ValueError(f"group {group.tracking_identifier!r}: needs one lesion category "
                             "and one score")
        reference = region.ContentSequence[0].ReferencedSOPSequence[0]
        found.append(DetectionFinding(
            category[0].value.meaning, float(score[0].value),
            tuple(round(float(v), sr_bookmarks.COORDINATE_DECIMALS)
                  for v in (ymin, xmin, ymax, xmax)),
            str(reference.ReferencedSOPInstanceUID)))
    return found
