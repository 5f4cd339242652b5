"""A two-worker `--strategy=multi_worker` run with one worker killed by SIGKILL mid-run.

The survivor must notice its dead peer and exit (MultiWorkerMirroredStrategy
aborts its collectives when a peer's connection drops; no timeout needed), and
both workers started again with the same command resume from the chief's last
complete checkpoint and finish, having lost at most the steps since it. Here
the non-chief worker dies; `test_faults_multi_worker_chief.py` kills the chief
(which also hosts the coordination service). `tests/test_faults_training.py`
has the single-process case and the measures.
"""

import json
import os
import signal
import time

import pytest
import tensorflow as tf

from tests.test_faults_training import CHECKPOINT_EVERY, STEPS, _logged_steps, _resumed_at, _start
from tests.test_multi_worker import _free_ports

# Slow tier (a cluster of training processes): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow


def _cluster_env(workers, index):
    return dict(os.environ, TF_CONFIG=json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))


def _start_cluster(data_dir, model_dir, logs, workers):
    # After the single-process flags: one batch of 2 per worker from the whole split.
    extra = ["--strategy=multi_worker", "--split=train", "--batch_size=2"]
    return [_start(data_dir, model_dir, log, extra, _cluster_env(workers, index))
            for index, log in enumerate(logs)]


def test_cluster_with_a_killed_worker_resumes_from_its_last_checkpoint(dummy_pacs_data_dir,
                                                                     tmp_path):
    kill_and_resume(dummy_pacs_data_dir, tmp_path, killed=1)


def kill_and_resume(dummy_pacs_data_dir, tmp_path, killed):
    """Kills worker `killed` (0: the chief) after a checkpoint, then restarts both."""
    model_dir = tmp_path / "model"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    first = [tmp_path / f"first_{i}.log" for i in range(2)]
    processes = _start_cluster(dummy_pacs_data_dir, model_dir, first, workers)
    try:
        # The chief (worker 0) logs the steps and writes the checkpoints.
        victim, survivor = processes[killed], processes[1 - killed]
        deadline = time.time() + 300
        while time.time() < deadline:
            latest = tf.train.latest_checkpoint(str(model_dir))
            logged = _logged_steps(first[0])
            if latest and logged and logged[-1] > int(latest.rsplit("-", 1)[1]):
                break
            assert all(p.poll() is None for p in processes), first[0].read_text()[-4000:]
            time.sleep(0.05)
        else:
            raise AssertionError("no checkpoint in time:\n" + first[0].read_text()[-4000:])
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
        killed_time = time.time()
        # The survivor must notice its dead peer and exit, not hang.
        survivor.wait(timeout=180)
        survivor_exit_s = time.time() - killed_time
        killed_at = _logged_steps(first[0])[-1]
        checkpointed = int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])
    finally:
        for process in processes:
            process.kill()
    assert victim.returncode == -signal.SIGKILL
    assert survivor.returncode != 0, first[1 - killed].read_text()[-4000:]
    assert "Collective ops is aborted" in first[1 - killed].read_text()
    second = [tmp_path / f"second_{i}.log" for i in range(2)]
    processes = _start_cluster(dummy_pacs_data_dir, model_dir, second, workers)
    try:
        for index, process in enumerate(processes):
            assert process.wait(timeout=600) == 0, second[index].read_text()[-4000:]
    finally:
        for process in processes:
            process.kill()
    resumed = _resumed_at(second[0], model_dir)
    assert _resumed_at(second[1], model_dir) == resumed == checkpointed
    assert 0 <= killed_at - resumed < CHECKPOINT_EVERY, (killed_at, resumed)
    assert _logged_steps(second[0]) == list(range(resumed + 1, STEPS + 1))
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{STEPS}")
    scratch = model_dir / ".worker_scratch"
    assert not scratch.exists() or not any(scratch.iterdir())
    print(f"two workers: worker {killed} killed at step {killed_at}, the survivor exited "
          f"{survivor_exit_s:.0f} s later, resumed at {resumed}, lost {killed_at - resumed} steps")
