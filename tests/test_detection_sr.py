"""Detections as DICOM SR: the box polygon's coordinates, the round trip, the identifiers."""

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from deeplesion_tf.data import ct_reader
from deeplesion_tf.serving import detection_sr

DETECTIONS = [{"class_name": "lung", "score": 0.91234, "box_px": [10.25, 12.5, 30.0, 40.125]},
              {"class_name": "liver", "score": 0.05, "box_px": [0.0, 1.0, 2.0, 3.0]}]


@pytest.fixture(scope="module")
def source():
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)


def test_boxes_class_names_and_scores_round_trip(source):
    report = detection_sr.detection_report(source, DETECTIONS, model="/models/serving/7")
    back = detection_sr.read_detection_report(
        pydicom.dcmread(io.BytesIO(ct_reader.dicom_bytes(report))))
    assert [(f.class_name, f.score, list(f.box_px), f.sop_instance_uid) for f in back] == [
        (d["class_name"], d["score"], d["box_px"], source.SOPInstanceUID) for d in DETECTIONS]


def test_the_box_is_a_closed_polyline_with_dicom_s_pixel_corner_origin(source):
    report = detection_sr.detection_report(source, DETECTIONS[:1], model="m")
    regions = [item for item in report.ContentSequence[-1].ContentSequence[-1].ContentSequence
               if item.ValueType == "SCOORD"]
    assert len(regions) == 1 and regions[0].GraphicType == "POLYLINE"
    # box [ymin, xmin, ymax, xmax] = [10.25, 12.5, 30, 40.125], pixel centres at integers:
    # (column, row) corners + 0.5, back to the first.
    expected = [[13.0, 10.75], [40.625, 10.75], [40.625, 30.5], [13.0, 30.5], [13.0, 10.75]]
    assert np.allclose(np.reshape(regions[0].GraphicData, (-1, 2)), expected)


def test_the_report_is_filed_with_the_source_study_and_is_the_same_for_the_same_model(source):
    first = detection_sr.detection_report(source, DETECTIONS, model="m1")
    again = detection_sr.detection_report(source, DETECTIONS, model="m1")
    other = detection_sr.detection_report(source, DETECTIONS, model="m2")
    assert (first.PatientID, first.PatientName, first.StudyInstanceUID) == (
        source.PatientID, source.PatientName, source.StudyInstanceUID)
    assert first.Modality == "SR" and first.SeriesDescription == detection_sr.SERIES_DESCRIPTION
    assert first.SOPInstanceUID == again.SOPInstanceUID != other.SOPInstanceUID
    assert first.SeriesInstanceUID not in (source.SeriesInstanceUID, other.SeriesInstanceUID)
    with pytest.raises(ValueError, match="no detections"):
        detection_sr.detection_report(source, [], model="m1")


def test_a_report_of_bookmarks_is_not_read_as_detections(source):
    with pytest.raises(ValueError, match="not a TID 1500 report of detections"):
        detection_sr.read_detection_report(source)
