#!/usr/bin/env python3
"""What `bin/fetch_from_pacs` moves and how long it takes, against Orthanc on loopback.

    python benchmarks/bench_pacs_fetch.py --num_patients=20 --seed=0 [--image_size=512] \
        [--repeats=3] [--work_dir=DIR]

Generates a synthetic PACS, loads it into a fresh Debian Orthanc with its DICOMweb
plugin (tests/orthanc.py), and times `pacs_fetch.fetch` into an empty folder
`--repeats` times (no rate limit), then once more into the full folder (the resume
path: nothing to retrieve). Reports the median and range of the wall time, the
slices retrieved in full against the slices of the series holding a key image (what
an export of whole series would move) and the bytes on disk of each. Machine-bound:
the server and the client share the CPU.
"""

import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_PATIENTS = flags.DEFINE_integer("num_patients", 20, "Patients of the synthetic PACS.")
_SEED = flags.DEFINE_integer("seed", 0, "Its seed.")
_SIZE = flags.DEFINE_integer("image_size", 512, "Slice size.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed fetches into an empty folder.")
_WORK = flags.DEFINE_string("work_dir", None, "Scratch folder (default: a temporary one).")


def _bytes(paths):
    return sum(p.stat().st_size for p in paths)


def main(argv):
    del argv
    from deeplesion_tf.data import dicomweb, pacs_fetch, synthetic_pacs
    from tests import orthanc as orthanc_lib

    work = pathlib.Path(_WORK.value or tempfile.mkdtemp(prefix="bench_fetch_"))
    pacs = work / "pacs"
    if not pacs.exists():
        synthetic_pacs.make_synthetic_pacs(pacs, num_patients=_PATIENTS.value, seed=_SEED.value,
                                           image_size=_SIZE.value)
    server = orthanc_lib.Orthanc(work / "orthanc").start()
    try:
        server.upload(sorted(pacs.rglob("*.dcm")))
        connection = dicomweb.Connection(
            dicomweb.Settings(server.dicomweb_url, requests_per_second=0),
            dicomweb.Credentials(orthanc_lib.USER, orthanc_lib.PASSWORD, source="test"))
        times = []
        for _ in range(_REPEATS.value):
            out = work / "fetched"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            summary = pacs_fetch.fetch(connection, str(out), progress=False)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        again = pacs_fetch.fetch(connection, str(out), progress=False)
        resume = time.perf_counter() - start
    finally:
        server.stop()
    files = [p for p in (out / "dicom").rglob("*.dcm")]
    full = [p for p in files if not p.name.endswith(pacs_fetch.HEADER_SUFFIX)]
    series_folders = {p.parent.name for p in files}
    source_series = {}
    for path in (pacs / "dicom").rglob("*.dcm"):
        source_series.setdefault(path.parent, []).append(path)
    whole = [p for members in source_series.values() for p in members]
    print(f"patients {_PATIENTS.value}, seed {_SEED.value}, {_SIZE.value} px; "
          f"{summary.reports} reports, {summary.series} series with a key image "
          f"({len(series_folders)} written)")
    print(f"fetch into an empty folder: median {statistics.median(times):.2f} s "
          f"(range {min(times):.2f}-{max(times):.2f}, {len(times)} runs)")
    print(f"re-run on the complete folder: {resume:.2f} s, retrieved "
          f"{again.instances_retrieved + again.reports_retrieved}")
    print(f"slices retrieved in full: {len(full)} of {len(files)} in those series "
          f"({len(full) / len(files):.1%}); bytes {_bytes(full) / 1e6:.1f} MB full + "
          f"{_bytes(set(files) - set(full)) / 1e6:.2f} MB headers, against "
          f"{_bytes(whole) / 1e6:.1f} MB for every slice of the PACS "
          f"({len(whole)} slices)")


if __name__ == "__main__":
    app.run(main)
