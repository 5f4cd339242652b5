"""The CT reader against pydicom's own CT files and a set of bad files."""

import io
import subprocess
import sys
import textwrap

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from deeplesion_tf.data import ct_reader
from deeplesion_tf.data.ct_reader import CTReadError

PYDICOM_CT_FILES = ["CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm"]


@pytest.mark.parametrize("name", PYDICOM_CT_FILES)
def test_hu_equals_pydicom_modality_lut(name):
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    ct = ct_reader.read_ct(path)
    assert ct.hu.dtype == np.float32
    np.testing.assert_allclose(ct.hu, expected, rtol=0, atol=1e-3)
    assert ct.pixel_spacing_mm == tuple(float(v) for v in ds.PixelSpacing)
    assert ct.slice_position_mm == pytest.approx(float(ds.ImagePositionPatient[2]))
    assert ct.sop_instance_uid == ds.SOPInstanceUID


def test_known_values_of_pydicom_files():
    small = ct_reader.read_ct(get_testdata_file("CT_small.dcm"))
    assert (small.hu.min(), small.hu.max()) == (-896.0, 1167.0)
    assert small.slice_thickness_mm == 5.0
    assert small.windows == ()
    j2k = ct_reader.read_ct(get_testdata_file("J2K_pixelrep_mismatch.dcm"))
    assert (j2k.hu.min(), j2k.hu.max()) == (-2000.0, 1896.0)
    assert j2k.windows == ((40.0, 100.0), (40.0, 100.0), (40.0, 200.0))
    assert j2k.pixel_spacing_mm == (0.431, 0.431)


def test_reads_from_a_file_object():
    path = get_testdata_file("CT_small.dcm")
    with open(path, "rb") as f:
        from_file = ct_reader.read_ct(io.BytesIO(f.read()))
    np.testing.assert_array_equal(from_file.hu, ct_reader.read_ct(path).hu)


def test_non_integer_rescale_is_applied(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.RescaleSlope = 0.5
    ds.RescaleIntercept = -1000.25
    path = tmp_path / "rescaled.dcm"
    ds.save_as(path)
    ct = ct_reader.read_ct(path)
    stored = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(ct.hu, stored * 0.5 - 1000.25, atol=1e-3)


def _write_modified(tmp_path, name, change):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    change(ds)
    path = tmp_path / name
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    "name, change, reason, kind",
    [
        ("mr.dcm", lambda ds: setattr(ds, "Modality", "MR")
         or setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.4"), "not a CT image",
         ct_reader.NOT_CT),
        ("nopixels.dcm", lambda ds: delattr(ds, "PixelData"), "has no pixel data",
         ct_reader.NO_PIXEL_DATA),
        ("noslope.dcm", lambda ds: delattr(ds, "RescaleSlope"), "missing RescaleSlope",
         ct_reader.MISSING_TAG),
        ("nointercept.dcm", lambda ds: delattr(ds, "RescaleIntercept"),
         "missing RescaleIntercept", ct_reader.MISSING_TAG),
        ("nospacing.dcm", lambda ds: delattr(ds, "PixelSpacing"), "missing PixelSpacing",
         ct_reader.MISSING_TAG),
        ("frames.dcm", lambda ds: setattr(ds, "NumberOfFrames", 2), "multi-frame",
         ct_reader.UNSUPPORTED),
    ],
)
def test_bad_files_raise_one_error_type_naming_file_and_reason(tmp_path, name, change, reason,
                                                               kind):
    path = _write_modified(tmp_path, name, change)
    with pytest.raises(CTReadError, match=reason) as info:
        ct_reader.read_ct(path)
    assert name in str(info.value)
    assert info.value.source == str(path)
    assert info.value.kind == kind


def test_not_dicom_and_truncated_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(CTReadError, match="not a DICOM file") as info:
        ct_reader.read_ct(text)
    assert "notes.txt" in str(info.value)
    assert info.value.kind == ct_reader.NOT_DICOM

    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 5000])  # cuts into the pixel data
    with pytest.raises(CTReadError, match="cannot be decoded") as info:
        ct_reader.read_ct(truncated)
    assert "truncated.dcm" in str(info.value)
    assert info.value.kind == ct_reader.UNDECODABLE

    with pytest.raises(CTReadError, match="truncated_header.dcm"):
        path = tmp_path / "truncated_header.dcm"
        path.write_bytes(data[:300])
        ct_reader.read_ct(path)


def test_real_mr_file_is_rejected():
    with pytest.raises(CTReadError, match="Modality='MR'"):
        ct_reader.read_ct(get_testdata_file("MR_small.dcm"))


def test_compressed_file_without_its_decoder_raises_cannot_decode():
    # In a fresh process with every JPEG 2000 decoder hidden, as on a machine
    # where pylibjpeg-openjpeg is not installed.
    script = textwrap.dedent(
        """
        import sys
        for module in ("openjpeg", "pylibjpeg", "libjpeg", "gdcm", "PIL"):
            sys.modules[module] = None
        from pydicom.data import get_testdata_file
        from deeplesion_tf.data.ct_reader import read_ct, CTReadError
        try:
            read_ct(get_testdata_file("693_J2KI.dcm"))
        except CTReadError as e:
            print("CTReadError:", e)
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert "CTReadError:" in result.stdout
    assert "693_J2KI.dcm" in result.stdout
    assert "cannot be decoded (transfer syntax JPEG 2000 Image Compression)" in result.stdout


def test_apply_window():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_allclose(ct_reader.apply_window(hu, 40.0, 400.0), [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError):
        ct_reader.apply_window(hu, 40.0, 0.0)
