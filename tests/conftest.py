"""Test-wide settings: quiet TensorFlow, CPU only, and a stable hash seed for subprocesses."""

import os

import pytest

# Set before any test imports TensorFlow: tests run on CPU whatever the machine has, and the
# C++ log noise would hide pytest's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(autouse=True)
def _not_verbose(monkeypatch):
    """Each test starts without --verbose: `caloforge -v` run in-process exports
    CALOFORGE_VERBOSE=1 for its child processes, which must not reach the next test's."""
    monkeypatch.delenv("CALOFORGE_VERBOSE", raising=False)
