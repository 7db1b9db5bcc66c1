"""Where a result came from: the git commit of the code and the versions of the key libraries.

Read from installed package metadata and git only (no library is imported), so every stage,
`caloforge --version` and the benchmark fingerprint can call it at no cost.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

#: Distributions whose versions decide how a run behaves (absent ones are left out).
KEY_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "libtpu", "keras", "apache-beam", "kfp", "numpy", "h5py", "protobuf")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit(root: str = REPO_ROOT) -> str | None:
    """Short commit of the checkout the code runs from, `+dirty` if tracked files changed; None
    outside a git checkout (an installed wheel) or without git."""
    if not os.path.exists(os.path.join(root, ".git")):  # a folder, or a file in a worktree
        return None
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def library_versions() -> dict[str, str]:
    """Installed versions of KEY_DISTRIBUTIONS (and Python)."""
    out = {"python": platform.python_version()}
    for name in KEY_DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def host_info() -> dict[str, object]:
    """This machine: hostname, platform, CPU model and count, memory (GB); None where unknown."""
    info: dict[str, object] = {"hostname": platform.node(), "platform": platform.platform(),
                               "machine": platform.machine(), "cpu_count": os.cpu_count(),
                               "cpu_model": None, "memory_gb": None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    info["memory_gb"] = round(int(line.split()[1]) / 1024**2, 2)
                    break
    except OSError:
        pass
    return info
