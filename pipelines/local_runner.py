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


def run_local_sweep(plan, output_dir: str, prices_yaml: str = "", image: str | None = None) -> dict:
    """Runs the scaling sweep (pipelines.sweep) with kfp.local and gathers one sweep folder.

    The points run one after the other (a point's timings are its own, not shared with another
    training on the same cores). The folder: the sweep table (eval.sweep's layout: index.html,
    sweep.json/.csv/.md, scaling.png, points/NAME/) with each point's full model/, evaluation/
    and benchmark/ moved under points/NAME/, and the shared raw_data/ and tfrecords/;
    `caloforge bench compare` reads it as it is.

    Args:
        plan: the sweep (pipelines.sweep.plan_sweep), for the cpu profiles this machine runs.
        output_dir: the sweep folder; kfp.local's own files go to output_dir/kfp.
        prices_yaml: a price table's text ("" = the packaged defaults).

    Returns:
        sweep.json's content, with `seconds` (the DAG's wall time) and `sweep_dir`.

    Raises:
        ValueError: a point that needs accelerators or several machines (not this machine).
    """
    from kfp import local

    from pipelines.sweep import create_sweep_pipeline

    remote = [p.name for p in plan.points if p.resolved.profile.accelerator != "cpu" or p.resolved.workers > 1]
    if remote:
        raise ValueError(f"--sweep: {', '.join(remote)} need{'s' if len(remote) == 1 else ''} accelerators or "
                         "several machines; a local sweep "
                         "trains on this machine's CPU: give replica counts (e.g. 1,2) or cpu profiles, and "
                         "compile the others for a cluster (`caloforge compile --pipeline sweep`)")
    output_dir = os.path.abspath(output_dir)
    kfp_root = os.path.join(output_dir, "kfp")
    if os.path.exists(kfp_root):
        shutil.rmtree(kfp_root)
    os.makedirs(kfp_root, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=kfp_root, raise_on_error=True)
    pipeline_func = create_sweep_pipeline(plan, image=image, prices_yaml=prices_yaml, parallelism=1)
    log.info("running the caloforge sweep locally into %s (%d points)", output_dir, len(plan.points))
    start = time.perf_counter()
    with quiet_kfp_local():
        task = pipeline_func(**plan.shared_values())
    seconds = time.perf_counter() - start
    artifacts = {name: _artifact_path(artifact) for name, artifact in task.outputs.items()}
    return collect_sweep(artifacts, output_dir, plan.shared_values(), seconds)


def collect_sweep(artifacts: dict[str, str], output_dir: str, parameters: dict, seconds: float) -> dict:
    """Moves the sweep's outputs into output_dir (links left behind, as pipelines.run_folder does),
    index.html, sweep.json and run.json last."""
    import json

    from eval.sweep import POINTS_DIR, SWEEP_HTML, SWEEP_JSON
    from pipelines.run_folder import _move_artifact

    markers = (SWEEP_HTML, SWEEP_JSON, "run.json")
    for marker in markers:
        if os.path.lexists(os.path.join(output_dir, marker)):
            os.remove(os.path.join(output_dir, marker))
    sweep_dir = artifacts["sweep"]
    with open(os.path.join(sweep_dir, SWEEP_JSON), encoding="utf-8") as f:
        result = json.load(f)
    points_dst = os.path.join(output_dir, POINTS_DIR)
    if os.path.exists(points_dst):
        shutil.rmtree(points_dst)
    shutil.move(os.path.join(sweep_dir, POINTS_DIR), points_dst)
    for name in sorted(os.listdir(sweep_dir)):
        if name not in markers:
            shutil.move(os.path.join(sweep_dir, name), os.path.join(output_dir, name))
    for stage in ("raw_data", "tfrecords"):
        dst = os.path.join(output_dir, stage)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        _move_artifact(artifacts[stage], dst)
    # Each point's full outputs in place of the table's copies (the same records, and more).
    for name, sources in result["sources"].items():
        for stage in ("model", "evaluation", "benchmark"):
            src = sources.get(stage)
            if not src or not os.path.isdir(src):
                continue
            dst = os.path.join(points_dst, name, stage)
            if os.path.exists(dst):
                shutil.rmtree(dst)
            _move_artifact(src, dst)
    for marker in (SWEEP_HTML, SWEEP_JSON):
        os.replace(os.path.join(sweep_dir, marker), os.path.join(output_dir, marker))
    run = {"pipeline": "sweep", "sweep_dir": output_dir, "seconds": round(seconds, 2), "parameters": parameters,
           "points": [p["point"] for p in result["points"]]}
    tmp = os.path.join(output_dir, "run.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(run, f, indent=2, default=str)
    os.replace(tmp, os.path.join(output_dir, "run.json"))
    return {**result, "seconds": seconds, "sweep_dir": output_dir}
