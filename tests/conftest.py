"""Shared pytest setup: quiet TensorFlow, seeded randomness, the repo root, policy restore."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same Python, NumPy and Keras random state."""
    keras.utils.set_random_seed(0)


@pytest.fixture
def repo_root() -> pathlib.Path:
    return REPO_ROOT


@pytest.fixture
def restore_dtype_policy():
    """Puts the global dtype policy back after a test that changes it."""
    previous = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(previous)
