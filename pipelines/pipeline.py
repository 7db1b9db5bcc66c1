"""The caloforge DAG: one `create_pipeline()` factory wiring the five components."""


import os
from typing import Callable, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components import build_components
from pipelines.config import PipelineParams

PIPELINE_NAME = "caloforge-3dgan"
DEFAULT_IMAGE = "ghcr.io/caloforge/caloforge-cpu:0.1.0"


def default_image() -> str:
    """The component image: $CALOFORGE_IMAGE wins, so CI and users can pin their own build."""
    return os.environ.get("CALOFORGE_IMAGE", DEFAULT_IMAGE)


def create_pipeline(image: Optional[str] = None, hardware=None, target: str = "vertex") -> Callable:
    """Builds the DAG generate -> convert -> train -> evaluate -> benchmark.

    Hardware is a compile-time choice (a KFP accelerator request cannot follow a run-time
    parameter on every backend), so each hardware profile compiles to its own YAML.

    Args:
        image: container image for every component (default: `default_image()`).
        hardware: a trainer.hardware.HardwareProfile for the training step (None: CPU).
        target: `vertex` or `kubeflow`: which names the accelerator request uses.

    Returns:
        The `@dsl.pipeline` function; its parameters are exactly PipelineParams' fields.
    """
    comps = build_components(image or default_image())
    defaults = PipelineParams()

    class Outputs(NamedTuple):
        raw_data: Dataset
        tfrecords: Dataset
        model: Model
        evaluation: Artifact
        report: HTML
        benchmark: Artifact
        eval_metrics: Metrics
        benchmark_metrics: Metrics

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Prepare calorimeter showers, train 3DGAN, validate it against Monte Carlo, benchmark the training.",
    )
    def caloforge_pipeline(
        mc_events: int = defaults.mc_events,
        mc_events_per_file: int = defaults.mc_events_per_file,
        mc_energy_min: float = defaults.mc_energy_min,
        mc_energy_max: float = defaults.mc_energy_max,
        mc_seed: int = defaults.mc_seed,
        input_uri: str = defaults.input_uri,
        test_fraction: float = defaults.test_fraction,
        encoding: str = defaults.encoding,
        compression: str = defaults.compression,
        on_bad_event: str = defaults.on_bad_event,
        beam_args: str = defaults.beam_args,
        preset: str = defaults.preset,
        training_loop: str = defaults.training_loop,
        epochs: int = defaults.epochs,
        max_steps: int = defaults.max_steps,
        batch_size_per_replica: int = defaults.batch_size_per_replica,
        learning_rate: float = defaults.learning_rate,
        lr_scaling: str = defaults.lr_scaling,
        strategy: str = defaults.strategy,
        precision: str = defaults.precision,
        jit_compile: bool = defaults.jit_compile,
        train_seed: int = defaults.train_seed,
        eval_events: int = defaults.eval_events,
        eval_seed: int = defaults.eval_seed,
        warmup_steps: int = defaults.warmup_steps,
    ) -> Outputs:
        raw = comps.prepare_raw_data(
            mc_events=mc_events,
            mc_events_per_file=mc_events_per_file,
            mc_energy_min=mc_energy_min,
            mc_energy_max=mc_energy_max,
            mc_seed=mc_seed,
            input_uri=input_uri,
        ).set_display_name("generate sample data")
        converted = comps.convert_to_tfrecords(
            raw_data=raw.outputs["raw_data"],
            test_fraction=test_fraction,
            encoding=encoding,
            compression=compression,
            on_bad_event=on_bad_event,
            beam_args=beam_args,
        ).set_display_name("convert to TFRecords")
        trained = comps.train_gan(
            tfrecords=converted.outputs["tfrecords"],
            preset=preset,
            training_loop=training_loop,
            epochs=epochs,
            max_steps=max_steps,
            batch_size_per_replica=batch_size_per_replica,
            learning_rate=learning_rate,
            lr_scaling=lr_scaling,
            strategy=strategy,
            precision=precision,
            jit_compile=jit_compile,
            train_seed=train_seed,
        ).set_display_name("train 3DGAN")
        _request_hardware(trained, hardware, target)
        evaluated = comps.evaluate_gan(
            tfrecords=converted.outputs["tfrecords"],
            model=trained.outputs["model"],
            eval_events=eval_events,
            eval_seed=eval_seed,
        ).set_display_name("validate physics")
        bench = comps.collect_benchmark(
            tfrecords=converted.outputs["tfrecords"],
            model=trained.outputs["model"],
            warmup_steps=warmup_steps,
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

    return caloforge_pipeline


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
