"""The caloforge DAG: one `create_pipeline()` factory wiring the five components."""

import dataclasses
import inspect
import os
from typing import Callable, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components import build_components
from pipelines.config import PipelineParams, component_parameters

PIPELINE_NAME = "caloforge-3dgan"
DEFAULT_IMAGE = "ghcr.io/caloforge/caloforge-cpu:0.1.0"


def default_image() -> str:
    """The component image: $CALOFORGE_IMAGE wins, so CI and users can pin their own build."""
    return os.environ.get("CALOFORGE_IMAGE", DEFAULT_IMAGE)


def create_pipeline(image: Optional[str] = None, hardware=None, target: str = "vertex",
                    defaults: Optional[PipelineParams] = None) -> Callable:
    """Builds the DAG generate -> convert -> train -> evaluate -> benchmark.

    Hardware is a compile-time choice (a KFP accelerator request cannot follow a run-time
    parameter on every backend), so each hardware profile compiles to its own YAML.

    Args:
        image: container image for every component (default: `default_image()`).
        hardware: a trainer.hardware.HardwareProfile for the training step (None: CPU).
        target: `vertex` or `kubeflow`: which names the accelerator request uses.
        defaults: the pipeline parameters' default values (default: PipelineParams(), the
            embedded demo); `caloforge compile --param` bakes other defaults into the YAML.

    Returns:
        The `@dsl.pipeline` function; its parameters are exactly PipelineParams' fields, with
        their types, defaults and help generated from pipelines.config.
    """
    comps = build_components(image or default_image())
    defaults = defaults if defaults is not None else PipelineParams()
    names = [f.name for f in dataclasses.fields(PipelineParams)]

    class Outputs(NamedTuple):
        raw_data: Dataset
        tfrecords: Dataset
        model: Model
        evaluation: Artifact
        report: HTML
        benchmark: Artifact
        eval_metrics: Metrics
        benchmark_metrics: Metrics

    def caloforge_pipeline(*values) -> Outputs:
        # KFP calls this once, at compile time, with one placeholder per parameter, in order.
        params = dict(zip(names, values))

        def inputs(stage: str) -> dict:
            return {name: params[name] for name in component_parameters(stage)}

        raw = comps.prepare_raw_data(**inputs("generate")).set_display_name("generate sample data")
        converted = comps.convert_to_tfrecords(
            raw_data=raw.outputs["raw_data"], **inputs("convert")
        ).set_display_name("convert to TFRecords")
        trained = comps.train_gan(
            tfrecords=converted.outputs["tfrecords"], **inputs("train")
        ).set_display_name("train 3DGAN")
        _request_hardware(trained, hardware, target)
        evaluated = comps.evaluate_gan(
            tfrecords=converted.outputs["tfrecords"], model=trained.outputs["model"], **inputs("evaluate")
        ).set_display_name("validate physics")
        bench = comps.collect_benchmark(
            tfrecords=converted.outputs["tfrecords"], model=trained.outputs["model"], **inputs("benchmark")
        ).set_display_name("collect benchmark")
        return Outputs(
            raw_data=raw.outputs["raw_data"],
            tfrecords=converted.outputs["tfrecords"],
            model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"],
            report=evaluated.outputs["report"],
            benchmark=bench.outputs["benchmark"],
            eval_metrics=evaluated.outputs["metrics"],
            benchmark_metrics=bench.outputs["metrics"],
        )

    # The signature KFP reads (names, types, defaults) and the docstring it takes each
    # parameter's description from, both generated from PipelineParams.
    caloforge_pipeline.__signature__ = inspect.Signature(
        [
            inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=getattr(defaults, f.name), annotation=f.type)
            for f in dataclasses.fields(PipelineParams)
        ],
        return_annotation=Outputs,
    )
    caloforge_pipeline.__doc__ = "Runs the caloforge DAG.\n\nArgs:\n" + "".join(
        f"    {f.name}: {f.metadata['help']}\n" for f in dataclasses.fields(PipelineParams)
    )
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description="Prepare calorimeter showers, train 3DGAN, validate it against Monte Carlo, benchmark the training.",
    )(caloforge_pipeline)


def _request_hardware(task: dsl.PipelineTask, hardware, target: str) -> None:
    """Applies trainer.hardware's one mapping from a hardware profile to the task's resources."""
    if hardware is None:
        return
    from trainer.hardware import kfp_resources

    resources = kfp_resources(hardware, target=target)
    if resources.cpu_limit:
        task.set_cpu_limit(resources.cpu_limit)
    if resources.memory_limit:
        task.set_memory_limit(resources.memory_limit)
    if resources.accelerator_type:
        task.set_accelerator_type(resources.accelerator_type)
        task.set_accelerator_limit(resources.accelerator_count)
    for name, value in resources.env.items():
        task.set_env_variable(name, value)
    if resources.node_selector:
        # Node labels (GKE GPU/TPU pools) are Kubernetes-only: Vertex picks machines itself.
        from kfp import kubernetes

        for key, value in resources.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
