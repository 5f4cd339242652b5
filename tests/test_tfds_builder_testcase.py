"""`tfds.testing.DatasetBuilderTestCase` for each config, on `dummy_data/`.

These count examples per split and check that the dataset reloads; the value
checks live in test_tfds_synthetic.py, test_tfds_release.py and
test_tfds_pacs_bad_input.py.
"""

import filecmp
import os
from unittest import mock

import tensorflow_datasets as tfds

from tfds_deeplesion.deeplesion import deeplesion_dataset_builder as dl_builder
from tfds_deeplesion.deeplesion import dummy_data_generation as dummy


class PacsConfigTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = dl_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["pacs"]
    # Key slices of dummy_data's patients by their salted-hash split.
    SPLITS = {"train": 14, "validation": 2, "test": 3}
    SKIP_CHECKSUMS = True


class ReleaseConfigTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = dl_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["release"]
    # Distinct File_name values of dummy_data/DL_info.csv by Train_Val_Test.
    SPLITS = {"train": 12, "validation": 3, "test": 4}
    SKIP_CHECKSUMS = True


class SyntheticConfigTest(tfds.testing.DatasetBuilderTestCase):
    """The synthetic config with dummy_data's parameters, reading dummy_data as its PACS."""

    DATASET_CLASS = dl_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [dl_builder.DeepLesionConfig(
        name="synthetic_dummy", source="synthetic", synthetic_seed=dummy.DUMMY_SEED,
        synthetic_num_patients=dummy.DUMMY_PATIENTS,
        synthetic_image_size=dummy.DUMMY_IMAGE_SIZE)]
    SPLITS = {"train": 14, "validation": 2, "test": 3}  # the same PACS as PacsConfigTest
    SKIP_CHECKSUMS = True

    def _download_and_prepare_as_dataset(self, builder):
        # The test case points the download dir at dummy_data itself; the PACS that
        # the config would generate there is dummy_data (test_dummy_data_is_current).
        with mock.patch.object(dl_builder.Builder, "_synthetic_pacs",
                               lambda _, download_dir: download_dir):
            super()._download_and_prepare_as_dataset(builder)


def test_dummy_data_is_current(tmp_path):
    """dummy_data/ is exactly what the generator makes with its parameters today."""
    fresh = tmp_path / "fresh"
    dummy.generate(fresh)
    comparison = filecmp.dircmp(fresh, dummy.DUMMY_DIR)

    def differences(cmp, prefix=""):
        found = [os.path.join(prefix, n) for n in cmp.left_only + cmp.right_only + cmp.funny_files]
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files,
                                               shallow=False)
        found += [os.path.join(prefix, n) for n in mismatch + errors]
        for name, sub in cmp.subdirs.items():
            found += differences(sub, os.path.join(prefix, name))
        return found

    assert differences(comparison) == [], (
        "dummy_data/ is stale: run python tfds_deeplesion/deeplesion/dummy_data_generation.py")
