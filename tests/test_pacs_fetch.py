"""The PACS for real: a synthetic PACS in Orthanc, fetched by DICOMweb, built, and detections
pushed back.

Orthanc (tests/orthanc.py) is loaded through its own REST API with a small synthetic
PACS - the CT series and the bookmarks as TID 1500 SR reports. Then:
  * `bin/fetch_from_pacs` -> `tfds build --config pacs` gives the very records of the
    build from the synthetic PACS's own folder and CSV, with the same skips; no
    identifier of the source DICOMs is in a path the fetch wrote, in its state files,
    its log or the built dataset; a second run retrieves nothing;
  * the server killed mid-fetch: a clear error and exit 2, then, restarted, a re-run
    that retrieves only what is missing and ends with the same records;
  * wrong credentials: refused at once, the password in no output;
  * `bin/detect --sr_dir --stow_url`: the reports stored, queried back (QIDO-RS),
    retrieved and parsed to the boxes of the detection JSON.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pydicom
import pytest
import tensorflow as tf

from deeplesion_tf.data import deid
from deeplesion_tf.data import synthetic_pacs
from deeplesion_tf.serving import detection_sr
from tests import orthanc as orthanc_lib
from tests import phi
from tests import random_detector
from tests import tfds_helpers
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

FETCH = [sys.executable, str(REPO_ROOT / "bin" / "fetch_from_pacs")]
CREDENTIALS = {"DEEPLESION_PACS_USER": orthanc_lib.USER,
               "DEEPLESION_PACS_PASSWORD": orthanc_lib.PASSWORD}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pacs_fetch") / "pacs"
    synthetic_pacs.make_synthetic_pacs(root, num_patients=4, seed=5, image_size=64,
                                       num_workers=1)
    return root


def _dicom_files(root):
    return sorted(pathlib.Path(root).rglob("*.dcm"))


@pytest.fixture(scope="module")
def reference(pacs, tmp_path_factory):
    """The records and skips of the `pacs` build from the synthetic PACS's own folder."""
    builder = tfds_helpers.build("pacs", tmp_path_factory.mktemp("tfds_folder"), manual_dir=pacs)
    return _records(builder)


def _records(builder):
    version_dir = pathlib.Path(builder.data_path)
    records = {p.name: list(tf.data.TFRecordDataset(str(p)).as_numpy_iterator())
               for p in version_dir.glob("*.tfrecord*")}
    return records, builder.info.metadata["skipped_bookmarks"]


def _server(pacs, folder):
    server = orthanc_lib.Orthanc(folder).start()
    server.upload(_dicom_files(pacs))
    return server


@pytest.fixture(scope="module")
def server(pacs, tmp_path_factory):
    server = _server(pacs, tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


def _fetch(url, output_dir, *flags, env=None, wait=True):
    process = subprocess.Popen(
        [*FETCH, f"--url={url}", f"--output_dir={output_dir}", "--noprogress", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(CREDENTIALS if env is None else env)})
    if not wait:
        return process
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def _summary(output):
    line = [line for line in output.splitlines() if "Summary:" in line][-1]
    return line.split("Summary: ", 1)[1]


def test_fetch_then_build_gives_the_folder_s_records_and_writes_no_identifier(
        pacs, server, reference, tmp_path):
    fetched = tmp_path / "fetched"
    code, output = _fetch(server.dicomweb_url, fetched)
    assert code == 0, output[-4000:]
    reports = len(list((pacs / "sr").rglob("*.dcm")))
    assert _summary(output).startswith(f"{reports} reports ({reports} retrieved now, "
                                       "0 unreadable, kept)")
    written = [p for p in fetched.rglob("*") if p.is_file()]
    headers = [p for p in written if p.name.endswith(".header.dcm")]
    full = [p for p in written if p.suffix == ".dcm" and p not in headers
            and "sr" not in p.relative_to(fetched).parts]
    assert headers and len(full) + len(headers) < len(_dicom_files(pacs / "dicom")) + 1
    # Only the slices the builder reads pixels of crossed the network in full.
    assert all("PixelData" not in pydicom.dcmread(p) for p in headers)

    builder = tfds_helpers.build("pacs", tmp_path / "tfds", manual_dir=fetched)
    records, skipped = _records(builder)
    assert records == reference[0] and sum(len(r) for r in records.values()) > 0
    assert skipped == reference[1]

    identifiers = phi.identifiers(pacs)
    assert len(identifiers) > 50
    phi.assert_absent(identifiers, {"the fetch's log": output})
    phi.assert_absent(identifiers, {p: str(p.relative_to(fetched)) for p in written})
    phi.assert_absent(identifiers, {p: p.read_bytes() for p in written
                                    if p.suffix != ".dcm"})
    phi.assert_absent(identifiers, {p: p.read_bytes() for p in (tmp_path / "tfds").rglob("*")
                                    if p.is_file()})
    assert orthanc_lib.PASSWORD not in output

    # A second run finds everything in place and retrieves nothing.
    before = {p: p.stat().st_mtime_ns for p in written}
    code, output = _fetch(server.dicomweb_url, fetched)
    assert code == 0, output[-4000:]
    series = len(list((fetched / "dicom").glob("*/*")))
    assert _summary(output) == (
        f"{reports} reports (0 retrieved now, 0 unreadable, kept); {series} series ({series} "
        f"complete before); 0 key slices and neighbours retrieved, {len(full)} already there; "
        "0 headers written")
    assert {p: p.stat().st_mtime_ns for p in written} == before


def test_a_server_killed_mid_fetch_gives_a_clear_error_and_the_rerun_resumes(
        pacs, reference, tmp_path):
    server = _server(pacs, tmp_path / "orthanc")
    fetched = tmp_path / "fetched"
    try:
        process = _fetch(server.dicomweb_url, fetched, "--requests_per_second=8",
                         "--max_retries=1", "--retry_backoff_s=0.2", "--timeout_s=5",
                         wait=False)
        deadline = time.monotonic() + 120
        while len(list((fetched / "dicom").rglob("*.dcm"))) < 6:
            assert process.poll() is None and time.monotonic() < deadline, \
                process.communicate()[0][-3000:]
            time.sleep(0.05)
        server.kill()
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 2, output[-3000:]
        assert "failed after 2 attempts (ConnectionError); the server may be down" in output
        assert "run the same command again to resume" in output
        assert not list((fetched / ".fetch" / "tmp").glob("*"))  # nothing half written
        kept = len(list((fetched / "dicom").rglob("*.dcm")))

        server.start()
        code, output = _fetch(server.dicomweb_url, fetched)
        assert code == 0, output[-4000:]
        counts = re.search(r"(\d+) key slices and neighbours retrieved, (\d+) already there",
                           _summary(output))
        retrieved, present = int(counts[1]), int(counts[2])
        # What the killed run wrote is kept and not retrieved again.
        assert kept > 0 and present > 0 and retrieved > 0
    finally:
        server.stop()
    builder = tfds_helpers.build("pacs", tmp_path / "tfds", manual_dir=fetched)
    assert _records(builder) == reference


def test_refused_credentials_stop_the_fetch_at_once_without_showing_them(server, tmp_path):
    wrong = {"DEEPLESION_PACS_USER": orthanc_lib.USER,
             "DEEPLESION_PACS_PASSWORD": "wrong-password-4711"}
    code, output = _fetch(server.dicomweb_url, tmp_path / "fetched", env=wrong)
    assert code == 2
    assert "refused the search for SR reports: HTTP 401 (check the credentials" in output
    assert "wrong-password-4711" not in output
    code, output = _fetch(server.dicomweb_url.replace("http://", "http://u:p@"),
                          tmp_path / "fetched")
    assert code != 0 and "the server URL holds credentials" in output


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return random_detector.export_random(tmp_path_factory, 4.0, dict(
        num_classes=2, width_multiplier=0.0625, fc_units=32, anchor_sizes=[12.0, 24.0],
        test_pre_nms_top_k=300, test_post_nms_top_k=32, score_threshold=0.0,
        max_detections=3))


def test_detections_on_a_fetched_series_pushed_back_as_sr_read_back_to_the_same_boxes(
        server, saved_model, tmp_path):
    code, output = _fetch(server.dicomweb_url, tmp_path / "fetched")
    assert code == 0, output[-4000:]
    # The series with the most headers-only slices: context across them is noted.
    series = max((tmp_path / "fetched" / "dicom").glob("*/*"),
                 key=lambda s: len(list(s.glob("*.header.dcm"))))
    full = [p for p in series.glob("*.dcm") if not p.name.endswith(".header.dcm")]
    output_dir, sr_dir = tmp_path / "json", tmp_path / "sr"
    process = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bin" / "detect"), f"--saved_model={saved_model}",
         f"--output_dir={output_dir}", f"--sr_dir={sr_dir}",
         f"--stow_url={server.dicomweb_url}", str(series)],
        capture_output=True, text=True, timeout=600, env={**os.environ, **CREDENTIALS})
    assert process.returncode == 0, process.stderr[-4000:]
    results = {p.stem: json.loads(p.read_text()) for p in output_dir.glob("*.json")}
    assert len(results) == len(full) and set(results) == {
        p.name[:-len(".dcm")] for p in sr_dir.glob("*.dcm")}
    notes = [note for r in results.values() for note in r["context"]["notes"]]
    assert any("is a header without pixels: the key slice stands in" in n for n in notes)

    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(server.dicomweb_url, session=server.session)
    # Orthanc 1.10 matches no SeriesDescription with a space in it: compared here.
    ours = [found for found in client.search_for_series(search_filters={"Modality": "SR"})
            if found.get("0008103E", {}).get("Value") == [detection_sr.SERIES_DESCRIPTION]]
    stored = [instance for series_found in ours
              for instance in client.search_for_instances(
            series_found["0020000D"]["Value"][0], series_found["0020000E"]["Value"][0])]
    assert len(stored) == len(results)
    by_source = {}
    for attributes in stored:
        uids = [attributes[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018")]
        report = client.retrieve_instance(*uids)
        findings = detection_sr.read_detection_report(report)
        assert len({f.sop_instance_uid for f in findings}) == 1
        by_source[findings[0].sop_instance_uid] = (report, findings)
    for path in full:
        source = pydicom.dcmread(path, stop_before_pixels=True)
        report, findings = by_source[str(source.SOPInstanceUID)]
        # Filed with the source study: its patient and study identifiers.
        assert (report.PatientID, report.StudyInstanceUID) == (source.PatientID,
                                                               source.StudyInstanceUID)
        instance = deid.pseudonym(deid.site_salt(), "instance", str(source.SOPInstanceUID))
        name = [n for n in results if n.endswith("_" + instance)][0]
        expected = [(d["class_name"], d["score"], tuple(d["box_px"]))
                    for d in results[name]["detections"]]
        assert expected and [(f.class_name, f.score, f.box_px) for f in findings] == expected
