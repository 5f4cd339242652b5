"""The package's one dependency line, read from its imports (issue 20).

    data -> nets -> (categorize | detection | pretrain) -> (evaluation | serving)

with `ops/` under `detection`, `distribute` (the strategy factory) a base module
any layer may use, and `tfds_deeplesion` (the dataset builder) beside `data`,
reading `data` only; `bin/` and `benchmarks/` sit on top and may import anything.
Every import counts, those inside functions too, and none may be made by string.
"""

import ast
import pathlib

from tests.conftest import REPO_ROOT

# What each part of the package may import (besides itself and `deeplesion_tf`'s __init__).
ALLOWED = {
    "data": set(),
    "distribute": set(),
    "ops": set(),
    "nets": {"data"},
    "categorize": {"data", "nets", "distribute"},
    "detection": {"data", "nets", "ops", "distribute"},
    "pretrain": {"data", "nets", "distribute"},
    "evaluation": {"data", "nets", "ops", "distribute", "categorize", "detection"},
    "serving": {"data", "nets", "ops", "distribute", "categorize", "detection"},
    "tfds_deeplesion": {"data"},
}
_IMPORT_BY_STRING = {"import_module", "__import__"}


def _part(module: str):
    """`deeplesion_tf.detection.rpn_head` -> "detection"; None outside the project."""
    parts = module.split(".")
    if parts[0] == "tfds_deeplesion":
        return "tfds_deeplesion"
    if parts[0] != "deeplesion_tf":
        return None
    return parts[1] if len(parts) > 1 else "deeplesion_tf"


def violations(root: pathlib.Path):
    """`["path:line: a -> b", ...]` for every import against `ALLOWED` under `root`."""
    found = []
    for package in ("deeplesion_tf", "tfds_deeplesion"):
        for path in sorted((root / package).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            source = _part(module)
            if source == "deeplesion_tf":  # __init__.py
                source = "data"
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                targets = []
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                               if node.module == "deeplesion_tf"]
                elif isinstance(node, ast.Call):
                    name = getattr(node.func, "attr", getattr(node.func, "id", None))
                    if name in _IMPORT_BY_STRING and node.args and isinstance(
                            node.args[0], ast.Constant) and _part(str(node.args[0].value)):
                        found.append(f"{path.relative_to(root)}:{node.lineno}: imports "
                                     f"{node.args[0].value!r} by string")
                for target in targets:
                    part = _part(target)
                    if part in (None, source, "deeplesion_tf"):
                        continue
                    if part not in ALLOWED.get(source, set()):
                        found.append(f"{path.relative_to(root)}:{node.lineno}: "
                                     f"{source} -> {part} ({target})")
    return found


def test_the_package_follows_the_dependency_line():
    assert violations(REPO_ROOT) == []


def test_the_check_sees_arrows_against_the_line_and_imports_by_string(tmp_path):
    for package, text in {
            "deeplesion_tf/__init__.py": "",
            "deeplesion_tf/detection/__init__.py": "",
            "deeplesion_tf/detection/classes.py": (
                "from deeplesion_tf.categorize import outputs\n"
                "def f():\n    from deeplesion_tf.evaluation import records\n"),
            "deeplesion_tf/evaluation/groundtruth.py": (
                "import importlib\nimportlib.import_module('tfds_deeplesion')\n"
                "from deeplesion_tf.detection import classes\n"),
            "deeplesion_tf/data/reader.py": "from deeplesion_tf import distribute\n",
            "tfds_deeplesion/__init__.py": "from deeplesion_tf.data import reader\n"}.items():
        path = tmp_path / package
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert violations(tmp_path) == [
        "deeplesion_tf/data/reader.py:1: data -> distribute (deeplesion_tf.distribute)",
        "deeplesion_tf/detection/classes.py:1: detection -> categorize "
        "(deeplesion_tf.categorize)",
        "deeplesion_tf/detection/classes.py:3: detection -> evaluation "
        "(deeplesion_tf.evaluation)",
        "deeplesion_tf/evaluation/groundtruth.py:2: imports 'tfds_deeplesion' by string",
    ]
