"""The lock file a conversion keeps in its output folder while it runs.

It does two jobs. It keeps a second conversion out of the same output (the second one fails at
once and names the first: pid, host, start). And it tells the next run what a dead run left
behind: the staging folder it wrote into and, once publishing began, every output file it was
replacing or adding. Those are the project's own files, so the next run may clean them up
without --overwrite; nothing else in the folder is touched.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

from data_prep import processes
from data_prep import uri as uri_lib

LOCK_NAME = "_caloforge.lock"


@dataclass
class OutputLock:
    """Who holds an output folder, and what they may leave behind.

    Attributes:
        pid: The driver's process id.
        host: The driver's host name.
        started_utc: When the run took the lock (ISO 8601, for people).
        started_unix: The same as seconds since the epoch (for the age of a lock).
        staging: Name of the run's staging folder inside the output.
        token: Random id of this run: tells our lock from a later one under the same name.
        process_start: The driver's start time in clock ticks (Linux /proc), so a reused pid
            is not mistaken for the driver; None where unknown.
        publishing: Output files (names relative to the output) this run is deleting or
            creating while it publishes; empty until publishing starts.
    """

    pid: int
    host: str
    started_utc: str
    started_unix: float
    staging: str
    token: str
    process_start: int | None = None
    publishing: list[str] = field(default_factory=list)

    @classmethod
    def for_this_process(cls, staging: str) -> "OutputLock":
        now = time.time()
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_utc=datetime.datetime.fromtimestamp(now, datetime.timezone.utc).isoformat(timespec="seconds"),
            started_unix=now,
            staging=staging,
            token=uuid.uuid4().hex,
            process_start=processes.start_ticks(os.getpid()),
        )

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started_utc}"

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> "OutputLock":
        """Raises ValueError when the content is not a lock of this schema."""
        try:
            values = json.loads(data.decode("utf-8"))
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in values.items() if k in names})
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a caloforge lock file: {exc}") from exc


def lock_uri(output: str) -> str:
    return uri_lib.join(output, LOCK_NAME)


def read_lock(output: str) -> tuple[OutputLock | None, bytes | None]:
    """(lock, raw bytes) of the output's lock file; (None, None) when there is none, and
    (None, raw) when the file exists but cannot be read as a lock."""
    try:
        raw = uri_lib.read_bytes(lock_uri(output))
    except FileNotFoundError:
        return None, None
    try:
        return OutputLock.from_bytes(raw), raw
    except ValueError:
        return None, raw


def stale_reason(lock: OutputLock, stale_after_s: float, overwrite: bool, now: float | None = None) -> str | None:
    """Why the lock belongs to a run that is no longer working, or None while it may be.

    On this host the answer is exact: the pid is gone (or is another process now). For a lock
    from another host we cannot look at its processes: it counts as stale once older than
    `stale_after_s`, or when the user asked to --overwrite the output.
    """
    now = time.time() if now is None else now
    if lock.host == socket.gethostname():
        if processes.is_alive(lock.pid, lock.process_start):
            return None
        return f"its process {lock.pid} on this host has ended"
    age = now - float(lock.started_unix)
    if age > stale_after_s:
        return f"it is {age / 3600:.1f} h old (older than {stale_after_s / 3600:.1f} h)"
    if overwrite:
        return "--overwrite was given"
    return None


def acquire(output: str, lock: OutputLock) -> None:
    """Create the lock file, exclusively.

    Raises:
        FileExistsError: naming the holder when another run created it first.
    """
    try:
        uri_lib.create_exclusive(lock_uri(output), lock.to_bytes())
    except FileExistsError:
        holder, _ = read_lock(output)
        who = holder.describe() if holder else "an unknown run"
        raise FileExistsError(
            f"output {output} is being written by another conversion ({who}); wait for it to finish"
        ) from None


def rewrite(output: str, lock: OutputLock) -> None:
    """Replace our lock's content (e.g. with the list of files being published)."""
    uri_lib.write_bytes(lock_uri(output), lock.to_bytes())


def release(output: str, lock: OutputLock) -> None:
    """Remove the lock file if it is still ours (same token)."""
    current, raw = read_lock(output)
    if current is not None and current.token == lock.token:
        uri_lib.delete_if_unchanged(lock_uri(output), raw)
