"""Is a process (pid + start time) still the one we knew? For lock files and worker guards.

A pid alone is not an identity: after a process ends the kernel hands its number to the next
one. On Linux /proc/<pid>/stat also gives the process's start time (clock ticks since boot);
a pid whose start time changed is a different process, and a zombie (killed, not yet reaped by
its parent) is as good as dead.
"""

from __future__ import annotations

import os


def start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (Linux), or None if unknown/absent."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ')': split after
    # the last ')'. The remaining fields start at field 3 (state); starttime is field 22.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            return fh.read().decode("ascii", "replace").rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def is_alive(pid: int, ticks: int | None = None) -> bool:
    """True while `pid` runs and, when `ticks` is given and /proc knows it, started at `ticks`."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except (OverflowError, ValueError):
        return False
    if _is_zombie(pid):
        return False
    if ticks is not None:
        now = start_ticks(pid)
        if now is not None and now != ticks:
            return False
    return True
