#!/usr/bin/env python3
"""Key slices per second of `tfds build deeplesion` for the pacs and release configs.

pacs: a synthetic PACS at 512x512 (DICOM decode, HU -> 16-bit PNG encode, 3 slices
per example). release: the NIH layout with real-CT-sized PNGs (pydicom's
512x512 JPEG 2000 CT as 16-bit PNG, passed through). Each build runs in this
process after a warm-up build (imports); worker start-up is included. The median
of the repeats is reported, with the time the whole NIH release (32,120 key
slices) would take at that rate.

    python benchmarks/bench_tfds_build.py [--patients 100] [--key_slices 400] [--repeats 3]
"""

import argparse
import csv
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from deeplesion_tf.data import ct_reader, png16, release_format, synthetic_pacs  # noqa: E402
import tfds_deeplesion  # noqa: E402,F401
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder  # noqa: E402

NIH_KEY_SLICES = 32120


def _build(config, manual_dir, data_dir):
    builder = dl_builder.Builder(config=config, data_dir=data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
    seconds = time.perf_counter() - start
    return seconds, sum(s.num_examples for s in builder.info.splits.values())


def _release_layout(root, key_slices):
    """`key_slices` key slices of 3 real-CT PNGs each, with DL_info.csv rows."""
    hu = ct_reader.read_ct(get_testdata_file("693_J2KI.dcm")).hu
    rng = np.random.default_rng(0)
    rows = []
    for k in range(key_slices):
        patient, key = k // 4 + 1, 10 + 3 * (k % 4)
        folder = root / "Images_png" / release_format.series_folder(patient, 1, 1)
        folder.mkdir(parents=True, exist_ok=True)
        for number in (key - 1, key, key + 1):
            # Shifted per slice so files differ, as real slices do.
            shifted = np.roll(hu, int(rng.integers(-20, 20)), axis=0)
            (folder / release_format.slice_file(number)).write_bytes(png16.encode_hu(shifted, 6))
        x, y = 200.0 + k % 50, 220.0
        rows.append({
            "File_name": release_format.key_slice_file_name(patient, 1, 1, key),
            "Patient_index": patient, "Study_index": 1, "Series_ID": 1, "Key_slice_index": key,
            "Measurement_coordinates": release_format.format_numbers(
                [x, y, x + 30, y + 10, x + 15, y - 6, x + 14, y + 16]),
            "Bounding_boxes": release_format.format_numbers([x - 5, y - 11, x + 35, y + 21]),
            "Lesion_diameters_Pixel_": "31.6228, 22.0227",
            "Normalized_lesion_location": "0.5, 0.5, 0.5", "Coarse_lesion_type": -1,
            "Possibly_noisy": 0, "Slice_range": f"{key - 1}, {key + 1}",
            "Spacing_mm_px_": "0.7, 0.7, 5", "Image_size": "512, 512",
            "DICOM_windows": "-175, 275", "Patient_gender": "F", "Patient_age": 60,
            "Train_Val_Test": 1 + (patient % 10 >= 7) + (patient % 10 >= 9)})
    with open(root / "DL_info.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=release_format.DL_INFO_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--key_slices", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_tfds_"))
    try:
        pacs_dir = work / "pacs"
        synthetic_pacs.make_synthetic_pacs(os.fspath(pacs_dir), num_patients=args.patients,
                                           seed=0, image_size=512)
        release_dir = work / "release"
        _release_layout(release_dir, args.key_slices)
        # A first build imports what TFDS loads lazily; it is not timed.
        _build("release", os.fspath(release_dir), os.fspath(work / "warmup"))
        results = {}
        for config, manual_dir in (("pacs", pacs_dir), ("release", release_dir)):
            rates = []
            for repeat in range(args.repeats):
                data_dir = work / f"data_{config}_{repeat}"
                seconds, examples = _build(config, os.fspath(manual_dir), os.fspath(data_dir))
                rates.append(examples / seconds)
                shutil.rmtree(data_dir)
            results[config] = (examples, statistics.median(rates), rates)
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; "
              f"{time.strftime('%Y-%m-%d')}")
        print("| config | key slices | median key slices/s | runs | NIH release (32,120) at "
              "this rate |")
        print("|---|---|---|---|---|")
        for config, (examples, median, rates) in results.items():
            minutes = NIH_KEY_SLICES / median / 60
            runs = ", ".join(f"{r:.1f}" for r in rates)
            print(f"| {config} | {examples} | {median:.1f} | {runs} | {minutes:.1f} min |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
