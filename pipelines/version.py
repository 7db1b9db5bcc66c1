"""caloforge's version and the report `caloforge --version` prints.

The report reads installed package metadata only: it imports none of the libraries it names, so
it answers at once.
"""

from __future__ import annotations

from data_prep.provenance import KEY_DISTRIBUTIONS, REPO_ROOT, git_commit, library_versions  # noqa: F401  (moved)

VERSION = "0.1.0"


def version_report() -> str:
    """`caloforge 0.1.0 (git abc1234)` then one `name version` line per key library."""
    commit = git_commit()
    head = f"caloforge {VERSION}" + (f" (git {commit})" if commit else "")
    return "\n".join([head, *(f"  {name} {version}" for name, version in library_versions().items())])
