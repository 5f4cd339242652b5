"""Where the `synthetic` config keeps the PACS it generated: one name, version-aware.

`<download_dir>/synthetic_pacs/seed<s>_patients<n>_size<z>_v<version>/`, beside the
TFDS data dir's `downloads/`; `truth.csv` in it holds the planted truth that the
categorizer's and the detector's benchmarks score against, and `dicom/` the DICOM
tree (`synthetic_pacs.dicom_relative_path`) that `bin/pretrain_trunk` reads.
"""

from __future__ import annotations

import os
import re
from typing import Optional, Tuple

import deeplesion_tf

FOLDER = "synthetic_pacs"
_NAME = re.compile(r"^seed(\d+)_patients(\d+)_size(\d+)_v([0-9][0-9A-Za-z.+-]*)$")


def folder_name(seed: int, num_patients: int, image_size: int,
                version: str = deeplesion_tf.__version__) -> str:
    return f"seed{int(seed)}_patients{int(num_patients)}_size{int(image_size)}_v{version}"


def pacs_folder(download_dir: str, seed: int, num_patients: int, image_size: int) -> str:
    """The folder this version of the code generates (and reuses) for a config."""
    return os.path.join(download_dir, FOLDER, folder_name(seed, num_patients, image_size))


def dicom_dir(truth_csv: str) -> str:
    """The DICOM tree of the PACS whose `truth.csv` (from `find_truth_csv`) this is."""
    return os.path.join(os.path.dirname(truth_csv), "dicom")


def _version_key(version: str) -> Tuple:
    # By number, so that v0.10 is newer than v0.9 (a string sort says the opposite).
    return tuple((0, int(part)) if part.isdigit() else (1, part)
                 for part in re.split(r"[.+-]", version))


def find_truth_csv(data_dir: str, seed: Optional[int] = None,
                   num_patients: Optional[int] = None,
                   image_size: Optional[int] = None) -> Optional[str]:
    """`truth.csv` of the newest version's PACS under `<data_dir>/downloads`, if any.

    Args:
      data_dir: a TFDS data dir in which `deeplesion/synthetic` was built.
      seed, num_patients, image_size: the config's; None matches any (the
        first config in name order, then the newest version of it).
    """
    root = os.path.join(data_dir, "downloads", FOLDER)
    found = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        match = _NAME.match(name)
        if not match or not os.path.isfile(os.path.join(root, name, "truth.csv")):
            continue
        config = tuple(int(v) for v in match.groups()[:3])
        wanted = (seed, num_patients, image_size)
        if all(w is None or w == c for w, c in zip(wanted, config)):
            found.append((config, _version_key(match.group(4)), name))
    if not found:
        return None
    first_config = min(f[0] for f in found)
    newest = max((f for f in found if f[0] == first_config), key=lambda f: f[1])
    return os.path.join(root, newest[2], "truth.csv")
