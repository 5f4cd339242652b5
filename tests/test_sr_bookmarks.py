"""Bookmarks as DICOM SR (TID 1500): written, read back, and bad measurements counted."""

import datetime
import io
import time

import numpy as np
import pydicom
import pytest

from deeplesion_tf.data import skips
from deeplesion_tf.data import sr_bookmarks
from tfds_deeplesion.deeplesion import dummy_data_generation

WHEN = datetime.datetime(2020, 5, 17, 10, 30, 0)
# Long axis (10.123, 20.5)-(30.25, 20.75); short axis (20, 16)-(20, 24).
COORDS_A = (10.123, 20.5, 30.25, 20.75, 20.0, 16.0, 20.0, 24.0)
COORDS_B = (40.0, 40.0, 50.0, 44.0, 44.0, 46.0, 46.0, 41.0)


@pytest.fixture(scope="module")
def key_images():
    paths = sorted((dummy_data_generation.DUMMY_DIR / "dicom").rglob("*.dcm"))[:2]
    return [pydicom.dcmread(path) for path in paths]


def _report(key_images, lesions=None):
    a, b = key_images
    lesions = lesions or [("P1-L1", a.SOPInstanceUID, COORDS_A),
                          ("P1-L2", a.SOPInstanceUID, COORDS_B),
                          ("P1-L3", b.SOPInstanceUID, COORDS_B)]
    return sr_bookmarks.measurement_report(
        [a, b], lesions, series_instance_uid="1.2.3.4.5", sop_instance_uid="1.2.3.4.5.6",
        when=WHEN)


def _reread(dataset):
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue())), buffer.getvalue()


def test_a_report_reads_back_as_the_bookmarks_it_was_written_from(key_images):
    a, b = key_images
    dataset, _ = _reread(_report(key_images))
    assert dataset.Modality == "SR" and dataset.PatientID == a.PatientID
    assert dataset.StudyInstanceUID == a.StudyInstanceUID
    found, skipped = sr_bookmarks.read_report(dataset, "report.dcm")
    assert skipped == []
    assert [(f.lesion_id, f.sop_instance_uid, f.coords) for f in found] == [
        ("P1-L1", a.SOPInstanceUID, COORDS_A), ("P1-L2", a.SOPInstanceUID, COORDS_B),
        ("P1-L3", b.SOPInstanceUID, COORDS_B)]


def _items(dataset, name):
    """Every content item of the document whose concept is `name` (`(code, scheme)`)."""
    found = []

    def walk(items):
        for item in items:
            concept = getattr(item, "ConceptNameCodeSequence", None)
            if concept and (concept[0].CodeValue, concept[0].CodingSchemeDesignator) == name:
                found.append(item)
            walk(getattr(item, "ContentSequence", []))

    walk(dataset.ContentSequence)
    return found


def test_axes_are_scoord_polylines_from_the_pixel_corner_with_lengths_in_mm(key_images):
    dataset, _ = _reread(_report(key_images))
    long_axes = _items(dataset, sr_bookmarks.LONG_AXIS[:2])
    assert len(long_axes) == 3
    first = long_axes[0]
    scoord = first.ContentSequence[0]
    assert scoord.ValueType == "SCOORD" and scoord.GraphicType == "POLYLINE"
    # DICOM puts (0, 0) at the top-left pixel's corner: our pixel centres are +0.5.
    np.testing.assert_allclose(scoord.GraphicData, [10.623, 21.0, 30.75, 21.25], atol=1e-4)
    row_mm, column_mm = (float(v) for v in key_images[0].PixelSpacing)
    length = np.hypot((30.25 - 10.123) * column_mm, (20.75 - 20.5) * row_mm)
    assert float(first.MeasuredValueSequence[0].NumericValue) == pytest.approx(length, abs=0.01)
    assert first.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm"


def test_the_same_bookmarks_and_time_give_the_same_bytes(key_images):
    _, first = _reread(_report(key_images))
    time.sleep(1.1)  # highdicom stamps the clock where it is not told the time
    _, second = _reread(_report(key_images))
    assert first == second


def _without(dataset, name, keep=lambda item: False):
    """The document with the first item named `name` removed (or changed by `keep`)."""
    def walk(items):
        for index, item in enumerate(items):
            concept = getattr(item, "ConceptNameCodeSequence", None)
            if concept and (concept[0].CodeValue, concept[0].CodingSchemeDesignator) == name:
                if not keep(item):
                    del items[index]
                return True
            if walk(getattr(item, "ContentSequence", [])):
                return True
        return False

    assert walk(dataset.ContentSequence)
    return dataset


def test_unusable_measurements_are_skipped_by_reason(key_images):
    a, _ = key_images
    lesion = [("P1-L1", a.SOPInstanceUID, COORDS_A)]
    no_short = _without(_reread(_report(key_images, lesion))[0], sr_bookmarks.SHORT_AXIS[:2])
    found, skipped = sr_bookmarks.read_report(no_short, "r.dcm")
    assert found == [] and [s.reason for s in skipped] == [skips.NON_LINEAR_MEASUREMENT]
    assert "r.dcm measurement group 1: no Short Axis" in skipped[0].detail

    def as_point(item):
        item.ContentSequence[0].GraphicType = "POINT"
        item.ContentSequence[0].GraphicData = [1.0, 2.0]
        return True

    point = _without(_reread(_report(key_images, lesion))[0], sr_bookmarks.LONG_AXIS[:2],
                     as_point)
    found, skipped = sr_bookmarks.read_report(point, "r.dcm")
    assert found == [] and "is a POINT, not a two-point POLYLINE" in skipped[0].detail

    def unreferenced(item):
        del item.ContentSequence
        return True

    loose = _without(_reread(_report(key_images, lesion))[0], sr_bookmarks.LONG_AXIS[:2],
                     unreferenced)
    found, skipped = sr_bookmarks.read_report(loose, "r.dcm")
    assert found == [] and [s.reason for s in skipped] == [skips.UNREFERENCED_MEASUREMENT]


def test_a_document_that_is_not_a_measurement_report_is_refused(key_images):
    with pytest.raises(ValueError, match="ct.dcm: Modality 'CT' is not SR"):
        sr_bookmarks.read_report(key_images[0], "ct.dcm")
    report, _ = _reread(_report(key_images))
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    with pytest.raises(ValueError, match="is not an Enhanced, Comprehensive"):
        sr_bookmarks.read_report(report, "text.dcm")
