"""What a compiled caloforge YAML records, read back before a submission (no kfp import).

`caloforge compile` writes the target (vertex | kubeflow), the caloforge version and the whole
hardware profile into the pipeline's description (`COMPILED_MARK {json}`), where the Vertex AI
and Kubeflow UIs show it too. `submit` refuses a YAML compiled for the other backend, and checks
a run's parameter values against the hardware the YAML was compiled for.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

COMPILED_MARK = "caloforge-compiled:"


def mark_text(target: str, version: str, hardware: Mapping[str, Any]) -> str:
    return f"{COMPILED_MARK} {json.dumps({'target': target, 'version': version, 'hardware': dict(hardware)}, sort_keys=True)}"


def compiled_mark(description: str) -> dict | None:
    """The target, caloforge version and hardware profile a description records (None: not ours)."""
    match = re.search(re.escape(COMPILED_MARK) + r" (\{.*\})\s*$", description or "", re.S)
    if not match:
        return None
    return json.loads(match.group(1))


def _load(path: str) -> dict:
    import yaml

    if not os.path.exists(path):
        raise FileNotFoundError(f"compiled pipeline {path!r} not found: run `caloforge compile` first")
    with open(path, encoding="utf-8") as f:
        try:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not a YAML file ({' '.join(str(err).split())[:200]})") from None
    spec = docs[0] if docs and isinstance(docs[0], dict) else {}
    if "pipelineInfo" not in spec:
        raise ValueError(f"{path}: not a compiled KFP pipeline (no pipelineInfo)")
    return spec


def read_compiled(path: str) -> dict:
    """What a compiled YAML records: {"target", "version", "hardware"}.

    Reads every YAML document (a Kubeflow YAML holds a second one, its Kubernetes platform spec).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a KFP pipeline YAML, or one that caloforge did not compile.
    """
    spec = _load(path)
    mark = compiled_mark(spec["pipelineInfo"].get("description", ""))
    if mark is None:
        raise ValueError(f"{path}: compiled without a caloforge target mark; recompile with `caloforge compile`")
    return mark


def check_compiled_target(path: str, backend: str) -> dict:
    """Refuses a YAML compiled for the other backend (`submit vertex` of a Kubeflow YAML, ...).

    Returns:
        The YAML's mark (target, version, hardware).

    Raises:
        ValueError: one line naming the file, the target it was compiled for and the fix.
    """
    mark = read_compiled(path)
    if mark.get("target") != backend:
        profile = mark.get("hardware", {}).get("name", "?")
        raise ValueError(f"{path} was compiled for {mark.get('target')!r}, not {backend!r}: recompile with "
                         f"`caloforge compile --hardware {profile} --target {backend}`")
    return mark


def compiled_defaults(path: str) -> dict[str, Any]:
    """The pipeline parameters' default values baked into a compiled YAML."""
    params = _load(path).get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: p["defaultValue"] for name, p in params.items() if "defaultValue" in p}


def check_submission(path: str, backend: str, values: Mapping[str, Any]) -> dict:
    """Before a submission: the YAML's target is `backend`, and the run's parameter values (over
    the YAML's defaults) suit the hardware it was compiled for (pipelines.hardware.check_params).

    Returns:
        The YAML's mark.

    Raises:
        ValueError: one line naming the file or the parameter and what to do.
    """
    from pipelines.hardware import HardwareProfile, check_params, resolve

    mark = check_compiled_target(path, backend)
    resolved = resolve(HardwareProfile.from_dict(mark["hardware"]), backend)
    check_params(resolved, {**compiled_defaults(path), **values})
    return mark
