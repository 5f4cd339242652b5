#!/usr/bin/env python3
"""Regenerates `dummy_data/`: a 6-patient synthetic PACS at 64x64 with the release layout.

`dummy_data/` is the `manual_dir` of the `pacs` and `release` configs in the TFDS
test cases, and the PACS that the `synthetic` config's test case builds from. A
test checks that it equals a fresh generation, so a change to the phantom that
forgets to rerun this script fails loudly:

    python tfds_deeplesion/deeplesion/dummy_data_generation.py
"""

import os
import pathlib
import shutil
import sys

# Seed and size chosen so that every split of both the patient-hash split (pacs,
# synthetic) and the generator's release split has a patient.
DUMMY_SEED = 9
DUMMY_PATIENTS = 6
DUMMY_IMAGE_SIZE = 64
DUMMY_DIR = pathlib.Path(__file__).resolve().parent / "dummy_data"


def generate(output_dir: os.PathLike) -> None:
    from deeplesion_tf.data import synthetic_pacs

    synthetic_pacs.make_synthetic_pacs(output_dir, num_patients=DUMMY_PATIENTS, seed=DUMMY_SEED,
                                       image_size=DUMMY_IMAGE_SIZE, write_release=True,
                                       num_workers=1)


if __name__ == "__main__":
    sys.path.insert(0, str(DUMMY_DIR.parents[2]))
    shutil.rmtree(DUMMY_DIR, ignore_errors=True)
    generate(DUMMY_DIR)
