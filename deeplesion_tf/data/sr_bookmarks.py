"""Bookmarks as DICOM Structured Reports: TID 1500 measurement reports, written and read.

In a standards-based PACS a radiologist's bookmark is a measurement in a DICOM SR
(TID 1500 "Measurement Report"): per lesion a measurement group (TID 1501) with a
tracking identifier, and two measurements, "Long Axis" (SCT 103339001) and "Short
Axis" (SCT 103340004), each in mm and inferred from a two-point SCOORD POLYLINE on
the key image it references. highdicom, the maintained library for SR, builds and
parses the documents.

Coordinates: a SCOORD's graphic data are (column, row) in the image's pixel matrix
with (0, 0) the top-left corner of the top-left pixel (PS3.3 C.18.6.1.2), so the
centre of pixel 0 is 0.5; the project's bookmarks put pixel centres at integers
(`bookmarks.py`). Writing adds 0.5, reading subtracts it. SCOORD values are 32-bit
floats: read back, coordinates are rounded to 0.001 px, the precision of the CSV
export and of the NIH release, so that the SR and the CSV of one PACS give the same
numbers.

A measurement that cannot be used is skipped and counted, never dropped silently:
  `malformed_report`        a file that is not a readable TID 1500 SR;
  `unreferenced_measurement` an axis without coordinates on an image;
  `non_linear_measurement`  a group without exactly one long and one short axis, an
                            axis that is not a two-point POLYLINE, or axes on two images.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pydicom
from pydicom import uid as dicom_uid

from deeplesion_tf.data import skips

LONG_AXIS = ("103339001", "SCT", "Long Axis")
SHORT_AXIS = ("103340004", "SCT", "Short Axis")
SR_MODALITY = "SR"
COORDINATE_DECIMALS = 3
# DICOM's origin (the top-left pixel's corner) minus the project's (its centre).
_SCOORD_OFFSET = 0.5


@dataclasses.dataclass(frozen=True)
class SRBookmark:
    """One lesion's measurement in a report.

    Attributes:
      lesion_id: the group's tracking identifier (its text, else its UID).
      sop_instance_uid: the key image the axes are drawn on.
      coords: `x11, y11, x12, y12, x21, y21, x22, y22`, 0-based pixels, pixel
        centres at integers (the long axis, then the short axis).
      where: the file and group, for messages.
    """

    lesion_id: str
    sop_instance_uid: str
    coords: Tuple[float, ...]
    where: str


def _concept(code):
    import highdicom

    value, scheme, meaning = code
    return highdicom.sr.CodedConcept(value, scheme, meaning)


def measurement_report(key_images: Sequence[pydicom.Dataset],
                       lesions: Sequence[Tuple[str, str, Sequence[float]]], *,
                       series_instance_uid: str, sop_instance_uid: str, series_number: int = 900,
                       instance_number: int = 1, observer: str = "Radiologist",
                       when: Optional[datetime.datetime] = None) -> pydicom.Dataset:
    """A TID 1500 Comprehensive SR of the bookmarks on some images of one study.

    Args:
      key_images: the CT images the lesions are measured on (their headers give the
        patient and study the report belongs to and the pixel spacing).
      lesions: `(lesion_id, sop_instance_uid of its key image, coords)`, coords as
        `SRBookmark.coords`.
      series_instance_uid, sop_instance_uid, series_number, instance_number: the report's.
      observer: the person observer's name in the observation context.
      when: the report's content and creation time (default now). Given, the document
        is a function of its arguments: the tracking UIDs derive from the report's
        UID and the lesion ids, so the same bookmarks give the same bytes.
    """
    from highdicom import sr
    from pydicom.sr.codedict import codes

    images = {str(image.SOPInstanceUID): image for image in key_images}
    groups = []
    for lesion_id, uid, coords in lesions:
        image = images[uid]
        row_mm, column_mm = (float(v) for v in image.PixelSpacing)
        region = sr.SourceImageForRegion(image.SOPClassUID, uid)
        measurements = []
        for concept, points in ((LONG_AXIS, coords[:4]), (SHORT_AXIS, coords[4:])):
            xy = np.asarray(points, np.float64).reshape(2, 2)
            length = float(np.hypot(*((xy[1] - xy[0]) * [column_mm, row_mm])))
            measurements.append(sr.Measurement(
                name=_concept(concept), value=round(length, 2), unit=codes.UCUM.Millimeter,
                referenced_coordinates=[sr.CoordinatesForMeasurement(
                    sr.GraphicTypeValues.POLYLINE, xy + _SCOORD_OFFSET, region)]))
        groups.append(sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=sr.TrackingIdentifier(
                uid=dicom_uid.generate_uid(entropy_srcs=[sop_instance_uid, lesion_id]),
                identifier=lesion_id),
            measurements=measurements,
            source_images=[sr.SourceImageForMeasurementGroup(image.SOPClassUID, uid)]))
    context = sr.ObservationContext(observer_person_context=sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=sr.PersonObserverIdentifyingAttributes(name=observer)))
    return report_document(key_images, groups, context, series_instance_uid=series_instance_uid,
                           series_number=series_number, sop_instance_uid=sop_instance_uid,
                           instance_number=instance_number, when=when)


def report_document(key_images: Sequence[pydicom.Dataset], groups, context, *,
                    series_instance_uid: str, sop_instance_uid: str, series_number: int,
                    instance_number: int = 1, series_description: Optional[str] = None,
                    when: Optional[datetime.datetime] = None) -> pydicom.Dataset:
    """A TID 1500 Comprehensive SR of measurement `groups` on `key_images` (its evidence).

    The one document form of the radiologists' bookmarks (`measurement_report`) and of
    the detector's findings (`serving.detection_sr`). `when` fixes every date in it.
    """
    import highdicom
    from highdicom import sr

    report = sr.MeasurementReport(
        observation_context=context,
        procedure_reported=highdicom.sr.CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=groups)
    document = sr.ComprehensiveSR(
        evidence=list(key_images), content=report[0], series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid,
        instance_number=instance_number, manufacturer="deeplesion-tf", is_complete=True)
    if series_description:
        document.SeriesDescription = series_description
    if when is not None:
        for prefix in ("Content", "InstanceCreation", "Series"):
            setattr(document, f"{prefix}Date", when.strftime("%Y%m%d"))
            setattr(document, f"{prefix}Time", when.strftime("%H%M%S"))
        for equipment in getattr(document, "ContributingEquipmentSequence", []):
            if "ContributionDateTime" in equipment:
                equipment.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")
    return document


def read_report(dataset: pydicom.Dataset, where: str
                ) -> Tuple[List[SRBookmark], List[skips.Skip]]:
    """The bookmarks of one SR document, and a skip for each measurement group not used.

    Raises:
      ValueError: the document is not a TID 1500 measurement report (the caller
        counts it as `malformed_report`, with the message).
    """
    from highdicom import sr

    if str(dataset.get("Modality", "")) != SR_MODALITY:
        raise ValueError(f"{where}: Modality {dataset.get('Modality', '')!r} is not SR")
    kinds = {dicom_uid.EnhancedSRStorage: sr.EnhancedSR,
             dicom_uid.ComprehensiveSRStorage: sr.ComprehensiveSR,
             dicom_uid.Comprehensive3DSRStorage: sr.Comprehensive3DSR}
    kind = str(dataset.get("SOPClassUID", ""))
    if kind not in kinds:
        raise ValueError(f"{where}: SOP class {kind!r} is not an Enhanced, Comprehensive or "
                         "Comprehensive 3D SR")
    try:
        document = kinds[kind].from_dataset(dataset, copy=True)
        groups = document.content.get_image_measurement_groups()
    except Exception as error:  # highdicom raises several types for a foreign template
        raise ValueError(f"{where}: not a TID 1500 measurement report ({error})") from None
    found, skipped = [], []
    for number, group in enumerate(groups, start=1):
        here = f"{where} measurement group {number}"
        lesion_id = (group.tracking_identifier or str(group.tracking_uid or "")).strip()
        outcome = _read_group(group, here)
        if isinstance(outcome, skips.Skip):
            skipped.append(outcome)
            continue
        uid, coords = outcome
        found.append(SRBookmark(lesion_id or f"measurement-{number}", uid, coords, here))
    return found, skipped


def _read_group(group, where: str):
    """`(sop_instance_uid, coords)` of a group's long and short axis, or the `Skip`."""
    axes = {}
    for measurement in group.get_measurements():
        code = (measurement.name.value, measurement.name.scheme_designator)
        for concept in (LONG_AXIS, SHORT_AXIS):
            if code == concept[:2]:
                if concept in axes:
                    return skips.Skip(skips.NON_LINEAR_MEASUREMENT, 1,
                                      f"{where}: two {concept[2]} measurements")
                axes[concept] = measurement
    missing = [c[2] for c in (LONG_AXIS, SHORT_AXIS) if c not in axes]
    if missing:
        return skips.Skip(skips.NON_LINEAR_MEASUREMENT, 1,
                          f"{where}: no {' and no '.join(missing)} measurement")
    coords, images = [], set()
    for concept in (LONG_AXIS, SHORT_AXIS):
        regions = axes[concept].referenced_coordinates
        if not regions:
            return skips.Skip(skips.UNREFERENCED_MEASUREMENT, 1,
                              f"{where}: the {concept[2]} has no coordinates on an image")
        if len(regions) > 1:
            return skips.Skip(skips.NON_LINEAR_MEASUREMENT, 1,
                              f"{where}: the {concept[2]} has {len(regions)} coordinate sets")
        region = regions[0]
        if getattr(region, "GraphicType", None) != "POLYLINE":
            return skips.Skip(skips.NON_LINEAR_MEASUREMENT, 1,
                              f"{where}: the {concept[2]} is a {region.GraphicType}, "
                              "not a two-point POLYLINE")
        points = np.asarray(region.GraphicData, np.float64).reshape(-1, 2)
        if points.shape != (2, 2):
            return skips.Skip(skips.NON_LINEAR_MEASUREMENT, 1,
                              f"{where}: the {concept[2]} has {len(points)} points, not 2")
        uid = _referenced_image(region)
        if uid is None:
            return skips.Skip(skips.UNREFERENCED_MEASUREMENT, 1,
                              f"{where}: the {concept[2]} references no image")
        images.add(uid)
        coords.extend(round(float(v) - _SCOORD_OFFSET, COORDINATE_DECIMALS)
                      for v in points.reshape(-1))
    if len(images) != 1:
        return skips.Skip(skips.NON_LINEAR_MEASUREMENT, 1,
                          f"{where}: the long and short axis lie on different images")
    return images.pop(), tuple(coords)


def _referenced_image(region) -> Optional[str]:
    for item in getattr(region, "ContentSequence", []):
        for reference in getattr(item, "ReferencedSOPSequence", []):
            uid = str(getattr(reference, "ReferencedSOPInstanceUID", "") or "")
            if uid:
                return uid
    return None

