"""`tfds build` killed with SIGKILL while generating, then run again; and no PHI in what it wrote.

The `pacs` config on dummy_data's PACS, from the command line as the README
documents it. The killed build leaves its `incomplete.*` folder behind; the
re-run must still produce the complete dataset: the same examples in the same
order as an uninterrupted build (the `dummy_pacs_data_dir` fixture, built
in-process), and the leftover must not count. Then every file under the data dir - records,
`dataset_info.json`, `features.json`, `metadata.json`, `.config/`, the
leftover - is scanned for each identifier of the source DICOMs.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tfds_deeplesion  # noqa: F401 (registers deeplesion)
from tests import phi
from tfds_deeplesion.deeplesion import dummy_data_generation as dummy

# Slow tier (a killed tfds build in a subprocess): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

SPLITS = {"train": 14, "validation": 2, "test": 3}
COMMAND = [os.path.join(os.path.dirname(sys.executable), "tfds"), "build", "deeplesion",
           "--imports", "tfds_deeplesion", "--config", "pacs",
           "--manual_dir", str(dummy.DUMMY_DIR)]


def _tfds(data_dir, **kwargs):
    return subprocess.Popen([*COMMAND, "--data_dir", str(data_dir)], cwd=data_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def _kill_while_generating(data_dir, timeout=300):
    """Starts the build and SIGKILLs its process group once generation has begun.

    Returns the leftover `incomplete.*` folders.
    """
    process = _tfds(data_dir)
    pacs = data_dir / "deeplesion" / "pacs"
    started = None
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            assert process.poll() is None, process.stdout.read()[-4000:]
            incomplete = list(pacs.glob("incomplete.*")) if pacs.is_dir() else []
            if incomplete and started is None:
                started = time.time()
            # Mid-way: a few seconds into generation, or as soon as records appear.
            if started and (time.time() - started > 3 or any(incomplete[0].iterdir())):
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the build never started generating")
        # The whole group: the builder's worker processes die with it, as in a crash.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    assert not (pacs / "1.0.0").exists()
    return list(pacs.glob("incomplete.*"))


def _records(version_dir):
    """Each shard's records in order, as bytes (the builder serializes deterministically,
    so builds in different processes write the same bytes)."""
    return {p.name: list(tf.data.TFRecordDataset(str(p)).as_numpy_iterator())
            for p in version_dir.glob("*.tfrecord*")}


def _source_identifiers():
    """Every identifying value in dummy_data's DICOMs."""
    return phi.identifiers(dummy.DUMMY_DIR / "dicom")


def test_killed_build_reruns_to_the_same_dataset_without_phi(dummy_pacs_data_dir, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    leftovers = _kill_while_generating(data_dir)
    assert leftovers, "the kill came after generation"
    rerun = _tfds(data_dir)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output[-4000:]

    built = data_dir / "deeplesion" / "pacs" / "1.0.0"
    reference = pathlib.Path(dummy_pacs_data_dir) / "deeplesion" / "pacs" / "1.0.0"
    records = _records(built)
    assert sorted(records) == sorted(_records(reference))
    for name, examples in _records(reference).items():
        assert records[name] == examples, name
    # The leftover holds no counted examples: the loaded splits are the full ones.
    builder = tfds.builder("deeplesion/pacs", data_dir=str(data_dir))
    assert {s: builder.info.splits[s].num_examples for s in SPLITS} == SPLITS
    assert {s: len(list(builder.as_dataset(split=s))) for s in SPLITS} == SPLITS
    assert builder.info.metadata["skipped_bookmarks"] == tfds.builder(
        "deeplesion/pacs", data_dir=str(dummy_pacs_data_dir)).info.metadata["skipped_bookmarks"]

    # No PHI in anything the builds wrote, the killed one's leftover included.
    identifiers = _source_identifiers()
    assert len(identifiers) > 100
    written = [p for p in data_dir.rglob("*") if p.is_file()]
    assert {"dataset_info.json", "features.json", "metadata.json"} <= {p.name for p in written}
    assert any(".config" in p.parts for p in written)
    phi.assert_absent(identifiers, {path: path.read_bytes() for path in written})
