"""Running the project's binaries in a fresh process, as a user does."""

import subprocess
import sys

from tests.conftest import REPO_ROOT


def run(binary, *args, timeout=900):
    """`bin/<binary> args` from the checkout; asserts it exits 0 and returns the result."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bin" / binary), *args],
                            capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result
