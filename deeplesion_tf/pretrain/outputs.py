"""What `bin/pretrain_trunk` writes: the trunk for the detector, a report and the loss curve."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, Sequence

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from deeplesion_tf.data import atomic_file  # noqa: E402
from deeplesion_tf.nets import trunk_file  # noqa: E402
from deeplesion_tf.pretrain import contrastive  # noqa: E402

TRUNK_DIR = "trunk"


def write_trunk(output_dir: str, encoder: keras.Model, settings: contrastive.ContrastiveSettings,
                *, image_size: int, window: Sequence[float], provenance: Dict[str, object]) -> str:
    """`output_dir/trunk` for `bin/train_detector --weights`: the encoder's VGG16 layers.

    No FC6/FC7 (`fc_units` 0): SimCLR's projection head is not the box head, so
    the box head starts randomly.
    """
    directory = os.path.join(output_dir, TRUNK_DIR)
    low, high = window
    trunk_file.save(encoder, directory, trunk_file.TrunkSpec(
        width_multiplier=settings.width_multiplier, norm=settings.norm, fc_units=0,
        input_description=(
            f"three adjacent slices (above, the slice, below) under the HU window "
            f"[{low:g}, {high:g}] at the detector's input scale ({image_size} px on the longest "
            f"side), in random crops of {settings.min_area:g}-{settings.max_area:g} of the "
            f"slice's area resized to {settings.crop_size} px"),
        source="simclr", provenance={**provenance, "seed": settings.seed,
                                     "steps": settings.steps,
                                     "batch_size": settings.batch_size}))
    return directory


def write_report(path: str, settings: contrastive.ContrastiveSettings,
                 history: contrastive.History, data: Dict[str, object]) -> None:
    """`report.json`: the settings, what was read (counts only) and the loss per logged step."""
    report = {"settings": dataclasses.asdict(settings), "data": data,
              "history": dataclasses.asdict(history)}
    atomic_file.write_atomically(path, json.dumps(report, indent=1, sort_keys=True))


def plot_history(path: str, history: contrastive.History, batch_size: int) -> None:
    """NT-Xent loss and partner accuracy per logged step, with what chance would give."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(history.steps, history.loss, marker=".")
    # Chance: the partner is one of 2B - 1 equally likely views.
    chance = 1.0 / (2 * batch_size - 1)
    left.axhline(-math.log(chance), color="grey", linestyle="--",
                 label="chance, log(2B - 1)")
    left.set_xlabel("step")
    left.set_ylabel("NT-Xent loss (mean of the logged steps)")
    left.legend()
    right.plot(history.steps, history.accuracy, marker=".")
    right.axhline(chance, color="grey", linestyle="--", label="chance, 1 / (2B - 1)")
    right.set_ylim(0, 1.02)
    right.set_xlabel("step")
    right.set_ylabel("partner found (top-1 of 2B - 1 views)")
    right.legend()
    figure.suptitle("SimCLR pretraining of the trunk")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
