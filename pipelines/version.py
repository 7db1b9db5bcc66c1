"""caloforge's version and the report `caloforge --version` prints.

The report reads installed package metadata only: it imports none of the libraries it names, so
it answers at once.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

VERSION = "0.1.0"
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


def version_report() -> str:
    """`caloforge 0.1.0 (git abc1234)` then one `name version` line per key library."""
    commit = git_commit()
    head = f"caloforge {VERSION}" + (f" (git {commit})" if commit else "")
    return "\n".join([head, *(f"  {name} {version}" for name, version in library_versions().items())])
