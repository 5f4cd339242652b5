"""Training the detector under `tf.distribute`, with checkpoints that resume.

A custom loop in the style of Model Garden's trainers: each replica computes
the four losses of its share of the global batch (`FasterRCNN.compute_losses`),
divides their sum by the number of replicas, and the optimizer sums the
gradients over replicas, so a step equals one step on the global batch.

`model_dir` holds:
  * `ckpt-<step>.*`: the model and optimizer every `checkpoint_every` steps and
    at the end (the last `keep_checkpoints`); a new run in the same directory
    continues from the latest one, so an interrupted run loses at most the
    steps since its last checkpoint.
  * `train/`: TensorBoard summaries of the four losses, their total and the
    RPN recall (means over the last `log_every` steps), the learning rate and
    the speed, every `log_every` steps.
Only the chief writes there; in a cluster, other workers save into a scratch
folder under `model_dir/.worker_scratch/` that is removed after each save (every
worker has to take part in a save of distributed variables).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from typing import Callable, Dict, Optional

import keras
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from deeplesion_tf import distribute
from deeplesion_tf.detection import config as config_lib
from deeplesion_tf.detection import faster_rcnn

SUMMARY_NAMES = faster_rcnn.LOSS_NAMES + ("total_loss", "rpn_recall")
MIXED_PRECISION_POLICIES = ("", "mixed_float16", "mixed_bfloat16")


def learning_rate_schedule(settings: config_lib.TrainingConfig):
    """Step decay: `learning_rate * decay_factor ** (step // decay_every)`."""
    boundaries = list(range(settings.decay_every, max(settings.steps, 1), settings.decay_every))
    values = [settings.learning_rate * settings.decay_factor ** i
              for i in range(len(boundaries) + 1)]
    if not boundaries:
        return settings.learning_rate
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(settings: config_lib.TrainingConfig) -> keras.optimizers.Optimizer:
    """SGD with momentum (or Adam), weight decay and the step schedule (loss-scaled for float16).

    Raises:
      ValueError: an unknown optimizer.
    """
    common = dict(learning_rate=learning_rate_schedule(settings),
                  weight_decay=settings.weight_decay or None, global_clipnorm=settings.clip_norm)
    if settings.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(momentum=settings.momentum, **common)
    elif settings.optimizer == "adam":
        optimizer = keras.optimizers.AdamW(**common) if settings.weight_decay else \
            keras.optimizers.Adam(**{k: v for k, v in common.items() if k != "weight_decay"})
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {settings.optimizer!r}")
    if settings.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def use_mixed_precision(policy: str) -> None:
    """Sets the Keras dtype policy for the models built next ("" keeps float32).

    Raises:
      ValueError: a policy not in `MIXED_PRECISION_POLICIES`.
    """
    if policy not in MIXED_PRECISION_POLICIES:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_POLICIES}, "
                         f"got {policy!r}")
    if policy:
        keras.mixed_precision.set_dtype_policy(policy)


def scale_loss(optimizer, loss: tf.Tensor) -> tf.Tensor:
    """The loss to differentiate: scaled by a `LossScaleOptimizer` (float16), which
    unscales the gradients it applies; otherwise `loss` itself."""
    return optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss


def current_learning_rate(optimizer) -> tf.Tensor:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return tf.convert_to_tensor(inner.learning_rate)


def make_train_step(model: faster_rcnn.FasterRCNN, optimizer: keras.optimizers.Optimizer,
                    strategy: tf.distribute.Strategy, seed: int):
    """One optimizer step over a distributed iterator: `train_step(iterator) -> values`.

    Each replica computes the four losses of its batch (`FasterRCNN.compute_losses`,
    the anchor and RoI samples seeded by `[seed, step]`), their sum divided by the
    replicas (so that the summed gradients are those of the global mean), scaled
    under mixed float16; the optimizer applies them. Returns the replica means of
    `SUMMARY_NAMES`. Used by `train` and by `benchmarks/bench_detector.py`.
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(batch, step_seed):
        with tf.GradientTape() as tape:
            values = model.compute_losses(batch["images"], batch["boxes"], batch["classes"],
                                          batch["num_lesions"], training=True, seed=step_seed)
            loss = values["total_loss"] / replicas
            scaled = scale_loss(optimizer, loss)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return {name: values[name] for name in SUMMARY_NAMES}

    @tf.function
    def train_step(iterator):
        step_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(optimizer.iterations, tf.int64)])
        per_replica = strategy.run(replica_step, args=(next(iterator), step_seed))
        return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                for name, value in per_replica.items()}

    return train_step


def train(build_model: Callable[[], faster_rcnn.FasterRCNN],
          make_dataset: Callable[[tf.distribute.InputContext], tf.data.Dataset],
          strategy: tf.distribute.Strategy, model_dir: str, settings: config_lib.TrainingConfig,
          progress: bool = True) -> Dict[str, float]:
    """Trains (or resumes training) until `settings.steps` optimizer steps.

    Args:
      build_model: makes the built detector (called inside `strategy.scope()`).
      make_dataset: the batches of one input pipeline, per replica and repeated
        (`detector_pipeline.make_detector_dataset(...).repeat()` sharded by the
        input context), as `tf.distribute.Strategy.distribute_datasets_from_function` wants.
      strategy: from `deeplesion_tf.distribute.make_strategy`.
      model_dir: checkpoints and summaries.
      settings: `config_lib.TrainingConfig`.
      progress: show a progress bar (chief only).

    Returns:
      The last logged values of `SUMMARY_NAMES` (means over the last `log_every`
      steps of the replica means) and `step`.

    Raises:
      ValueError: bad settings.
    """
    if settings.steps < 1 or settings.checkpoint_every < 1 or settings.log_every < 1:
        raise ValueError(f"steps, checkpoint_every and log_every must be >= 1: {settings}")
    use_mixed_precision(settings.mixed_precision)
    chief = distribute.is_chief(strategy)
    with strategy.scope():
        model = build_model()
        optimizer = make_optimizer(settings)
        optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    save_dir = model_dir if chief else os.path.join(
        model_dir, ".worker_scratch", distribute.task_id(strategy))
    manager = tf.train.CheckpointManager(checkpoint, save_dir,
                                         max_to_keep=settings.keep_checkpoints)
    latest = tf.train.latest_checkpoint(model_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("Resumed from %s at step %d", latest, int(optimizer.iterations.numpy()))
    else:
        logging.info("No checkpoint in %s: training from step 0", model_dir)

    iterator = iter(strategy.distribute_datasets_from_function(make_dataset))
    train_step = make_train_step(model, optimizer, strategy, settings.seed)

    writer = tf.summary.create_file_writer(os.path.join(model_dir, "train")) if chief else None
    step = int(optimizer.iterations.numpy())
    last: Dict[str, float] = {}
    bar = tqdm(total=settings.steps, initial=step, desc="train_detector", unit=" steps",
               disable=not (chief and progress))
    started, start_step = time.time(), step
    # Logged values are means over the steps since the last log (single steps are noisy).
    sums: Dict[str, float] = {}
    count = 0
    skipped = 0  # consecutive steps the loss scaling skipped (mixed_float16 overflow)
    while step < settings.steps:
        values = train_step(iterator)
        previous, step = step, int(optimizer.iterations.numpy())
        if step == previous:
            # A LossScaleOptimizer skips a step whose gradients overflow and halves its
            # scale; the step is retried, not logged or saved as done.
            skipped += 1
            if skipped > _MAX_SKIPPED_STEPS:
                raise FloatingPointError(
                    f"{skipped} consecutive steps skipped for non-finite gradients at step "
                    f"{step} (total_loss {float(values['total_loss'])}): training diverged")
            continue
        skipped = 0
        bar.update(1)
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + float(value)
        count += 1
        if step % settings.log_every == 0 or step == settings.steps:
            last = {name: total / count for name, total in sums.items()}
            sums, count = {}, 0
            for name, value in last.items():
                if not math.isfinite(value):
                    raise FloatingPointError(f"{name} is {value} at step {step}")
            learning_rate = float(current_learning_rate(optimizer))
            bar.set_postfix(loss=f"{last['total_loss']:.3f}",
                            recall=f"{last['rpn_recall']:.2f}", lr=f"{learning_rate:.0e}")
            logging.info("step %d: %s, lr %.2e", step,
                         ", ".join(f"{k} {v:.4f}" for k, v in last.items()), learning_rate)
            if writer is not None:
                with writer.as_default(step=step):
                    for name, value in last.items():
                        tf.summary.scalar(name, value)
                    tf.summary.scalar("learning_rate", learning_rate)
                    tf.summary.scalar("steps_per_second", _rate(started, start_step, step))
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            _save(manager, step, save_dir, chief)
    bar.close()
    if writer is not None:
        writer.flush()
    last["step"] = step
    return last


# More consecutive skipped steps than halvings from the initial loss scale (2^15) to 1 means
# the loss itself is not finite.
_MAX_SKIPPED_STEPS = 20


def _rate(started: float, start_step: int, step: int) -> float:
    return (step - start_step) / max(time.time() - started, 1e-9)


def _save(manager: tf.train.CheckpointManager, step: int, save_dir: str, chief: bool) -> None:
    path = manager.save(checkpoint_number=step)
    if chief:
        logging.info("Saved %s", path)
    else:
        shutil.rmtree(save_dir, ignore_errors=True)


def restore_model(model: keras.Model, model_dir: str, checkpoint: Optional[str] = None) -> str:
    """Loads the model part of a training checkpoint (latest unless `checkpoint`).

    The model must be built (variables created). Returns the checkpoint path.

    Raises:
      FileNotFoundError: `model_dir` holds no checkpoint.
    """
    path = checkpoint or tf.train.latest_checkpoint(model_dir)
    if not path:
        raise FileNotFoundError(f"no checkpoint in {model_dir!r}")
    tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    logging.info("Restored the model from %s", path)
    return path
