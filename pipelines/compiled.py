"""What `caloforge compile` records in a YAML about its target and hardware (no kfp import).

Two records (docs/CONTRACTS.md §6), both written from the same compile:
- the root pipeline parameter `compile_target` (TARGET_PARAMETER) with the target as its
  default: what `submit` checks first;
- `caloforge-compiled: {"target", "version", "hardware"}` at the end of the pipeline's description
  (shown in the Vertex AI and Kubeflow UIs): the whole hardware profile, so that `submit` can
  check a run's parameter values against the hardware the YAML asks for.

pipelines.submit loads the YAML and refuses the other backend's; `check_hardware_parameters`
adds the hardware check.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

#: The root pipeline parameter whose default is the target (no step reads it: a record).
TARGET_PARAMETER = "compile_target"
COMPILED_MARK = "caloforge-compiled:"
#: The description record (its JSON object ends the description).
DESCRIPTION_MARK = re.compile(re.escape(COMPILED_MARK) + r" (\{.*\})\s*$", re.S)


def mark_text(target: str, version: str, hardware: Mapping[str, Any], sweep: list | None = None) -> str:
    """The description record of one compile (a sweep records its points' profiles under `sweep`
    and no single `hardware`: its training hardware is each point's)."""
    record = {"target": target, "version": version, "hardware": dict(hardware)}
    if sweep is not None:
        record["sweep"] = sweep
    return f"{COMPILED_MARK} {json.dumps(record, sort_keys=True)}"


def compiled_record(description: str) -> dict | None:
    """The record at the end of a pipeline description; None when there is none (or it is not JSON)."""
    match = DESCRIPTION_MARK.search(description or "")
    if not match:
        return None
    try:
        record = json.loads(match.group(1))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def check_hardware_parameters(spec: Mapping[str, Any], backend: str, values: Mapping[str, Any]) -> None:
    """Checks a run's parameter values (over the YAML's defaults) against the hardware the YAML
    records (pipelines.hardware.check_params); a YAML without a hardware record is not checked.

    Args:
        spec: the compiled pipeline spec (pipelines.submit.CompiledPipeline.spec).
        backend: vertex | kubeflow (the YAML's target, already checked).
        values: the run's parameter values.

    Raises:
        ValueError: one line naming the parameter, the profile and what it can take.
    """
    record = compiled_record(str((spec.get("pipelineInfo") or {}).get("description") or ""))
    hardware = (record or {}).get("hardware")
    if not isinstance(hardware, Mapping) or not hardware:
        return
    from pipelines.hardware import HardwareProfile, check_params, resolve

    parameters = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    defaults = {name: p["defaultValue"] for name, p in parameters.items() if "defaultValue" in p}
    check_params(resolve(HardwareProfile.from_dict(hardware), backend), {**defaults, **values})
