"""One check shared by every config's from_dict: reject keys the dataclass does not have.

Configs are always strict. The manifest is strict for its own format version and tolerates the
unknown keys of a newer minor version (data_prep.manifest.Manifest.from_dict), so it asks for
the unknown keys with `unknown_keys` and decides itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def unknown_keys(cls: type, data: Mapping[str, Any]) -> list[str]:
    """The keys of `data` that are not fields of the dataclass `cls`, sorted."""
    known = {f.name for f in dataclasses.fields(cls)}
    return sorted(set(data) - known)


def reject_unknown_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Raises ValueError naming the unknown keys and the valid ones.

    A typo in a stored config or a newer file format must fail loudly rather than fall back
    to a default silently; every stage's config (and a manifest of this caloforge's own format
    version) calls this one check.

    Args:
        cls: the dataclass whose fields are the valid keys.
        data: the keys to check.
        what: the name used in the message, e.g. "TrainConfig" or "manifest".
    """
    unknown = unknown_keys(cls, data)
    if unknown:
        known = sorted(f.name for f in dataclasses.fields(cls))
        raise ValueError(f"{what}: unknown keys {unknown}; known {known}")
