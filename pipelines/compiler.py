"""Compiles the caloforge DAG to a KFP v2 pipeline YAML (offline; no KFP server needed).

What a compiled YAML records (its target and hardware) is read back by pipelines.compiled.
"""

from __future__ import annotations

import os

from kfp import compiler

from pipelines.config import PipelineParams
from pipelines.pipeline import create_pipeline


def compile_pipeline(output_path: str, image: str | None = None, hardware=None, target: str = "vertex",
                     defaults: PipelineParams | None = None, registry: str | None = None) -> str:
    """Writes the pipeline YAML for one image and hardware profile.

    Args:
        output_path: YAML file to write (its folder is created).
        image: one image for every component (default: $CALOFORGE_IMAGE, else per stage kind).
        hardware: pipelines.hardware.HardwareProfile of the training step, None for the cpu profile.
        target: `vertex` or `kubeflow` (recorded in the YAML; `submit` refuses the other).
        defaults: the pipeline parameters' defaults in the YAML (default: the embedded demo).
        registry: registry of the per-kind images (pipelines.images).

    Returns:
        The path written.
    """
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    tmp = output_path + ".tmp.yaml"
    try:
        pipeline = create_pipeline(image=image, hardware=hardware, target=target, defaults=defaults,
                                   registry=registry)
        compiler.Compiler().compile(pipeline, package_path=tmp)
        os.replace(tmp, output_path)  # a half-written YAML never replaces a good one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output_path
