"""The caloforge DAG: one `create_pipeline()` factory wiring the five stages and the publish gate."""

import dataclasses
import inspect
import os
from typing import Callable, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components import build_components
from components.stages import PASSED
from pipelines.compiled import TARGET_PARAMETER, mark_text
from pipelines.config import EMBEDDED_DEMO, RUN_INPUTS, PipelineParams, component_parameters
from pipelines.images import DEFAULT_REGISTRY, IMAGE_ENV, image_for, stage_images
from pipelines.training_step import add_training_step
from pipelines.version import VERSION

PIPELINE_NAME = "caloforge-3dgan"
DEFAULT_IMAGE = image_for("cpu", DEFAULT_REGISTRY)
DESCRIPTION = "Prepare calorimeter showers, train 3DGAN, validate it against Monte Carlo, benchmark the training."


def default_image() -> str:
    """The component image: $CALOFORGE_IMAGE wins, so CI and users can pin their own build."""
    return os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)


def create_pipeline(image: Optional[str] = None, hardware=None, target: str = "vertex",
                    defaults: Optional[PipelineParams] = None, registry: Optional[str] = None) -> Callable:
    """Builds the DAG generate -> convert -> train -> evaluate -> benchmark, and the gate.

    The gate (TFX's Evaluator blessing before its Pusher): when the evaluator's verdict is
    PASSED, `publish_model` copies the generator, its config, metrics and report to the
    `models_uri` destination; otherwise `skip_publish` records why not. Either way the run
    succeeds, and its `publication` output (JSON) says where the model went or why it did not.

    Hardware is a compile-time choice (a KFP accelerator request cannot follow a run-time
    parameter on every backend), so each hardware profile compiles to its own YAML.

    Args:
        image: one container image for every component (default: $CALOFORGE_IMAGE, else the
            CPU image for every stage and the profile's accelerator image for training;
            pipelines.images).
        hardware: a pipelines.hardware.HardwareProfile for the training step (None: the cpu
            profile).
        target: `vertex` or `kubeflow` (kfp.local runs either; it ignores resource requests).
        defaults: the pipeline parameters' default values (default: PipelineParams(), the
            embedded demo); `caloforge compile` passes the profile's training settings layered
            under the user's --param values.
        registry: where the per-kind images live (pipelines.images).

    Returns:
        The `@dsl.pipeline` function; its parameters are exactly PipelineParams' fields, with
        their types, defaults and help generated from pipelines.config.

    Raises:
        ValueError: the profile cannot run on the target (pipelines.hardware.resolve).
    """
    from pipelines.hardware import check_params, resolve
    from pipelines.hardware_profiles import BUILTIN_PROFILES

    profile = hardware if hardware is not None else BUILTIN_PROFILES["cpu"]
    resolved = resolve(profile, target)
    defaults = defaults if defaults is not None else PipelineParams()
    if defaults.hardware_profile in ("", EMBEDDED_DEMO["hardware_profile"][0]):
        # The record of the hardware follows the profile compiled for (the demo's is cpu).
        defaults = dataclasses.replace(defaults, hardware_profile=profile.name)
    check_params(resolved, defaults.to_dict())
    images = stage_images(profile.accelerator, image, registry)
    comps = build_components(images.default, train_image=images.train)
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
        publication: str

    def caloforge_pipeline(*values) -> Outputs:
        # KFP calls this once, at compile time, with one placeholder per parameter, in order
        # (the pipeline parameters, then compile_target).
        params = dict(zip(names, values))

        def inputs(stage: str) -> dict:
            return {name: params[name] for name in component_parameters(stage)}

        raw = comps.prepare_raw_data(**inputs("generate")).set_display_name("generate sample data")
        converted = comps.convert_to_tfrecords(
            raw_data=raw.outputs["raw_data"], **inputs("convert")
        ).set_display_name("convert to TFRecords")
        trained = add_training_step(comps, resolved, converted.outputs["tfrecords"], inputs("train"),
                                    images.train).set_display_name("train 3DGAN")
        evaluated = comps.evaluate_gan(
            tfrecords=converted.outputs["tfrecords"], model=trained.outputs["model"], **inputs("evaluate")
        ).set_display_name("validate physics")
        publication = add_publish_gate(comps, trained.outputs["model"], evaluated.outputs["evaluation"],
                                       evaluated.outputs["verdict"], inputs("publish"))
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
            publication=publication,
        )

    # The signature KFP reads (names, types, defaults) and the docstring it takes each
    # parameter's description from, both generated from PipelineParams.
    # The last parameter records the target (docs/CONTRACTS.md §6); no step reads it.
    caloforge_pipeline.__signature__ = inspect.Signature(
        [
            *(inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=getattr(defaults, f.name), annotation=f.type)
              for f in dataclasses.fields(PipelineParams)),
            inspect.Parameter(TARGET_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=target,
                              annotation=str),
        ],
        return_annotation=Outputs,
    )
    caloforge_pipeline.__doc__ = "Runs the caloforge DAG.\n\nArgs:\n" + "".join(
        f"    {f.name}: {f.metadata['help']}\n" for f in dataclasses.fields(PipelineParams)
    ) + f"    {TARGET_PARAMETER}: The target this YAML was compiled for (a record; no step reads it).\n"
    return dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"{DESCRIPTION} {mark_text(target, VERSION, profile.to_dict())}",
    )(caloforge_pipeline)



def add_publish_gate(comps, model, evaluation, verdict, publish_inputs: dict):
    """The gate: publish the model when the verdict is PASSED, else record why not.

    As TFX's Evaluator blesses a model before its Pusher pushes it: `publish_model` runs inside
    `dsl.If(verdict == "PASSED")`, `skip_publish` in its `dsl.Else`; neither fails the run on a
    FAILED verdict. Returns the `dsl.OneOf` of their JSON summaries (the DAG's `publication`).

    Args:
        comps: components.StageComponents.
        model, evaluation, verdict: the trainer's Model, the evaluator's folder and its verdict.
        publish_inputs: the publish stage's pipeline parameters (models_uri, model_name, ...).
    """
    with dsl.If(verdict == PASSED, name="physics-verdict-passed"):
        runtime = {"run_id": dsl.PIPELINE_JOB_NAME_PLACEHOLDER}
        published = comps.publish_model(
            model=model, evaluation=evaluation, **publish_inputs,
            **{name: runtime[name] for name in RUN_INPUTS["publish"]},
        ).set_display_name("publish blessed model")
    with dsl.Else(name="physics-verdict-failed"):
        skipped = comps.skip_publish(evaluation=evaluation, verdict=verdict).set_display_name("not published")
    return dsl.OneOf(published.outputs["Output"], skipped.outputs["Output"])


#: The module-level pipeline `kfp dsl compile --py pipelines/pipeline.py` finds: the default image
#: and hardware profile (cpu, Vertex AI). Built when asked for, so importing this module stays cheap.
MODULE_PIPELINE = "caloforge_pipeline"


def __getattr__(name: str):
    if name == MODULE_PIPELINE:
        return create_pipeline()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), MODULE_PIPELINE])
