"""pytest fixtures: a real gcp-storage-emulator on 127.0.0.1 (subprocess) with STORAGE_EMULATOR_HOST set.

Import the fixtures explicitly in a test module: `from tests.gcs_emulator import gcs_emulator, gcs_bucket`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest

_START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Emulator:
    """A running emulator: its endpoint and process."""

    host: str
    port: int
    process: subprocess.Popen

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"


def start_emulator() -> Emulator:
    """Start `python -m gcp_storage_emulator start` in memory on a free port and wait until it answers.

    A subprocess rather than a thread: Beam's worker processes and this test process then talk to
    a server that no Python GIL in the test can stall.

    Raises:
        RuntimeError: if the emulator exits or does not accept connections within 30 s.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
         "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with {process.returncode}: "
                               f"{process.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Emulator("127.0.0.1", port, process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gcp-storage-emulator did not listen on 127.0.0.1:{port} within {_START_TIMEOUT_S} s")


def stop_emulator(emulator: Emulator) -> None:
    emulator.process.terminate()
    try:
        emulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        emulator.process.kill()
        emulator.process.wait()


@pytest.fixture(scope="module")
def gcs_emulator():
    """A running emulator for the module, with STORAGE_EMULATOR_HOST pointing at it."""
    emulator = start_emulator()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.endpoint
    try:
        yield emulator
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        stop_emulator(emulator)


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """A fresh, empty bucket on the emulator; yields its name."""
    from data_prep import uri

    name = f"caloforge-test-{uuid.uuid4().hex[:10]}"
    uri.storage_client().create_bucket(name)
    yield name
