"""A two-worker run whose chief (worker 0: checkpoints, coordination service) is SIGKILLed.

The same recovery as `test_faults_multi_worker.py`, which kills the other worker:
the survivor exits within seconds, and the restarted pair resumes from the
chief's last complete checkpoint and finishes.
"""

import pytest

from tests.test_faults_multi_worker import kill_and_resume

# Slow tier (a cluster of training processes): deselect with -m 'not slow'.
pytestmark = pytest.mark.slow


def test_cluster_with_a_killed_chief_resumes_from_its_last_checkpoint(dummy_pacs_data_dir,
                                                                    tmp_path):
    kill_and_resume(dummy_pacs_data_dir, tmp_path, killed=0)
