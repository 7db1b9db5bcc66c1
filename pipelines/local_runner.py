"""Runs the DAG with kfp.local in the current Python environment and gathers one run folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from pipelines.config import PipelineParams
from pipelines.kfp_console import quiet_kfp_local
from pipelines.run_folder import RunSummary, collect_run

log = logging.getLogger(__name__)


def run_local(params: PipelineParams, output_dir: str, image: str | None = None) -> RunSummary:
    """Runs generate -> convert -> train -> evaluate -> benchmark (and publish on a PASSED verdict)
    with kfp.local's SubprocessRunner.

    The SubprocessRunner with `use_venv=False` executes each component in this interpreter's
    environment (no pip, no network), exactly the compiled component code a cluster would run.

    Args:
        params: pipeline parameters.
        output_dir: the run folder; kfp.local's own files go to output_dir/kfp.
        image: container image recorded in the component specs (unused locally).

    Returns:
        The RunSummary of the collected run folder.
    """
    from kfp import local

    from pipelines.pipeline import create_pipeline

    output_dir = os.path.abspath(output_dir)
    kfp_root = os.path.join(output_dir, "kfp")
    if os.path.exists(kfp_root):
        shutil.rmtree(kfp_root)  # a run folder holds one run: stale artifacts would be collected
    os.makedirs(kfp_root, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=kfp_root, raise_on_error=True)
    pipeline_func = create_pipeline(image=image)  # the cpu hardware profile: what runs on 2 CPU cores
    log.info("running the caloforge DAG locally into %s", output_dir)
    start = time.perf_counter()
    with quiet_kfp_local():
        task = pipeline_func(**params.to_dict())
    seconds = time.perf_counter() - start
    outputs = dict(task.outputs)
    publication = json.loads(outputs.pop("publication"))
    artifacts = {name: _artifact_path(artifact) for name, artifact in outputs.items()}
    return collect_run(artifacts, output_dir, params.to_dict(), seconds, publication=publication)


def _artifact_path(artifact) -> str:
    # kfp.local artifacts carry a local uri; .path resolves it the same way components do.
    return artifact.path
