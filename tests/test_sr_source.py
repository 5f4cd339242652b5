"""The `pacs` source from DICOM SR bookmarks: the same dataset as from bookmarks.csv."""

import shutil

import pydicom
import pytest

from deeplesion_tf.data import pacs_source
from deeplesion_tf.data import skips
from deeplesion_tf.data import synthetic_pacs
from tests import tfds_helpers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr_pacs") / "pacs"
    synthetic_pacs.make_synthetic_pacs(root, num_patients=4, seed=3, image_size=64,
                                       num_workers=1)
    return root


def test_the_synthetic_pacs_writes_the_csv_bookmarks_as_reports(pacs):
    csv_rows, csv_skipped = pacs_source.read_bookmarks(pacs / "bookmarks.csv")
    sr_rows, sr_skipped = pacs_source.read_reports(pacs)
    assert csv_skipped == [] and sr_skipped == [] and len(csv_rows) >= 4
    def as_set(rows):
        return sorted((r.lesion_id, r.sop_instance_uid, r.relative_path, r.coords) for r in rows)

    assert as_set(sr_rows) == as_set(csv_rows)
    report = pydicom.dcmread(sorted((pacs / "sr").rglob("*.dcm"))[0])
    assert report.Modality == "SR" and report.ContentDate == report.StudyDate


def test_a_build_from_the_reports_is_byte_identical_to_one_from_the_csv(pacs, tmp_path):
    from_reports = tmp_path / "from_reports"
    shutil.copytree(pacs, from_reports)
    (from_reports / "bookmarks.csv").unlink()
    built = {}
    for name, manual_dir in (("csv", pacs), ("sr", from_reports)):
        builder = tfds_helpers.build("pacs", tmp_path / f"tfds_{name}", manual_dir=manual_dir)
        files = sorted(p for p in builder.data_path.iterdir() if ".tfrecord" in p.name)
        built[name] = ({p.name: p.read_bytes() for p in files},
                       builder.info.metadata["skipped_bookmarks"])
    assert built["sr"][0] and built["sr"] == built["csv"]


def test_bad_reports_are_counted_by_reason(pacs, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(pacs, root)
    (root / "bookmarks.csv").unlink()
    rows, _ = pacs_source.read_reports(root)
    first_report = sorted((root / "sr").rglob("*.dcm"))[0]
    first_report.write_bytes(b"not a DICOM file")
    # A key image of another report gone from the tree.
    kept, _ = pacs_source.read_reports(root)
    (root / kept[0].relative_path).unlink()
    gone = sum(r.sop_instance_uid == kept[0].sop_instance_uid for r in kept)
    after, skipped = pacs_source.read_reports(root)
    assert skips.tally(skipped) == {skips.MALFORMED_REPORT: 1, skips.UNKNOWN_INSTANCE: gone}
    malformed = [s for s in skipped if s.reason == skips.MALFORMED_REPORT][0]
    assert malformed.detail.startswith(
        f"{first_report.relative_to(root).as_posix()}: not a readable DICOM SR")
    assert len(after) == len(kept) - gone < len(rows)
