"""Property-based tests of the DICOM side: random header values and random byte corruptions.

The property, for every input: the slice is read exactly as its header says, or
a `CTReadError` names the file and the attribute; a build's unit of work
(`pacs_source.process_series`) never raises, and every bookmark ends as a
written lesion or a counted skip. A few seconds of examples run in the fast
tier; `-m slow` runs many more.
"""

import copy
import io
import math
import os
import tempfile
import warnings

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.datadict import tag_for_keyword
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import pacs_source
from deeplesion_tf.data import skips

SIZE = 32
_FAST = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
_SLOW = settings(max_examples=600, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

NUMERIC = ("RescaleSlope", "RescaleIntercept", "PixelSpacing", "WindowCenter", "WindowWidth",
           "InstanceNumber", "ImagePositionPatient", "SliceLocation", "SliceThickness")
REQUIRED = ("RescaleSlope", "RescaleIntercept", "PixelSpacing")

_number_texts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["0", "-0", "nan", "inf", "-inf", "1e999", "1,5", "", " ", "abc", "0x10",
                     "1e-320", "+7", "--1", "1.0.0"]),
    st.text(alphabet="0123456789.-+eE ,abc", max_size=8),
)
_values = st.lists(_number_texts, min_size=1, max_size=4).map("\\".join)


def _base() -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = ds.pixel_array[40:40 + SIZE, 40:40 + SIZE].copy()
    ds.Rows = ds.Columns = SIZE
    ds.PixelData = pixels.tobytes()
    ds.PatientID = "MRN-PROPERTY"
    return ds


_BASE = _base()


def _with(values: dict, implicit: bool) -> bytes:
    ds = copy.deepcopy(_BASE)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, text in values.items():
        tag = tag_for_keyword(keyword)
        ds[tag] = DataElement(tag, "LO", text)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _parse(text: str):
    """What a careful reader makes of a header value: floats, or None if any part is not."""
    parts = [p.strip() for p in text.split("\\")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def _check_read(values: dict, implicit: bool):
    data = _with(values, implicit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ct = ct_reader.read_ct(io.BytesIO(data))
        except ct_reader.CTReadError as e:
            assert e.kind in (ct_reader.INVALID_VALUE, ct_reader.MISSING_TAG), e
            bad = [k for k in REQUIRED if k in str(e)]
            assert bad, e  # names the attribute
            keyword = bad[0]
            parsed = _parse(values.get(keyword, "1"))
            if keyword in values and values[keyword].strip():
                # Refused exactly when the value is not what the attribute must hold.
                assert (parsed is None or (keyword == "RescaleSlope" and (
                    len(parsed) != 1 or parsed[0] == 0))
                    or (keyword == "RescaleIntercept" and len(parsed) != 1)
                    or (keyword == "PixelSpacing" and (len(parsed) != 2 or min(parsed) <= 0))
                    or "overflow" in str(e)), (values, e)
            return
    stored = _BASE.pixel_array.astype(np.float32)
    slope = _parse(values["RescaleSlope"])[0] if "RescaleSlope" in values else float(
        _BASE.RescaleSlope)
    intercept = _parse(values["RescaleIntercept"])[0] if "RescaleIntercept" in values else float(
        _BASE.RescaleIntercept)
    np.testing.assert_allclose(ct.hu, stored * np.float32(slope) + np.float32(intercept),
                               rtol=1e-6)
    if "PixelSpacing" in values:
        assert ct.pixel_spacing_mm == pytest.approx(tuple(_parse(values["PixelSpacing"])))
    for keyword in ("SliceThickness", "InstanceNumber"):
        if keyword in values and values[keyword].strip():
            parsed = _parse(values[keyword])
            got = ct.slice_thickness_mm if keyword == "SliceThickness" else ct.instance_number
            if got is None:  # ignored: said so by name
                assert any(m.startswith(keyword) for m in ct.ignored), (values, ct.ignored)
            else:
                assert parsed is not None and len(parsed) == 1 and got == parsed[0]
    assert np.all(np.isfinite(ct.hu))
    assert all(v > 0 for v in ct.pixel_spacing_mm)
    assert all(math.isfinite(c) and w > 0 for c, w in ct.windows)


_headers = st.dictionaries(st.sampled_from(NUMERIC), _values, max_size=4)


@_FAST
@given(values=_headers, implicit=st.booleans())
def test_random_header_values_are_read_as_written_or_refused_by_name(values, implicit):
    _check_read(values, implicit)


@pytest.mark.slow
@_SLOW
@given(values=_headers, implicit=st.booleans())
def test_random_header_values_many(values, implicit):
    _check_read(values, implicit)


_GOOD_FILE = _with({}, implicit=False)


def _check_corruption(positions, masks, cut):
    data = bytearray(_GOOD_FILE)
    for position, mask in zip(positions, masks):
        data[position % len(data)] ^= mask
    data = bytes(data[:cut] if cut else data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ct = ct_reader.read_ct(io.BytesIO(data))
        except ct_reader.CTReadError as e:
            assert e.reason
            return
    assert ct.hu.ndim == 2 and min(ct.hu.shape) >= 16
    assert np.all(np.isfinite(ct.hu)) and all(v > 0 for v in ct.pixel_spacing_mm)


_corruptions = dict(
    positions=st.lists(st.integers(0, 10**6), min_size=1, max_size=6),
    masks=st.lists(st.integers(1, 255), min_size=6, max_size=6),
    cut=st.one_of(st.just(0), st.integers(1, len(_GOOD_FILE))))


@_FAST
@given(**_corruptions)
def test_random_byte_corruptions_are_read_or_refused(positions, masks, cut):
    _check_corruption(positions, masks, cut)


@pytest.mark.slow
@_SLOW
@given(**_corruptions)
def test_random_byte_corruptions_many(positions, masks, cut):
    _check_corruption(positions, masks, cut)


def _series_task(root, spoil_index, values, implicit, corrupt):
    """A 3-slice series in `root` with slice `spoil_index` spoiled; its task of 2 bookmarks."""
    study, series = generate_uid(), generate_uid()
    rows = []
    for index in range(3):
        ds = copy.deepcopy(_BASE)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, -5.0 * index]
        ds.InstanceNumber = index + 1
        relpath = f"series/{index + 1:04d}.dcm"
        path = os.path.join(root, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if index == spoil_index:
            for keyword, text in values.items():
                tag = tag_for_keyword(keyword)
                ds[tag] = DataElement(tag, "LO", text)
            if implicit:
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
        if index == spoil_index and corrupt:
            data = bytearray(open(path, "rb").read())
            data[corrupt % len(data)] ^= 0xFF
            open(path, "wb").write(bytes(data))
        if index == 1:
            for lesion, coords in (("a", (10, 12, 20, 16, 15, 10, 16, 19)),
                                   ("b", (4, 4, 12, 6, 8, 2, 9, 8))):
                rows.append(pacs_source.BookmarkRow(len(rows) + 1, lesion,
                                                    str(ds.SOPInstanceUID), relpath, coords))
    return pacs_source.plan_tasks(root, rows, "salt")


def _check_process(spoil_index, values, implicit, corrupt):
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = _series_task(root, spoil_index, values, implicit, corrupt)
        outcomes = [o for task in tasks
                    for o in pacs_source.process_series(root, task, "salt", padding=5.0)]
    examples = [o for o in outcomes if not isinstance(o, (skips.Skip, skips.Repair))]
    skipped = [o for o in outcomes if isinstance(o, skips.Skip)]
    written = sum(len(example["lesions"]["lesion_id"]) for _, example in examples)
    assert written + sum(s.count for s in skipped) == 2
    for skip in skipped:
        assert skip.reason in skips.SKIP_REASONS and "0002.dcm" in skip.detail
    if spoil_index != 1:  # A spoiled neighbour never costs the key slice its example.
        assert written == 2


_spoils = dict(spoil_index=st.integers(0, 2), values=_headers, implicit=st.booleans(),
               corrupt=st.one_of(st.just(0), st.integers(1, 10**5)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_spoils)
def test_a_series_with_one_spoiled_slice_never_stops_the_build(spoil_index, values, implicit,
                                                              corrupt):
    _check_process(spoil_index, values, implicit, corrupt)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_spoils)
def test_a_series_with_one_spoiled_slice_many(spoil_index, values, implicit, corrupt):
    _check_process(spoil_index, values, implicit, corrupt)
