"""Beam's local worker processes end with the driver, even when the driver is killed with -9.

How Beam 2.77 starts them: the FnApiRunner in multi_processing mode runs each SDK worker as
`subprocess.Popen("<python> -m apache_beam.runners.worker.sdk_worker_main", shell=True)` from a
thread of the driver (local_job_service.SubprocessSdkWorker), with no preexec hook. /bin/sh
(dash) forks the Python worker instead of exec'ing it, so the worker's parent is the shell,
which outlives the driver: a parent-death signal or a parent-pid watch in the worker would
follow the shell. Left alone, an orphaned worker notices the lost driver only when its gRPC
channels give up, a minute or more later.

Two guards, each covering what the other cannot:

* In the worker: Beam imports the modules named in the `beam_plugins` pipeline option when an
  SDK worker starts. The FnApiRunner hands its workers only the options in its provision info,
  so `guarded_runner()` builds one with `beam_plugins = [this module]`. Imported in a worker,
  this module starts a thread that exits the process within half a second once the driver
  (pid and start time, from the environment the workers inherit) is gone. This needs no other
  process, but it starts late: Beam first waits up to 60 s for the driver's logging service.
* Beside the driver: `guard_workers()` starts a small watcher process (this module run as a
  script) for the duration of the job. When the driver disappears it kills, with SIGKILL, every
  process whose environment carries this driver's marker: the workers and their shells, at any
  stage of their start-up. The watcher itself does not carry the marker.

The shell between driver and worker ends as soon as its worker does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator, Sequence

from data_prep import processes

_LOG = logging.getLogger(__name__)

DRIVER_ENV = "CALOFORGE_BEAM_DRIVER"  # "<pid>:<start ticks>" of the driver, inherited by workers
PLUGIN = "data_prep.worker_guard"
_POLL_S = 0.5  # worker-side check interval
_WATCH_S = 0.2  # watcher check interval
_EXIT_CODE = 70  # what a worker exits with when its driver has gone
_LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "direct", "BundleBasedDirectRunner")


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        elif arg == flag and i + 1 < len(args):
            value = args[i + 1]
    return value


def _starts_worker_processes(args: Sequence[str]) -> bool:
    runner = (_flag_value(args, "--runner") or "").rsplit(".", 1)[-1]
    return runner in _LOCAL_RUNNERS and _flag_value(args, "--direct_running_mode") == "multi_processing"


def _marker() -> str:
    ticks = processes.start_ticks(os.getpid())
    return f"{os.getpid()}:{'' if ticks is None else ticks}"


@contextlib.contextmanager
def guard_workers(pipeline_args: Sequence[str]) -> Iterator[None]:
    """While the job runs: mark this process as the driver in the environment its workers
    inherit and, if the runner starts local worker processes, keep a watcher beside it."""
    previous = os.environ.get(DRIVER_ENV)
    marker = _marker()
    watcher = _start_watcher(marker) if _starts_worker_processes(pipeline_args) else None
    os.environ[DRIVER_ENV] = marker
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DRIVER_ENV, None)
        else:
            os.environ[DRIVER_ENV] = previous
        if watcher is not None:
            watcher.terminate()  # the driver is alive and done: nothing to reap
            try:
                watcher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                watcher.kill()
                watcher.wait()


def _start_watcher(marker: str) -> subprocess.Popen | None:
    env = {k: v for k, v in os.environ.items() if k != DRIVER_ENV}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.Popen([sys.executable, "-m", PLUGIN, marker], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL)
    except OSError as exc:  # the in-worker guard still applies
        _LOG.warning("could not start the worker watcher (%s); workers may outlive a killed driver", exc)
        return None


def guarded_runner(pipeline_args: Sequence[str]):
    """A FnApiRunner whose SDK worker processes import this module at start, or None.

    Only for `--runner=FnApiRunner` (what convert uses by default): Beam builds other runners
    itself from the flags.
    """
    runner = _flag_value(pipeline_args, "--runner")
    if runner is None or runner.rsplit(".", 1)[-1] != "FnApiRunner":
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner.fn_runner import ExtendedProvisionInfo, FnApiRunner
    from google.protobuf import struct_pb2

    options = struct_pb2.Struct()
    options.update({"beam_plugins": [PLUGIN]})
    info = beam_provision_api_pb2.ProvisionInfo(retrieval_token="unused-retrieval-token", pipeline_options=options)
    return FnApiRunner(provision_info=ExtendedProvisionInfo(info))


def _parse_marker(value: str) -> tuple[int, int | None] | None:
    pid_text, _, ticks_text = value.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    return pid, (int(ticks_text) if ticks_text.isdigit() else None)


# ----------------------------------------------------------------------------------------------
# In a worker process


def _watch_driver(driver_pid: int, driver_ticks: int | None) -> None:
    while processes.is_alive(driver_pid, driver_ticks):
        time.sleep(_POLL_S)
    os._exit(_EXIT_CODE)  # no cleanup: there is no one left to report to


def install() -> bool:
    """Start the driver watch in a worker process; True if started.

    Does nothing in the driver itself or in a process not started by a guarded driver.
    """
    driver = _parse_marker(os.environ.get(DRIVER_ENV, ""))
    if driver is None or driver[0] == os.getpid():
        return False
    threading.Thread(target=_watch_driver, args=driver, name="caloforge-driver-watch", daemon=True).start()
    return True


# ----------------------------------------------------------------------------------------------
# The watcher process beside the driver


def marked_processes(marker: str) -> list[int]:
    """Processes (Linux /proc) whose environment holds DRIVER_ENV=marker."""
    needle = f"{DRIVER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours to read
            continue
    return found


def watch(marker: str) -> int:
    """Wait for the driver named by `marker` to disappear, then SIGKILL its marked processes.

    Returns the number of processes killed. SIGINT is ignored: a Ctrl-C in the terminal is the
    driver's to handle; the driver dismisses the watcher with SIGTERM when the job is over.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver = _parse_marker(marker)
    if driver is None:
        return 0
    while processes.is_alive(*driver):
        time.sleep(_WATCH_S)
    killed = 0
    for _ in range(10):  # a shell may be forking its worker right now: look again
        victims = [pid for pid in marked_processes(marker) if processes.is_alive(pid)]
        if not victims:
            break
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(_WATCH_S)
    if killed:
        print(f"caloforge: driver {driver[0]} has gone; stopped {killed} Beam worker processes", file=sys.stderr)
    return killed


if __name__ == "__main__":
    watch(sys.argv[1])
else:
    install()
