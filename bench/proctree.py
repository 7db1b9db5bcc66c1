"""Peak memory of a process and all its descendants, sampled from /proc (Linux).

Beam's local runner starts its workers as child processes, so the driver's own peak RSS
(`resource.getrusage`) misses most of a conversion's memory; this samples the whole tree.
psutil is not a dependency of the project; /proc gives the same figures on Linux.
"""

from __future__ import annotations

import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after "pid (comm)": [0] state, [1] ppid, [21] rss in pages."""
    with open(f"/proc/{pid}/stat") as fh:
        text = fh.read()
    return text[text.rfind(")") + 2:].split()


def descendants(root: int) -> list[int]:
    """`root` and every process below it, from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):  # the process ended while we looked
                continue
    tree = [root]
    for pid in tree:
        tree.extend(children.get(pid, []))
    return tree


def tree_rss_bytes(root: int) -> tuple[int, int]:
    """(sum of the resident set sizes of `root` and its descendants, that of `root` alone) now."""
    total = own = 0
    for pid in descendants(root):
        try:
            rss = int(_stat_fields(pid)[21]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
        total += rss
        own = rss if pid == root else own
    return total, own


class TreeSampler:
    """Context manager: the largest RSS sum of a process tree seen, sampled every interval_s.

    Attributes (after the block): peak_rss_bytes (the tree's), root_peak_rss_bytes (the root
    process's own, e.g. Beam's driver), samples.
    """

    def __init__(self, interval_s: float = 0.1, root: int | None = None):
        self.interval_s = interval_s
        self.root = os.getpid() if root is None else root
        self.peak_rss_bytes = 0
        self.root_peak_rss_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total, own = tree_rss_bytes(self.root)
            self.peak_rss_bytes = max(self.peak_rss_bytes, total)
            self.root_peak_rss_bytes = max(self.root_peak_rss_bytes, own)
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


if __name__ == "__main__":  # a quick look: python bench/proctree.py
    with TreeSampler() as sampler:
        time.sleep(0.3)
    print(f"peak RSS {sampler.peak_rss_bytes / 1e6:.0f} MB over {sampler.samples} samples")
