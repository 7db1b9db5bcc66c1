"""Test-wide settings: quiet TensorFlow, CPU only, and a stable hash seed for subprocesses."""

import os

# Set before any test imports TensorFlow: tests run on CPU whatever the machine has, and the
# C++ log noise would hide pytest's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("PYTHONHASHSEED", "0")
