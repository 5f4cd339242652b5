"""bin/train_detector killed with SIGKILL mid-run, then started again with the same command.

Faults are injected for real: the process is killed without warning after its first checkpoint, while it is
training past it. The restarted run must resume from the last checkpoint that
was complete at the kill, reach the same final step, and lose at most the
steps since that checkpoint (measured from the `step N:` log lines, one per
step, against the `Resumed from <path> at step N` line of the restart).
"""

import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT

# Slow tier (a killed training process): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow

STEPS = 12
CHECKPOINT_EVERY = 4
# The smallest detector that trains (what is learnt does not matter here); a step is
# logged each step so that the step of the kill is known.
FLAGS = [
    "--dataset=deeplesion/pacs", "--split=train[:4]", "--batch_size=4", "--image_size=128",
    "--box_padding_px=4", "--width_multiplier=0.0625", "--fc_units=64",
    "--anchor_sizes=12,18,24,32", "--train_pre_nms_top_k=600", "--train_post_nms_top_k=128",
    "--test_pre_nms_top_k=600", "--test_post_nms_top_k=64", "--rpn_num_samples=64",
    "--optimizer=adam", "--learning_rate=0.001", "--weight_decay=0", "--deterministic",
    "--cache", "--seed=1", f"--steps={STEPS}", f"--checkpoint_every={CHECKPOINT_EVERY}",
    "--log_every=1"]
STEP_LINE = re.compile(r"\] step (\d+): ")


def _start(data_dir, model_dir, log_path, extra=(), env=None):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "bin" / "train_detector"), f"--data_dir={data_dir}",
         f"--model_dir={model_dir}", *FLAGS, *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    return process


def _logged_steps(log_path):
    return [int(m.group(1)) for m in STEP_LINE.finditer(log_path.read_text())]


def _kill_after_first_checkpoint(process, model_dir, log_path, timeout=300):
    """SIGKILLs `process` once a checkpoint is complete and a step past it is logged.

    Returns `(killed_at, checkpointed)`: the last step logged before the kill and
    the step of the latest complete checkpoint at that moment.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, log_path.read_text()[-4000:]
        latest = tf.train.latest_checkpoint(str(model_dir))
        logged = _logged_steps(log_path)
        if latest and logged and logged[-1] > int(latest.rsplit("-", 1)[1]):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("no checkpoint in time:\n" + log_path.read_text()[-4000:])
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    # What was complete when the process died (a save cut short is not listed).
    checkpointed = int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])
    return _logged_steps(log_path)[-1], checkpointed


def _resumed_at(log_path, model_dir):
    match = re.search(rf"Resumed from {re.escape(str(model_dir))}/ckpt-(\d+) at step (\d+)",
                      log_path.read_text())
    assert match, log_path.read_text()[-4000:]
    assert match.group(1) == match.group(2)
    return int(match.group(2))


def test_killed_run_resumes_from_its_last_checkpoint(dummy_pacs_data_dir, tmp_path):
    model_dir = tmp_path / "model"
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    process = _start(dummy_pacs_data_dir, model_dir, first)
    try:
        killed_at, checkpointed = _kill_after_first_checkpoint(process, model_dir, first)
    finally:
        process.kill()
    assert CHECKPOINT_EVERY <= killed_at < STEPS, killed_at
    restarted = _start(dummy_pacs_data_dir, model_dir, second)
    assert restarted.wait(timeout=600) == 0, second.read_text()[-4000:]
    resumed = _resumed_at(second, model_dir)
    assert resumed == checkpointed
    # Lost: the steps after the last checkpoint, never more.
    assert 0 <= killed_at - resumed < CHECKPOINT_EVERY, (killed_at, resumed)
    steps = _logged_steps(second)
    assert steps == list(range(resumed + 1, STEPS + 1))
    assert f"Done at step {STEPS}: " in second.read_text()
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{STEPS}")
    print(f"single worker: killed at step {killed_at}, resumed at {resumed}, "
          f"lost {killed_at - resumed} steps")

