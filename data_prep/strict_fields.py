"""One check shared by every config's from_dict: reject keys the dataclass does not have."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def reject_unknown_keys(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Raises ValueError naming the unknown keys and the valid ones.

    A typo in a stored config or a newer file format must fail loudly rather than fall back
    to a default silently; every stage's config (and the manifest) calls this one check.

    Args:
        cls: the dataclass whose fields are the valid keys.
        data: the keys to check.
        what: the name used in the message, e.g. "TrainConfig" or "manifest".
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; known {sorted(known)}")
