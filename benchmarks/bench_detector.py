#!/usr/bin/env python3
"""Detector speed on this machine: inference and training, paper size and CPU quickstart size.

    python benchmarks/bench_detector.py [--repeats=5] [--skip_paper] [--skip_quickstart]
        [--mixed_precision=mixed_float16] [--batch_size=4] [--image_size=512]

Random inputs (speed does not depend on the values; random initialisation, since
no ImageNet weights can be had here). For each model: a warm-up call (tracing),
then `--repeats` timed calls; prints medians. Inference is `model(images)`
under `tf.function` (proposals, RoI pooling, box head, per-class NMS included);
training is one optimizer step of `FasterRCNN.compute_losses` (the four losses)
under `tf.function`, as `deeplesion_tf.detection.training` runs it.

`--mixed_precision` sets the Keras dtype policy before the models are built and,
for float16, scales the loss with a `LossScaleOptimizer`, as `training.train`
does; `--batch_size` and `--image_size` replace every preset's.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplesion_tf.detection import config, faster_rcnn, training  # noqa: E402

PRESETS = {
    # configs/paper_single_class.flags (random init instead of ImageNet).
    "paper 512px": dict(image_size=512, batch=1, model=dict(
        num_classes=1, width_multiplier=1.0, fc_units=4096)),
    # configs/quickstart.flags.
    "quickstart 256px": dict(image_size=256, batch=4, model=dict(
        num_classes=1, width_multiplier=0.25, backbone_norm="group", fc_units=256,
        anchor_sizes=(24., 36., 48.),
        train_pre_nms_top_k=2000, train_post_nms_top_k=256, test_pre_nms_top_k=1000,
        test_post_nms_top_k=100, rpn_num_samples=64, rpn_positive_iou=0.5)),
}


def _median_seconds(function, repeats):
    function()  # warm-up: tracing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def bench(name, preset, repeats, mixed_precision=""):
    tf.keras.utils.set_random_seed(0)
    size, batch = preset["image_size"], preset["batch"]
    model = faster_rcnn.build_faster_rcnn(config.from_flat(image_size=size, **preset["model"]))
    optimizer = training.make_optimizer(
        config.TrainingConfig(steps=1, mixed_precision=mixed_precision))
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=[batch, size, size, 3]).astype(np.float32))
    side = size / 8
    boxes = tf.constant([[[size / 2 - side, size / 2 - side, size / 2 + side,
                           size / 2 + side]]] * batch, tf.float32)
    classes = tf.ones([batch, 1], tf.int32)
    counts = tf.ones([batch], tf.int32)
    strategy = tf.distribute.get_strategy()
    iterator = iter(strategy.distribute_datasets_from_function(
        lambda context: tf.data.Dataset.from_tensors({
            "images": images, "boxes": boxes, "classes": classes,
            "num_lesions": counts}).repeat()))
    step = training.make_train_step(model, optimizer, strategy, seed=0)

    @tf.function
    def infer():
        return model(images)["scores"]

    def train_step():
        # The training loop's own step (`training.make_train_step`), on a constant batch.
        return step(iterator)["total_loss"]

    infer_s, infer_runs = _median_seconds(lambda: infer().numpy(), repeats)
    train_s, train_runs = _median_seconds(lambda: train_step().numpy(), repeats)
    print(f"| {name} | {batch} | {1000 * infer_s / batch:.0f} | {batch / train_s:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in infer_runs)} | {', '.join(f'{t:.2f}' for t in train_runs)} |",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip_paper", action="store_true")
    parser.add_argument("--skip_quickstart", action="store_true")
    parser.add_argument("--mixed_precision", default="",
                        choices=training.MIXED_PRECISION_POLICIES,
                        help="Keras dtype policy ('' is float32)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="images per call for every model (default: the preset's)")
    parser.add_argument("--image_size", type=int, default=None,
                        help="input side for every model (default: the preset's)")
    args = parser.parse_args()
    training.use_mixed_precision(args.mixed_precision)
    if args.mixed_precision:
        print(f"dtype policy: {args.mixed_precision}")
    print("| model | batch | inference ms/image (median) | training images/s (median) | "
          "inference runs (s/batch) | training runs (s/step) |")
    print("|---|---|---|---|---|---|")
    for name, preset in PRESETS.items():
        if (args.skip_paper and name.startswith("paper")) or (
                args.skip_quickstart and name.startswith("quickstart")):
            continue
        preset = dict(preset, image_size=args.image_size or preset["image_size"],
                      batch=args.batch_size or preset["batch"])
        name = f"{name.split()[0]} {preset['image_size']}px"
        if args.mixed_precision:
            name += f", {args.mixed_precision}"
        bench(name, preset, args.repeats, args.mixed_precision)


if __name__ == "__main__":
    main()
