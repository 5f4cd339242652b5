#!/usr/bin/env python3
"""Generation speed of the synthetic PACS (phantom render, DICOM and release PNG writes).

Each repeat writes a fresh PACS of `--patients` patients at `--image_size` with
the release layout, using `--num_workers` processes (default: every core); the
median over repeats is reported per patient and per slice, with the time the
default 100-patient preset would take at that rate (worker start-up included).

    python benchmarks/bench_synthetic_pacs.py [--patients 10] [--repeats 3] [--image_size 512]
"""

import argparse
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from deeplesion_tf.data import synthetic_pacs  # noqa: E402

PRESET_PATIENTS = 100


def _run(root, args, seed):
    start = time.perf_counter()
    summary = synthetic_pacs.make_synthetic_pacs(
        root, args.patients, seed, image_size=args.image_size, write_release=True,
        num_workers=args.num_workers)
    return time.perf_counter() - start, summary.num_slices


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--num_workers", type=int, default=None)
    args = parser.parse_args()
    workers = args.num_workers or os.cpu_count()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_pacs_"))
    try:
        per_patient, per_slice = [], []
        for repeat in range(args.repeats):
            seconds, slices = _run(work / f"pacs{repeat}", args, seed=repeat)
            per_patient.append(seconds / args.patients)
            per_slice.append(slices / seconds)
            shutil.rmtree(work / f"pacs{repeat}")
        median_patient = statistics.median(per_patient)
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {workers} workers; "
              f"{time.strftime('%Y-%m-%d')}")
        print("| image size | patients x repeats | median s / patient | median slices / s | "
              f"runs (s / patient) | {PRESET_PATIENTS} patients at this rate |")
        print("|---|---|---|---|---|---|")
        runs = ", ".join(f"{s:.2f}" for s in per_patient)
        print(f"| {args.image_size} | {args.patients} x {args.repeats} | {median_patient:.2f} | "
              f"{statistics.median(per_slice):.1f} | {runs} | "
              f"{median_patient * PRESET_PATIENTS / 60:.1f} min |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
