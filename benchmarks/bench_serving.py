#!/usr/bin/env python3
"""Serving latency per 512x512 slice: the exported SavedModel against the in-Python model.

    python benchmarks/bench_serving.py [--repeats=3] [--skip_paper]

For each model size (random initialisation, same weights on both sides) and
batch 1 and 8 of 512x512 HU slices (`[B, 512, 512, 3]` float32):
  * `savedmodel`: `serving_default` of the SavedModel written by
    `deeplesion_tf.serving.export` and loaded with `tf.saved_model.load`
    (windowing, resizing to the model's input size, detection, boxes mapped
    back to the slice: the whole request).
  * `in-python module`: the same `DetectorModule.detect_hu` before export.
  * `in-python model`: `model(images)` under `tf.function` on inputs already
    windowed and sized (no preprocessing, no mapping back).
A warm-up call, then `--repeats` timed calls; prints median milliseconds per
image (the batch's time divided by B).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplesion_tf.data import hu_windows  # noqa: E402
from deeplesion_tf.detection import config, faster_rcnn  # noqa: E402
from deeplesion_tf.serving import detector_module  # noqa: E402
from deeplesion_tf.serving import export  # noqa: E402

SLICE = 512
BATCHES = (1, 8)
PRESETS = {
    # configs/paper_single_class.flags (random init instead of ImageNet).
    "paper 512px": dict(image_size=512, model=dict(num_classes=1, width_multiplier=1.0,
                                                   fc_units=4096)),
    # configs/quickstart.flags.
    "quickstart 256px": dict(image_size=256, model=dict(
        num_classes=1, width_multiplier=0.25, fc_units=256, anchor_sizes=(24., 36., 48.),
        test_pre_nms_top_k=1000, test_post_nms_top_k=100)),
}


def _median_ms_per_image(function, batch, repeats):
    function()  # warm-up: tracing, graph optimisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times) / batch


def bench(name, preset, repeats, work_dir):
    tf.keras.utils.set_random_seed(0)
    size = preset["image_size"]
    model = faster_rcnn.build_faster_rcnn(config.from_flat(image_size=size, **preset["model"]))
    module = detector_module.DetectorModule(model, ["lesion"], image_size=size,
                                            windows=hu_windows.DETECTOR_WINDOWS,
                                            box_padding_px=20.0)
    path = export.export_module(module, work_dir, 1, write_warmup=False)
    served = tf.saved_model.load(path).signatures[detector_module.SERVING_DEFAULT]
    plain_model = tf.function(lambda images: model(images, training=False))
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        hu = tf.constant(rng.uniform(-1024, 1500, [batch, SLICE, SLICE, 3]).astype(np.float32))
        network_input = tf.constant(rng.uniform(0, 1, [batch, size, size, 3]).astype(np.float32))
        rows = {
            "savedmodel": lambda: served(images=hu)["num_detections"].numpy(),
            "in-python module": lambda: module.detect_hu(hu)["num_detections"].numpy(),
            "in-python model": lambda: plain_model(network_input)["num_detections"].numpy(),
        }
        for what, function in rows.items():
            ms = _median_ms_per_image(function, batch, repeats)
            print(f"{name:18s} batch {batch}  {what:17s} {ms:9.1f} ms/image", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_paper", action="store_true")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores visible")
    for name, preset in PRESETS.items():
        if args.skip_paper and name.startswith("paper"):
            continue
        with tempfile.TemporaryDirectory() as work_dir:
            bench(name, preset, args.repeats, work_dir)


if __name__ == "__main__":
    main()
