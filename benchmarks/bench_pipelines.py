#!/usr/bin/env python3
"""Images per second of the detector and patch input pipelines on the 512x512 synthetic build.

Reads every split of `deeplesion/synthetic` (the default config: 100 patients,
329 key slices at 512x512) from `--data_dir`, building it first with the
`Builder` if it is missing. Each pipeline runs one untimed warm-up epoch, then
`--runs` timed runs of `--epochs` epochs each; the median run's rate is reported.

  * detector: `make_detector_dataset(training=True, batch_size=4, image_size=512)`
    (PNG decode of 3 slices, windowing, shuffle, flip, pad, batch): images/s.
    The slices are 512x512, so nothing is resampled; a second row at
    image_size=640 includes bilinear resampling.
  * patch: `make_patch_dataset(patch_size=224)` (PNG decode of the key slice,
    crop_and_resize per lesion, 3 windows, VGG preprocessing), consumed in
    batches of 32: patches/s (one per lesion) and key slices/s.

    python benchmarks/bench_pipelines.py [--data_dir /tmp/default_tfds] [--runs 3] [--epochs 5]
"""

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import tfds_deeplesion  # noqa: E402,F401 (registers deeplesion)
from deeplesion_tf.data import detector_pipeline, patch_pipeline  # noqa: E402
from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder  # noqa: E402

ALL_SPLITS = "train+validation+test"


def _builder(data_dir):
    builder = dl_builder.Builder(config="synthetic", data_dir=data_dir)
    if not builder.is_prepared():
        print(f"building deeplesion/synthetic in {data_dir} (a few minutes)", flush=True)
        builder.download_and_prepare()
    return builder


def _run_rates(dataset, count_fn, runs, epochs):
    """Items/s of each timed run of `epochs` epochs, after an untimed warm-up epoch.

    Returns the rates and the items of one epoch.
    """
    per_epoch = sum(count_fn(element) for element in dataset)  # warm-up
    rates = []
    for _ in range(runs):
        start, items = time.perf_counter(), 0
        for _ in range(epochs):
            for element in dataset:
                items += count_fn(element)
        rates.append(items / (time.perf_counter() - start))
    return rates, per_epoch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="/tmp/default_tfds")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    builder = _builder(args.data_dir)
    source = builder.as_dataset(split=ALL_SPLITS)
    key_slices = sum(s.num_examples for s in builder.info.splits.values())

    detector = {}
    for image_size in (512, 640):
        detector[image_size] = _run_rates(
            detector_pipeline.make_detector_dataset(
                source, training=True, batch_size=4, image_size=image_size),
            lambda b: int(b["images"].shape[0]), args.runs, args.epochs)

    patches = patch_pipeline.make_patch_dataset(source, patch_size=224).batch(32)
    patch_rates, lesions = _run_rates(patches, lambda b: int(b["patch"].shape[0]), args.runs,
                                      args.epochs)
    slice_rates = [r * key_slices / lesions for r in patch_rates]

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {key_slices} key slices, {lesions} lesions")
    print(f"{args.runs} runs of {args.epochs} epochs after a warm-up epoch")
    print("| pipeline | per epoch | median | runs |")
    print("|---|---|---|---|")
    for image_size, (rates, images) in detector.items():
        print(f"| detector (training, batch 4, {image_size}x{image_size}, 3 channels) | "
              f"{images} images | {statistics.median(rates):.1f} images/s | "
              f"{', '.join(f'{r:.1f}' for r in rates)} |")
    print(f"| patch (224x224, 3 windows, VGG preprocessing) | {lesions} patches | "
          f"{statistics.median(patch_rates):.1f} patches/s "
          f"({statistics.median(slice_rates):.1f} key slices/s) | "
          f"{', '.join(f'{r:.1f}' for r in patch_rates)} |")


if __name__ == "__main__":
    main()
