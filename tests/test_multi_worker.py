"""`--strategy=multi_worker` for real: two worker processes on 127.0.0.1.

Each worker gets its own `TF_CONFIG`; together they train a tiny detector for
a few steps with MultiWorkerMirroredStrategy and the chief writes one
checkpoint (the other worker's scratch copy is removed).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tests.test_train_detector import TINY_FLAGS

# Slow tier (a cluster of training processes): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

STEPS = 3


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_and_checkpoint(dummy_pacs_data_dir, tmp_path):
    model_dir = tmp_path / "model"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    flags = [flag for flag in TINY_FLAGS if not flag.startswith(("--split", "--batch_size"))]
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bin" / "train_detector"),
             f"--data_dir={dummy_pacs_data_dir}", f"--model_dir={model_dir}",
             "--strategy=multi_worker", f"--steps={STEPS}", f"--checkpoint_every={STEPS}",
             "--split=train", "--batch_size=2", *flags],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=600))
        finally:
            process.kill()
    for index, (process, (_, stderr)) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"worker {index}:\n{stderr[-4000:]}"
        assert "Strategy multi_worker (CollectiveAllReduceStrategy): 2 replicas" in stderr
        assert "Global batch 4 (2 per replica x 2 replicas)" in stderr
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{STEPS}")
    scratch = model_dir / ".worker_scratch"
    assert not scratch.exists() or not any(scratch.iterdir())
