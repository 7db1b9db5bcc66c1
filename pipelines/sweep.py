"""The scaling sweep DAG `caloforge-3dgan-sweep`: one training configuration over several hardware
profiles or replica counts, with speedup, efficiency, cost and physics per point in one table.

    generate -> convert -> ParallelFor(point): train -> validate physics -> collect benchmark
                                                               -> summarize sweep (dsl.Collected)

The data are prepared once and shared by every point. A point is a hardware profile; an
integer N in `--sweep` is the cpu profile split into N logical CPU devices (`cpu-xN`, mirrored
over them; N = 1 is the cpu profile itself), which is how the sweep runs locally on 1 and 2
devices through kfp.local: plumbing, not speed, as the devices share the same cores.

What varies between points is what a profile implies for training (POINT_PARAMETERS: the
strategy, CPU split, precision, XLA, per-replica batch and the recorded profile); these are
the loop's items. Every other pipeline parameter is one value for the whole sweep (one
configuration): where two profiles imply different values (the cpu profile trains the demo's
`small` preset, an accelerator the `full` one), the sweep is refused until a --param settles it.

The points are compiled in, like a single DAG's hardware: each point's machine, accelerators
and image are resource requests a backend reads from the YAML. They are the `sweep_points`
pipeline parameter's default, the list the ParallelFor iterates (a list parameter's items pass
their typed values to the components; a literal list would type every field as its first).
`caloforge submit` refuses to change it (it is not a PipelineParams field).
"""

# No `from __future__ import annotations`: KFP reads the Outputs NamedTuple's types at compile time.

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence

from pipelines.config import PipelineParams, component_parameters
from pipelines.hardware import HardwareProfile, ResolvedHardware, check_params, resolve

SWEEP_PIPELINE_NAME = "caloforge-3dgan-sweep"
SWEEP_DESCRIPTION = ("Train one 3DGAN configuration over several hardware profiles or replica counts; speedup, "
                     "efficiency, cost per epoch and the physics headline of each in one table.")
#: `--sweep` when none is given: the cpu profile whole and split in two (what runs on any machine).
DEFAULT_SWEEP = "1,2"
#: The root pipeline parameter holding the points (the ParallelFor's items).
POINTS_PARAMETER = "sweep_points"
#: Pipeline parameters each point sets from its hardware profile (the loop item's fields).
POINT_PARAMETERS = ("hardware_profile", "distribution_strategy", "cpu_logical_devices", "precision", "jit_compile",
                    "batch_size_per_replica")
#: The most logical CPU devices `--sweep N` splits the CPU into.
MAX_CPU_SPLIT = 64


def split_cpu_profile(devices: int, base: HardwareProfile) -> HardwareProfile:
    """The cpu profile `base` with its CPU split into `devices` logical devices (`cpu-xN`; N = 1: base)."""
    if devices == 1:
        return base
    return dataclasses.replace(base, name=f"{base.name}-x{devices}", count=devices,
                               description=f"{base.description or base.name}, CPU split into {devices} logical devices")


def parse_sweep(text: str, hardware_file: str | None = None) -> list[HardwareProfile]:
    """The profiles of `--sweep`: comma-separated profile names (`caloforge hardware list`, or a
    --hardware-file's) and replica counts N (the cpu profile split into N logical CPU devices).

    Raises:
        ValueError: an empty list, an unknown profile, N < 1, or a point given twice.
    """
    from pipelines.hardware_profiles import get_profile

    tokens = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not tokens:
        raise ValueError(f"--sweep {text!r}: give profiles or replica counts, comma separated (e.g. {DEFAULT_SWEEP})")
    profiles: list[HardwareProfile] = []
    for token in tokens:
        if token.lstrip("-").isdigit():
            devices = int(token)
            if not 1 <= devices <= MAX_CPU_SPLIT:
                raise ValueError(f"--sweep {text!r}: replica count {devices} must be 1 to {MAX_CPU_SPLIT} "
                                 "(logical CPU devices of the cpu profile)")
            base = get_profile("cpu", hardware_file)
            if base.accelerator != "cpu" or base.count > 1 or base.workers > 1:
                raise ValueError(f"--sweep {text!r}: replica counts split the cpu profile, which "
                                 f"{hardware_file} redefines as something else")
            profiles.append(split_cpu_profile(devices, base))
        else:
            profiles.append(get_profile(token, hardware_file))
    names = [p.name for p in profiles]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--sweep {text!r}: {', '.join(twice)} given twice (each point is one profile)")
    return profiles


@dataclass(frozen=True)
class SweepPoint:
    """One point of the sweep: its profile resolved for the target, and its parameter values."""

    resolved: ResolvedHardware
    params: PipelineParams

    @property
    def name(self) -> str:
        return self.resolved.profile.name

    def item(self) -> dict[str, Any]:
        """The loop item: the point's name, POINT_PARAMETERS and what it runs on."""
        values = self.params.to_dict()
        return {"point": self.name, **{k: values[k] for k in POINT_PARAMETERS},
                "replicas": self.resolved.replicas, "accelerator": self.resolved.profile.accelerator,
                "machine": self.resolved.machine.name}


@dataclass(frozen=True)
class SweepPlan:
    """What `caloforge compile/run --pipeline sweep` builds: the points and the shared values.

    Attributes:
        points: The sweep points, in the order given.
        shared: The pipeline parameters every point shares (POINT_PARAMETERS are the points').
        target: vertex | kubeflow.
    """

    points: tuple[SweepPoint, ...]
    shared: PipelineParams
    target: str

    def items(self) -> list[dict[str, Any]]:
        return [p.item() for p in self.points]

    def shared_values(self) -> dict[str, Any]:
        """The root pipeline parameters' values (POINT_PARAMETERS left out)."""
        return {k: v for k, v in self.shared.to_dict().items() if k not in POINT_PARAMETERS}


def plan_sweep(profiles: Sequence[HardwareProfile], target: str,
               params_for: Callable[[ResolvedHardware], PipelineParams]) -> SweepPlan:
    """Resolves each profile for `target`, takes its parameter values, checks them against its
    hardware, and checks that the points share one configuration.

    Args:
        params_for: a point's values from its resolved profile (the CLI: the profile's training
            settings over the embedded demo, then the user's --params-file and --param).

    Raises:
        ValueError: a profile the target cannot run, values its hardware cannot take, or shared
            parameters on which the profiles disagree (one line naming them and the fix).
    """
    points = []
    for profile in profiles:
        resolved = resolve(profile, target)
        params = params_for(resolved)
        check_params(resolved, params.to_dict())
        points.append(SweepPoint(resolved, params))
    first = points[0].params.to_dict()
    for point in points[1:]:
        values = point.params.to_dict()
        differ = [k for k in first if k not in POINT_PARAMETERS and values[k] != first[k]]
        if differ:
            what = "; ".join(f"{k}: {points[0].name} {first[k]!r}, {point.name} {values[k]!r}" for k in differ)
            raise ValueError(f"--sweep: the points imply different values of {', '.join(differ)} ({what}); a sweep "
                             "trains one configuration: set them with " + " ".join(f"--param {k}=..." for k in differ))
    return SweepPlan(tuple(points), points[0].params, target)


def create_sweep_pipeline(plan: SweepPlan, image: Optional[str] = None, registry: Optional[str] = None,
                          prices_yaml: str = "", parallelism: int = 0) -> Callable:
    """Builds the sweep DAG (module docstring) for `plan`.

    Args:
        plan: points and shared values (plan_sweep).
        image: one image for every component (default: $CALOFORGE_IMAGE, else the CPU image for
            every stage and each point's accelerator image for its training).
        registry: where the per-kind images live (pipelines.images).
        prices_yaml: a price table's text for the cost column ("" = the packaged defaults).
        parallelism: points trained at once (0 = all; kfp.local runs them one by one, so that
            each point's timings are its own).

    Returns:
        The `@dsl.pipeline` function; its parameters are PipelineParams' fields less
        POINT_PARAMETERS, then sweep_points and compile_target.

    Raises:
        ValueError: points the target cannot run together (pipelines.training_step).
    """
    from kfp import dsl
    from kfp.dsl import HTML, Artifact, Dataset

    from components import build_components
    from pipelines.compiled import TARGET_PARAMETER, mark_text
    from pipelines.images import stage_images
    from pipelines.training_step import SweepTraining
    from pipelines.version import VERSION

    images = stage_images("cpu", image, registry)
    comps = build_components(images.default)
    training = SweepTraining(plan, image, registry)
    items = [{**item, **training.item_resources(point)} for item, point in zip(plan.items(), plan.points)]
    shared = plan.shared_values()
    names = list(shared)

    class Outputs(NamedTuple):
        raw_data: Dataset
        tfrecords: Dataset
        sweep: Artifact
        report: HTML

    def sweep_pipeline(*values) -> Outputs:
        # KFP calls this once, at compile time, with one placeholder per parameter, in order.
        params = dict(zip(names, values))
        points = values[len(names)]

        def inputs(stage: str, point: Any = None) -> dict:
            return {name: getattr(point, name) if name in POINT_PARAMETERS else params[name]
                    for name in component_parameters(stage)}

        raw = comps.prepare_raw_data(**inputs("generate")).set_display_name("generate sample data")
        converted = comps.convert_to_tfrecords(raw_data=raw.outputs["raw_data"], **inputs("convert"))
        converted.set_display_name("convert to TFRecords")
        tfrecords = converted.outputs["tfrecords"]
        with dsl.ParallelFor(items=points, parallelism=parallelism) as point:
            trained = training.add(comps, tfrecords, inputs("train", point), point).set_display_name("train 3DGAN")
            evaluated = comps.evaluate_gan(tfrecords=tfrecords, model=trained.outputs["model"], **inputs("evaluate"))
            evaluated.set_display_name("validate physics")
            bench = comps.collect_benchmark(tfrecords=tfrecords, model=trained.outputs["model"],
                                            **inputs("benchmark", point)).set_display_name("collect benchmark")
        summary = comps.summarize_sweep(benchmarks=dsl.Collected(bench.outputs["benchmark"]),
                                        evaluations=dsl.Collected(evaluated.outputs["evaluation"]),
                                        sweep_points=points, prices_yaml=prices_yaml)
        summary.set_display_name("summarize sweep")
        return Outputs(raw_data=raw.outputs["raw_data"], tfrecords=tfrecords, sweep=summary.outputs["sweep"],
                       report=summary.outputs["report"])

    fields = {f.name: f for f in dataclasses.fields(PipelineParams)}
    sweep_pipeline.__signature__ = inspect.Signature(
        [
            *(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=shared[name],
                                annotation=fields[name].type) for name in names),
            inspect.Parameter(POINTS_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=items, annotation=list),
            inspect.Parameter(TARGET_PARAMETER, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=plan.target,
                              annotation=str),
        ],
        return_annotation=Outputs,
    )
    sweep_pipeline.__doc__ = "Runs the caloforge scaling sweep.\n\nArgs:\n" + "".join(
        f"    {name}: {fields[name].metadata['help']}\n" for name in names
    ) + (f"    {POINTS_PARAMETER}: The sweep's points, compiled in (each one's profile, training settings and "
         "resources); compile another sweep to change them.\n"
         f"    {TARGET_PARAMETER}: The target this YAML was compiled for (a record; no step reads it).\n")
    record = mark_text(plan.target, VERSION, {}, sweep=[p.resolved.profile.to_dict() for p in plan.points])
    return dsl.pipeline(name=SWEEP_PIPELINE_NAME, description=f"{SWEEP_DESCRIPTION} {record}")(sweep_pipeline)


def compile_sweep(output_path: str, plan: SweepPlan, image: Optional[str] = None, registry: Optional[str] = None,
                  prices_yaml: str = "") -> str:
    """Writes the sweep's YAML (a half-written one never replaces a good one)."""
    import os

    from kfp import compiler

    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    tmp = output_path + ".tmp.yaml"
    try:
        pipeline = create_sweep_pipeline(plan, image=image, registry=registry, prices_yaml=prices_yaml)
        compiler.Compiler().compile(pipeline, package_path=tmp)
        os.replace(tmp, output_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output_path


def read_prices(path: str | None) -> str:
    """The text of a price table file, checked (eval.scaling.load_prices); "" for none.

    Raises:
        FileNotFoundError, ValueError: a missing file or a bad table (one line naming it).
    """
    if not path:
        return ""
    from eval.scaling import load_prices

    load_prices(path)
    with open(path, encoding="utf-8") as f:
        return f.read()


def describe_points(plan: SweepPlan) -> str:
    """One line per point (what the CLI prints before running or after compiling)."""
    return "\n".join(f"  {p.name}: {p.resolved.replicas} replica(s), strategy {p.params.distribution_strategy}, "
                     f"batch {p.params.batch_size_per_replica}/replica, {p.params.precision}"
                     + (f", CPU split into {p.params.cpu_logical_devices}" if p.params.cpu_logical_devices > 1 else "")
                     for p in plan.points)

