#!/usr/bin/env python3
"""What storing more slices around each key slice costs: build time and disk.

    python benchmarks/bench_context_slices.py [--patients 20] [--context 1,4,13] [--repeats 2]

A synthetic PACS at 512x512 (seed 0) built with the `pacs` config and
`context_slices` k for each k given (1: the default, previous and next only; 4: the
9 slices of 3DCE with M = 3 at the stored interval; 13: 27 slices). Each build runs
in this process after an untimed warm-up; reported per k: the median wall time of
the repeats with their range, key slices per second, and the bytes of the built
records per key slice.
"""

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import tensorflow_datasets as tfds  # noqa: E402

from deeplesion_tf.data import synthetic_pacs  # noqa: E402
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder  # noqa: E402


def _build(k, manual_dir, data_dir):
    config = dl_builder.DeepLesionConfig(name=f"pacs_context{k}", source="pacs",
                                         context_slices=k)
    builder = dl_builder.Builder(config=config, data_dir=data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir))
    seconds = time.perf_counter() - start
    records = sum(p.stat().st_size for p in pathlib.Path(builder.data_dir).glob("*.tfrecord*"))
    return seconds, sum(s.num_examples for s in builder.info.splits.values()), records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--context", default="1,4,13")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_context_"))
    try:
        pacs = work / "pacs"
        synthetic_pacs.make_synthetic_pacs(os.fspath(pacs), num_patients=args.patients, seed=0,
                                           image_size=512)
        _build(1, os.fspath(pacs), os.fspath(work / "warmup"))
        print(f"\n{args.patients} patients at 512 px, {time.strftime('%Y-%m-%d')}, "
              f"{os.cpu_count()} cores")
        print("| slices per side | key slices | median s (range) | key slices / s | "
              "MB of records | kB per key slice |")
        print("|---|---|---|---|---|---|")
        for k in (int(v) for v in args.context.split(",")):
            runs = []
            for repeat in range(args.repeats):
                data_dir = work / f"data_{k}_{repeat}"
                runs.append(_build(k, os.fspath(pacs), os.fspath(data_dir)))
                shutil.rmtree(data_dir)
            seconds = [r[0] for r in runs]
            examples, size = runs[0][1], runs[0][2]
            median = statistics.median(seconds)
            print(f"| {k} | {examples} | {median:.1f} ({min(seconds):.1f}-{max(seconds):.1f}) | "
                  f"{examples / median:.1f} | {size / 1e6:.1f} | {size / examples / 1e3:.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
