"""Compiles the caloforge DAG to a KFP v2 pipeline YAML (offline; no KFP server needed)."""

from __future__ import annotations

import os

from kfp import compiler

from pipelines.config import PipelineParams
from pipelines.pipeline import create_pipeline


def compile_pipeline(output_path: str, image: str | None = None, hardware=None, target: str = "vertex",
                     defaults: PipelineParams | None = None) -> str:
    """Writes the pipeline YAML for one image and hardware profile.

    Args:
        output_path: YAML file to write (its folder is created).
        image: component image (default: $CALOFORGE_IMAGE or the published CPU image).
        hardware: trainer.hardware.HardwareProfile of the training step, None for CPU.
        target: `vertex` or `kubeflow` accelerator naming.
        defaults: the pipeline parameters' defaults in the YAML (default: the embedded demo).

    Returns:
        The path written.
    """
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    tmp = output_path + ".tmp.yaml"
    try:
        compiler.Compiler().compile(create_pipeline(image=image, hardware=hardware, target=target, defaults=defaults), package_path=tmp)
        os.replace(tmp, output_path)  # a half-written YAML never replaces a good one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output_path
