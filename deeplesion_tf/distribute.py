"""`tf.distribute` strategies by name, shared by the training binaries.

Names:
  * `auto`: `mirrored` when there are several local GPUs, else the default
    (one device: the GPU if there is one, else the CPU).
  * `one_device`: the first GPU, else the CPU.
  * `mirrored`: all local GPUs (`MirroredStrategy`), synchronous.
  * `multi_worker`: `MultiWorkerMirroredStrategy`, the cluster read from the
    `TF_CONFIG` environment variable of each worker process.
  * `tpu`: `TPUStrategy` on the TPU named by `tpu_address` ("" for a local one).
"""

from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf
from absl import logging

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, tpu_address: Optional[str] = None) -> tf.distribute.Strategy:
    """The strategy called `name` (one of `STRATEGIES`).

    Raises:
      ValueError: an unknown name, or `multi_worker` without a `TF_CONFIG`.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")
    if name == "multi_worker":
        # Before anything touches the TF context: collectives are set up at its start.
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multi_worker needs the TF_CONFIG environment variable "
                             "(the cluster and this worker's task)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = _local_strategy(name, tpu_address)
    logging.info("Strategy %s (%s): %d replicas", name, type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    return strategy


def _local_strategy(name: str, tpu_address: Optional[str]) -> tf.distribute.Strategy:
    """The strategies of one machine (and TPUs), which may look at its devices first."""
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints and summaries (worker 0, or no cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    # No chief in the cluster: worker 0 acts as one.
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return "chief" not in cluster and resolver.task_type == "worker" and resolver.task_id == 0


def task_id(strategy: tf.distribute.Strategy) -> str:
    """A name for this process in a cluster (`worker_1`), or "" outside one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return ""
    return f"{resolver.task_type}_{resolver.task_id}"
