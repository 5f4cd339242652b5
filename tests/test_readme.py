"""The README's two set-up commands are the ones that CI and users run."""

import re

from tests.conftest import REPO_ROOT


def _commands():
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (pip install .+)$", section, flags=re.M)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "bin/quickstart" in main_job
    assert "pytest" in tests
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    # .ci/run adds only pip's -q flag.
    assert tests.replace("pip install -e", "pip install -q -e") in ci
