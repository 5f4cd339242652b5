"""Shared test fixtures."""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: spawns processes, trains or searches long; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    """The project's `shared/` folder, beside the checkout (CI lays a copy there)."""
    path = pathlib.Path(os.environ.get("DEEPLESION_SHARED_DIR", REPO_ROOT.parent / "shared"))
    if not (path / "data" / "deeplesion_release_metadata").is_dir():
        pytest.fail(f"shared data not found at {path}; set DEEPLESION_SHARED_DIR to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def release_subset_csv(shared_dir) -> pathlib.Path:
    """851 real rows of the NIH release's DL_info.csv."""
    return shared_dir / "data" / "deeplesion_release_metadata" / "DL_info_subset.csv"


@pytest.fixture(scope="session")
def dummy_pacs_builder(tmp_path_factory):
    """dummy_data's PACS built once per session with the `pacs` config (64 x 64 slices)."""
    from tests import tfds_helpers

    return tfds_helpers.build_dummy_pacs(tmp_path_factory)


@pytest.fixture(scope="session")
def dummy_pacs_data_dir(tmp_path_factory) -> pathlib.Path:
    """A TFDS data dir holding `deeplesion/pacs` built from dummy_data (for the binaries)."""
    from tests import tfds_helpers
    from tfds_deeplesion.deeplesion import dummy_data_generation

    data_dir = tmp_path_factory.mktemp("pacs_tfds")
    tfds_helpers.build("pacs", data_dir, manual_dir=dummy_data_generation.DUMMY_DIR)
    return data_dir
