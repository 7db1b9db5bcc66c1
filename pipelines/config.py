"""The DAG's run-time parameters, derived from the stage configs they feed.

Each pipeline parameter is one row of PARAMETERS: its name, the stage and the config field it
sets. Its type, default, choices and help are that field's (read by data_prep.config_cli), so a
stage run alone and the DAG agree. The embedded demo that `make run` runs (a few thousand showers
and a short training on 2 CPU cores) changes a few defaults: EMBEDDED_DEMO lists each with its
reason, and `caloforge params` shows them beside the stage's own default.

Adding a setting to the DAG: the field in the stage's config (with its `Attributes:` line), one
row in PARAMETERS, and the parameter in the stage's component signature in components/stages.py
(KFP ships that function's source, so its signature is written out; a test checks that it
matches PARAMETERS). The pipeline's signature and the component calls are generated from here.

Later default sets (e.g. hardware profiles) are more layers like EMBEDDED_DEMO: a dict of
parameter -> (value, reason) applied over the stage defaults (`PipelineParams.layered`).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from data_prep.config_cli import FieldInfo, check_path, describe, named_fields, uri_scheme
from data_prep.convert import ConvertConfig
from data_prep.mc_shower import ShowerParams
from data_prep.montecarlo import MonteCarloConfig
from data_prep.strict_fields import reject_unknown_keys
from eval.benchmark import BenchmarkConfig
from eval.evaluate import EvalConfig
from eval.verdict import PACKAGE_PREFIX
from eval.publish import PublishConfig
from trainer.config import TrainConfig


@dataclass
class DagInputs:
    """Pipeline parameters that belong to the DAG itself rather than to one stage's config.

    Attributes:
        input_uri: Folder or gs:// prefix of real 3DGAN HDF5 files; replaces the Monte Carlo when set.
        beam_args: Extra Beam pipeline flags for the conversion, space separated (e.g.
            `--runner=DataflowRunner --project=...`).
    """

    input_uri: str = field(default="", metadata={"path": "input"})
    beam_args: str = ""


#: Stage name -> (config class, KFP component function in components/stages.py).
STAGES: dict[str, tuple[type, str]] = {
    "generate": (MonteCarloConfig, "prepare_raw_data"),
    "convert": (ConvertConfig, "convert_to_tfrecords"),
    "train": (TrainConfig, "train_gan"),
    "evaluate": (EvalConfig, "evaluate_gan"),
    "benchmark": (BenchmarkConfig, "collect_benchmark"),
    # Runs only when the evaluator's verdict is PASSED (the gate in pipelines/pipeline.py).
    "publish": (PublishConfig, "publish_model"),
}

#: Component inputs the DAG fills from KFP's run-time placeholders rather than from a pipeline
#: parameter (pipelines/pipeline.py): stage -> names, after the stage's pipeline parameters.
RUN_INPUTS: dict[str, tuple[str, ...]] = {"publish": ("run_id",)}

#: Config fields the DAG fills from artifacts, with stand-ins used to check the other values early.
ARTIFACT_FIELDS: dict[str, dict[str, Any]] = {
    "convert": {"inputs": ["<raw_data>/files.json"], "output": "<tfrecords>"},
    "train": {"data": "<tfrecords>/manifest.json", "output_dir": "<model>"},
    "evaluate": {"data": "<tfrecords>/manifest.json", "generator_dir": "<model>/generator",
                 "output_dir": "<evaluation>"},
    "benchmark": {"train_dir": "<model>", "output_dir": "<benchmark>", "manifest": "<tfrecords>/manifest.json"},
    "publish": {"model_dir": "<model>", "evaluation_dir": "<evaluation>", "run_id": "<run>"},
}


@dataclass(frozen=True)
class Param:
    """One pipeline parameter: which stage's component receives it and which config field it sets.

    Attributes:
        name: The KFP pipeline parameter (and component input) name.
        stage: Key of STAGES.
        field: Field of the stage's config (or of `source`) the value sets.
        source: Class declaring the field when it is not the stage's config (DagInputs).
        note: Added to the field's help where the DAG gives it a twist.
    """

    name: str
    stage: str
    field: str
    source: type | None = None
    note: str = ""

    @property
    def config_class(self) -> type:
        return self.source or STAGES[self.stage][0]

    @property
    def sets_stage_config(self) -> bool:
        return self.source is None

    def stage_field(self) -> FieldInfo:
        """The FieldInfo (type, default, choices, help) of the field this parameter sets."""
        for info in describe(self.config_class, _help_sources(self.config_class)):
            if info.name == self.field:
                return info
        raise KeyError(f"{self.config_class.__name__} has no field {self.field!r} (pipeline parameter {self.name})")


def _help_sources(cls: type) -> tuple[type, ...]:
    # MonteCarloConfig flattens ShowerParams' fields and leaves their help to its docstring.
    return (ShowerParams,) if cls is MonteCarloConfig else ()


PARAMETERS: tuple[Param, ...] = (
    Param("mc_events", "generate", "n_events", note="Ignored when input_uri is set."),
    Param("mc_events_per_file", "generate", "events_per_file"),
    Param("mc_energy_min", "generate", "energy_min"),
    Param("mc_energy_max", "generate", "energy_max"),
    Param("mc_seed", "generate", "seed"),
    Param("input_uri", "generate", "input_uri", source=DagInputs),
    Param("test_fraction", "convert", "test_fraction"),
    Param("encoding", "convert", "encoding"),
    Param("compression", "convert", "compression"),
    Param("on_bad_event", "convert", "on_bad_event"),
    Param("beam_args", "convert", "beam_args", source=DagInputs),
    Param("preset", "train", "preset"),
    Param("training_loop", "train", "loop"),
    Param("epochs", "train", "epochs"),
    Param("max_steps", "train", "max_steps"),
    Param("batch_size_per_replica", "train", "batch_size_per_replica"),
    Param("learning_rate", "train", "learning_rate"),
    Param("lr_scaling", "train", "lr_scaling"),
    Param("d_mode_in_g_update", "train", "d_mode_in_g_update"),
    # Not `strategy`: a Vertex AI custom job has its own `strategy` input (STANDARD/SPOT scheduling).
    Param("distribution_strategy", "train", "strategy"),
    Param("cpu_logical_devices", "train", "cpu_logical_devices",
          note="A cpu hardware profile with `count: N` sets it (the scaling sweep's replica counts)."),
    Param("precision", "train", "precision"),
    Param("jit_compile", "train", "jit_compile"),
    Param("train_seed", "train", "seed"),
    Param("snapshot_every", "train", "snapshot_every"),
    Param("keep_snapshots", "train", "keep_snapshots"),
    Param("eval_events", "evaluate", "max_events"),
    Param("eval_seed", "evaluate", "seed"),
    Param("eval_thresholds", "evaluate", "thresholds",
          note="On a cluster, a gs:// file (it is read by the evaluation step)."),
    Param("select_best", "evaluate", "select_best"),
    Param("best_of_last", "evaluate", "best_of_last"),
    Param("warmup_steps", "benchmark", "warmup_steps"),
    # A record of the compiled profile (create_pipeline sets its default; check_params refuses another).
    Param("hardware_profile", "benchmark", "hardware_profile",
          note="`caloforge compile --hardware` sets it; a run may not name another profile."),
    Param("models_uri", "publish", "destination",
          note="Published only when the physics verdict is PASSED; on a cluster a gs:// prefix."),
    Param("model_name", "publish", "model_name"),
    Param("register_vertex_model", "publish", "register_vertex_model",
          note="Vertex AI Pipelines only (a gs:// models destination)."),
)

#: The embedded demo (`make run`, `caloforge run --local`): parameter -> (value, why it differs
#: from the stage's own default). Everything else is the stage default.
EMBEDDED_DEMO: dict[str, tuple[Any, str]] = {
    "mc_events": (3000, "a sample 2 CPU cores convert, train on and evaluate in minutes"),
    "mc_events_per_file": (750, "four files, so the conversion has several to split"),
    "mc_energy_min": (10.0, "a narrower range than the published 2-500 GeV set suits 3,000 showers"),
    "mc_energy_max": (200.0, "a narrower range than the published 2-500 GeV set suits 3,000 showers"),
    "mc_seed": (1, "the seed of the demo runs measured in README"),
    "max_steps": (120, "a short training: the demo shows the DAG, not a converged GAN"),
    "batch_size_per_replica": (16, "the published 64 makes a CPU step four times slower"),
    "train_seed": (42, "the seed of the demo runs measured in README"),
    "eval_seed": (7, "the seed of the demo runs measured in README"),
    "hardware_profile": ("cpu", "the demo runs on the cpu profile (kfp.local on this machine)"),
}


#: Parameters naming files or folders a step reads or writes itself: on a cluster, gs://.
#: Name -> (what a cluster cannot do with this machine's files, what to give instead).
CLUSTER_URIS: dict[str, tuple[str, str]] = {"input_uri": ("read", "folder"), "eval_thresholds": ("read", "file"),
                                            "models_uri": ("write to", "prefix")}
#: Parameters naming a file the step reads: a gs:// one is not read on this machine when checking.
READ_BY_THE_STEP: tuple[str, ...] = ("eval_thresholds",)

#: Parameters renamed: old name -> new name (a run or compile with the old name is told the new one).
RENAMED: dict[str, str] = {"strategy": "distribution_strategy"}


def _param_field(param: Param, layers: tuple[Mapping[str, tuple[Any, str]], ...]) -> tuple[str, Any, Any]:
    info = param.stage_field()
    default = info.default
    for layer in layers:
        if param.name in layer:
            default = layer[param.name][0]
    metadata = {
        "help": " ".join(t for t in (info.help, param.note) if t),
        "choices": info.choices,
        "path": info.path,
        "stage": param.stage,
        "field": param.field,
        "stage_default": info.default,
    }
    return param.name, info.type, dataclasses.field(default=default, metadata=metadata)


class _PipelineParamsMethods:
    """Behaviour of PipelineParams (its fields are generated from PARAMETERS below)."""

    def __post_init__(self) -> None:
        for info in describe(type(self)):
            value = getattr(self, info.name)
            if info.kind == "float" and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, info.name, value)
            try:
                info.check_type(value)
                info.check_choice(value)
            except ValueError as err:
                raise ValueError(f"pipeline parameter {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PipelineParams":
        reject_unknown_keys(cls, values, "pipeline parameters")
        return cls(**values)

    def with_overrides(self, overrides: dict[str, str]) -> "PipelineParams":
        """Applies `name=value` strings from the command line, converted to each field's type."""
        values = self.to_dict()
        infos = {i.name: i for i in describe(type(self))}
        for name, raw in overrides.items():
            if name not in infos:
                if name in RENAMED:
                    raise ValueError(f"pipeline parameter {name!r} is now {RENAMED[name]!r} (TrainConfig.{name})")
                raise ValueError(f"unknown pipeline parameter {name!r}; valid: {sorted(infos)}")
            try:
                values[name] = infos[name].parse(raw)
            except ValueError as err:
                raise ValueError(f"pipeline parameter {err}") from None
        return type(self)(**values)

    def stage_configs(self) -> dict[str, Any]:
        """The stage configs these values give, artifact paths stood in (see ARTIFACT_FIELDS).

        Raises:
            ValueError: naming the pipeline parameters a stage config rejects, and why.
        """
        out = {}
        for stage, (cls, _) in STAGES.items():
            params = [p for p in PARAMETERS if p.stage == stage and p.sets_stage_config]
            values = {p.field: getattr(self, p.name) for p in params}
            for param in params:  # a gs:// file is read by the step, not on this machine
                if param.name in READ_BY_THE_STEP and uri_scheme(values[param.field]) == "gs":
                    values[param.field] = ""
            try:
                config = cls(**{**values, **ARTIFACT_FIELDS.get(stage, {})})
                if callable(getattr(config, "validate", None)):
                    config.validate()
            except ValueError as err:
                named = named_fields(str(err), [p.stage_field() for p in params])
                by_field = {p.field: p for p in params}
                names = ", ".join(f"{by_field[i.name].name}={getattr(self, by_field[i.name].name)!r}" for i in named)
                what = f"pipeline parameter{'s' if len(named) > 1 else ''} {names}" if named else f"{stage} settings"
                raise ValueError(f"{what}: {err}") from None
            out[stage] = config
        return out

    def validate(self, cluster: bool = False) -> None:
        """Checks every value before anything runs: stage ranges, paths, gs:// vs local.

        Args:
            cluster: The DAG runs on a cluster (compile, submit): input_uri, eval_thresholds and
                models_uri must be gs://, as a cluster cannot read or write this machine's files.
                Otherwise a local input_uri must exist.

        Raises:
            ValueError: one line naming the parameter, its value and what is valid.
        """
        for name, (verb, what) in CLUSTER_URIS.items():
            value = getattr(self, name)
            # A file shipped with caloforge (package:eval/...) is in every image too.
            if cluster and value and uri_scheme(value) != "gs" and not value.startswith(PACKAGE_PREFIX):
                raise ValueError(f"pipeline parameter {name}={value!r}: a cluster cannot {verb} this "
                                 f"machine's files; give a gs:// {what}")
        models_uri = getattr(self, "models_uri")
        problem = check_path("output", models_uri, "pipeline parameter models_uri")
        if problem:
            raise ValueError(problem)
        self.stage_configs()
        if getattr(self, "register_vertex_model") and not cluster and uri_scheme(models_uri) != "gs":
            raise ValueError(f"pipeline parameter register_vertex_model=True needs a gs:// models_uri on a local "
                             f"run (Vertex AI reads models from Cloud Storage), got models_uri={models_uri!r}")
        input_uri = getattr(self, "input_uri")
        problem = check_path("input", input_uri, "pipeline parameter input_uri")
        if problem:
            raise ValueError(problem)
        try:
            shlex.split(getattr(self, "beam_args"))
        except ValueError as err:
            raise ValueError(f"pipeline parameter beam_args={getattr(self, 'beam_args')!r}: {err}") from None

    @classmethod
    def stage_defaults(cls) -> "PipelineParams":
        """Every parameter at its stage's own default (the embedded demo's changes left out)."""
        return cls(**{p.name: p.stage_field().default for p in PARAMETERS})

    @classmethod
    def layered(cls, *layers: Mapping[str, tuple[Any, str]]) -> "PipelineParams":
        """Stage defaults, then each layer's values in turn (a layer: name -> (value, reason))."""
        values = cls.stage_defaults().to_dict()
        for layer in layers:
            reject_unknown_keys(cls, layer, "default layer")
            values.update({name: value for name, (value, _) in layer.items()})
        return cls(**values)


PipelineParams = dataclasses.make_dataclass(
    "PipelineParams",
    [_param_field(p, (EMBEDDED_DEMO,)) for p in PARAMETERS],
    bases=(_PipelineParamsMethods,),
)
PipelineParams.__module__ = __name__  # make_dataclass takes `module=` only from Python 3.12
PipelineParams.__doc__ = (
    "Every run-time parameter of the DAG; each field is one KFP pipeline parameter of the same name.\n\n"
    "Generated from PARAMETERS: each field takes its type, choices and help from the stage config\n"
    "field it sets, and its default from that field unless EMBEDDED_DEMO changes it.\n\n"
    "Attributes:\n"
    + "".join(f"    {p.name}: {p.stage_field().help} {p.note}".rstrip() + "\n" for p in PARAMETERS)
)


def component_parameters(stage: str) -> list[str]:
    """Names of the pipeline parameters one stage's component takes as inputs, in table order."""
    return [p.name for p in PARAMETERS if p.stage == stage]


def stage_values(stage: str, component_args: Mapping[str, Any]) -> dict[str, Any]:
    """Config-field values of one stage from its component's arguments (pipeline-parameter names).

    A component calls `TrainConfig(data=..., output_dir=..., **stage_values("train", locals()))`,
    so the mapping (e.g. training_loop -> loop, train_seed -> seed) lives here only.
    """
    return {p.field: component_args[p.name] for p in PARAMETERS if p.stage == stage and p.sets_stage_config}


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Turns ['a=1', 'b=x'] into {'a': '1', 'b': 'x'}, naming any malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"parameter {pair!r} is not of the form name=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out


def describe_params(params: Any = None) -> list[dict[str, Any]]:
    """Name, type, default, choices, help and stage field of every parameter (for `caloforge params`).

    Args:
        params: The values to show as defaults (default: PipelineParams(), the embedded demo).
    """
    params = params if params is not None else PipelineParams()
    rows = []
    for info in describe(PipelineParams):
        param = next(p for p in PARAMETERS if p.name == info.name)
        value = getattr(params, info.name)
        stage_default = param.stage_field().default
        demo = EMBEDDED_DEMO.get(info.name)
        rows.append({
            "name": info.name,
            "type": info.type_name,
            "default": value,
            "choices": list(info.choices) if info.choices else None,
            "help": info.help,
            "sets": f"{param.stage}.{param.field}",
            "stage_default": stage_default,
            "demo_reason": demo[1] if demo is not None and value == demo[0] != stage_default else "",
        })
    return rows

