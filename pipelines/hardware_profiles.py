"""Named hardware profiles: the built-in ones and a user's --hardware-file.

A --hardware-file is YAML (JSON is YAML too) mapping names to HardwareProfile fields:

    profiles:
      t4x4-spot:
        accelerator: gpu
        gpu_type: nvidia-tesla-t4
        count: 4
        spot: true
        training: {global_batch_size: 256, epochs: 80}

Its names may shadow a built-in one (the file wins).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from pipelines.hardware import TARGETS, TRAINING_EXTRA_KEYS, HardwareProfile, ResolvedHardware, describe_resolved, resolve

_BUILTIN: tuple[HardwareProfile, ...] = (
    HardwareProfile("cpu", "cpu", description="CPU only: the embedded demo's settings"),
    HardwareProfile("gpu-t4-1", "gpu", 1, "nvidia-tesla-t4", retries=2, description="1 x T4 on n1-standard-8"),
    HardwareProfile("gpu-l4-1", "gpu", 1, "nvidia-l4", retries=2, description="1 x L4 on g2-standard-8"),
    HardwareProfile("gpu-l4-4", "gpu", 4, "nvidia-l4", retries=2, description="4 x L4 on g2-standard-48"),
    HardwareProfile("gpu-a100-1", "gpu", 1, "nvidia-tesla-a100", retries=2, description="1 x A100 40 GB"),
    HardwareProfile("gpu-a100-8", "gpu", 8, "nvidia-tesla-a100", retries=2, description="8 x A100 40 GB"),
    HardwareProfile("gpu-a100-80gb-8", "gpu", 8, "nvidia-a100-80gb", retries=2, description="8 x A100 80 GB"),
    HardwareProfile("gpu-h100-8", "gpu", 8, "nvidia-h100-80gb", retries=2, description="8 x H100 80 GB"),
    HardwareProfile("gpu-a100-8x4", "gpu", 8, "nvidia-tesla-a100", workers=4, retries=2,
                    restart_job_on_worker_restart=True, description="4 machines of 8 x A100 (32 replicas)"),
    HardwareProfile("gpu-h100-8x2", "gpu", 8, "nvidia-h100-80gb", workers=2, retries=2,
                    restart_job_on_worker_restart=True, description="2 machines of 8 x H100 (16 replicas)"),
    HardwareProfile("tpu-v3-8", "tpu", tpu_version="v3", tpu_topology="2x2", retries=2,
                    description="TPU v3-8: 4 chips, 8 cores, one host"),
    HardwareProfile("tpu-v4-8", "tpu", tpu_version="v4", tpu_topology="2x2x1", retries=2,
                    description="TPU v4-8: 4 chips, one host"),
    HardwareProfile("tpu-v5e-8", "tpu", tpu_version="v5e", tpu_topology="2x4", retries=2,
                    description="TPU v5e: 8 chips, one host"),
    HardwareProfile("tpu-v5e-16", "tpu", tpu_version="v5e", tpu_topology="4x4", retries=2,
                    description="TPU v5e: 16 chips on 4 hosts (multi-host)"),
)
BUILTIN_PROFILES: dict[str, HardwareProfile] = {p.name: p for p in _BUILTIN}
DEFAULT_PROFILE = "cpu"


def load_hardware_file(path: str) -> dict[str, HardwareProfile]:
    """The profiles of a YAML file `profiles: {NAME: {field: value}}`, each checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, no `profiles` mapping, or a bad profile (named with the file).
    """
    import yaml

    if not os.path.exists(path):
        raise FileNotFoundError(f"--hardware-file {path}: no such file")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ValueError(f"--hardware-file {path}: not valid YAML{where}: "
                             f"{getattr(err, 'problem', None) or err}") from None
    profiles = data.get("profiles") if isinstance(data, Mapping) else None
    if not isinstance(profiles, Mapping) or not profiles:
        raise ValueError(f"--hardware-file {path}: expected `profiles: {{NAME: {{accelerator: ..., ...}}}}` "
                         "at the top")
    out = {}
    for name, entry in profiles.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"--hardware-file {path}: profile {name!r} must be a mapping of fields")
        try:
            out[str(name)] = HardwareProfile.from_dict(entry, name=str(name))
        except (TypeError, ValueError) as err:
            raise ValueError(f"--hardware-file {path}: {err}") from None
    return out


def get_profile(name: str | None, hardware_file: str | None = None) -> HardwareProfile:
    """The profile called `name`: from the file if given (the file's only one when name is None),
    else a built-in one.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    available: dict[str, HardwareProfile] = dict(BUILTIN_PROFILES)
    if hardware_file:
        from_file = load_hardware_file(hardware_file)
        if name is None:
            if len(from_file) != 1:
                raise ValueError(f"--hardware-file {hardware_file} holds {len(from_file)} profiles "
                                 f"({', '.join(from_file)}); choose one with --hardware NAME")
            return next(iter(from_file.values()))
        available.update(from_file)
    name = name or DEFAULT_PROFILE
    if name not in available:
        raise ValueError(f"--hardware {name!r} is not a profile; valid: {', '.join(available)} "
                         "(or --hardware-file F with your own)")
    return available[name]


def profile_table(profiles: Mapping[str, HardwareProfile] | None = None) -> list[dict[str, Any]]:
    """One row per profile and target: what each asks of Vertex AI and GKE, and its training settings."""
    rows = []
    for profile in (profiles or BUILTIN_PROFILES).values():
        row: dict[str, Any] = {}
        for target in TARGETS:
            try:
                resolved = resolve(profile, target)
            except ValueError as err:
                row.setdefault("unavailable", {})[target] = str(err)
                continue
            summary = describe_resolved(resolved)
            row.update({k: v for k, v in summary.items() if k not in row})
            row["settings"] = {k: v for k, (v, _) in resolved.settings.items()}
        row["name"] = profile.name
        row["description"] = profile.description
        rows.append(row)
    return rows


def profile_table_text(profiles: Mapping[str, HardwareProfile] | None = None) -> str:
    """`caloforge hardware list`: a fixed-width table, then each profile's training settings."""
    rows = profile_table(profiles)
    columns = [("NAME", "name"), ("MACHINE", "machine"), ("VERTEX", "vertex_machine"),
               ("ACCELERATOR", "vertex_accelerator"), ("GKE LABEL", "gke_label"), ("PER POD", "gke_per_pod"),
               ("TOPOLOGY", "tpu_topology"), ("WORKERS", "workers"), ("REPLICAS", "replicas")]
    cells = [[str(row.get(key, "")) for _, key in columns] for row in rows]
    widths = [max(len(title), *(len(c[i]) for c in cells)) for i, (title, _) in enumerate(columns)]
    lines = ["  ".join(t.ljust(w) for (t, _), w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells]
    lines.append("")
    lines.append("training settings each profile makes the DAG's defaults (--param wins):")
    for row in rows:
        settings = ", ".join(f"{k}={v}" for k, v in row.get("settings", {}).items()) or "the embedded demo's"
        lines.append(f"  {row['name']}: {settings}")
        for target, why in row.get("unavailable", {}).items():
            lines.append(f"    not on {target}: {why}")
    return "\n".join(lines)


def profile_defaults(resolved: ResolvedHardware):
    """The DAG's parameter defaults under a profile: the embedded demo, then the profile's
    training settings (a user's --param goes on top).

    Raises:
        ValueError: a training entry that is not a pipeline parameter or not a valid value.
    """
    from dataclasses import fields as dataclass_fields

    from pipelines.config import EMBEDDED_DEMO, PipelineParams

    name = resolved.profile.name
    valid = [f.name for f in dataclass_fields(PipelineParams)]
    unknown = sorted(set(resolved.settings) - set(valid))
    if unknown:
        raise ValueError(f"hardware profile {name!r}: training keys {unknown} are not pipeline parameters; valid: "
                         f"{', '.join([*valid, *TRAINING_EXTRA_KEYS])}")
    try:
        return PipelineParams.layered(EMBEDDED_DEMO, resolved.settings)
    except ValueError as err:
        raise ValueError(f"hardware profile {name!r}: training: {err}") from None
