"""Pipeline parameters: derived from the stage configs, typed overrides, errors that name the parameter."""

import dataclasses
import inspect
import typing

import pytest

from components import stages
from data_prep import records
from data_prep.config_cli import describe
from data_prep.convert import ConvertConfig
from pipelines.config import (
    EMBEDDED_DEMO,
    PARAMETERS,
    RUN_INPUTS,
    STAGES,
    PipelineParams,
    component_parameters,
    parse_overrides,
    stage_values,
)
from trainer.config import TrainConfig


def test_overrides_are_converted_to_field_types():
    params = PipelineParams().with_overrides(parse_overrides(["mc_events=100", "jit_compile=true", "learning_rate=2e-4", "preset=tiny"]))
    assert params.mc_events == 100 and params.jit_compile is True
    assert params.learning_rate == pytest.approx(2e-4) and params.preset == "tiny"


def test_unknown_and_malformed_parameters_are_named():
    with pytest.raises(ValueError, match="mc_event"):
        PipelineParams().with_overrides({"mc_event": "3"})
    with pytest.raises(ValueError, match="mc_events='many'"):
        PipelineParams().with_overrides({"mc_events": "many"})
    with pytest.raises(ValueError, match="preset"):
        parse_overrides(["preset"])


def test_round_trip_through_dict():
    params = PipelineParams(mc_events=10)
    assert PipelineParams.from_dict(params.to_dict()) == params


# ---------------------------------------------------------------------------------------------
# One source: every pipeline parameter is a stage config field, with the same type and default.


def test_every_parameter_sets_a_stage_field_of_the_same_type():
    fields = {f.name: f for f in dataclasses.fields(PipelineParams)}
    assert [p.name for p in PARAMETERS] == list(fields)
    for param in PARAMETERS:
        info = param.stage_field()
        assert typing.get_type_hints(PipelineParams)[param.name] is info.type, param.name
        assert info.kind in ("int", "float", "str", "bool"), f"{param.name}: KFP takes scalars only"
        assert fields[param.name].metadata["help"].startswith(info.help), param.name


def test_defaults_are_the_stage_defaults_unless_a_documented_demo_override():
    demo = PipelineParams()
    for param in PARAMETERS:
        stage_default = param.stage_field().default
        value = getattr(demo, param.name)
        if param.name in EMBEDDED_DEMO:
            override, reason = EMBEDDED_DEMO[param.name]
            assert value == override and override != stage_default and reason.strip(), param.name
        else:
            assert value == stage_default, f"{param.name}: DAG {value!r} vs stage {stage_default!r}"
    # The drifts a user met: a stage run alone now agrees with the DAG.
    convert = ConvertConfig(inputs=["x.h5"], output="out")
    assert (convert.encoding, convert.test_fraction) == (demo.encoding, demo.test_fraction) == ("sparse", 0.2)
    assert TrainConfig().lr_scaling == demo.lr_scaling == "linear"
    assert PipelineParams.stage_defaults().batch_size_per_replica == TrainConfig().batch_size_per_replica == 64


def test_choices_are_the_stage_choices():
    from data_prep.convert import ON_BAD_EVENT

    choices = {i.name: i.choices for i in describe(PipelineParams)}
    for param in PARAMETERS:
        declared = param.stage_field().choices
        if declared is not None:
            assert choices[param.name] == declared, param.name
    # ConvertConfig declares its choices: the DAG's are the converter's own.
    assert choices["encoding"] == records.ENCODINGS and choices["compression"] == records.COMPRESSIONS
    assert choices["on_bad_event"] == tuple(ON_BAD_EVENT)
    assert set(choices["preset"]) == {"full", "small", "tiny", "fixed_angle"}


def test_component_signatures_match_the_wiring():
    hints = typing.get_type_hints(PipelineParams)
    for stage, (_, component) in STAGES.items():
        signature = inspect.signature(getattr(stages, component))
        scalars = {name: p.annotation for name, p in signature.parameters.items()
                   if p.annotation in (int, float, str, bool)}
        assert list(scalars) == component_parameters(stage) + list(RUN_INPUTS.get(stage, ())), component
        for name, annotation in scalars.items():
            if name in RUN_INPUTS.get(stage, ()):
                continue
            assert annotation is hints[name], f"{component}({name}: {annotation.__name__})"


def test_stage_values_map_pipeline_names_onto_config_fields():
    values = PipelineParams(training_loop="builtin", train_seed=5, eval_events=40).to_dict()
    assert stage_values("train", values)["loop"] == "builtin" and stage_values("train", values)["seed"] == 5
    assert stage_values("evaluate", values) == {"max_events": 40, "seed": 7, "thresholds": "", "select_best": True,
                                                "best_of_last": 10}
    publish = PipelineParams(models_uri="gs://b/models", model_name="calo").to_dict()
    assert stage_values("publish", publish) == {"destination": "gs://b/models", "model_name": "calo",
                                                "register_vertex_model": False}
    assert "input_uri" not in stage_values("generate", values) and "beam_args" not in stage_values("convert", values)


def test_values_are_checked_with_the_stage_rules_and_named():
    with pytest.raises(ValueError, match=r"preset='ful' is not one of full, small, tiny, fixed_angle"):
        PipelineParams().with_overrides({"preset": "ful"})
    with pytest.raises(ValueError, match=r"pipeline parameter eval_events=-1: max_events must be >= 0"):
        PipelineParams(eval_events=-1).validate()
    with pytest.raises(ValueError, match=r"batch_size_per_replica=0: TrainConfig.batch_size_per_replica=0 must be >= 1"):
        PipelineParams(batch_size_per_replica=0).validate()
    with pytest.raises(ValueError, match=r"mc_events='3000'.* not a valid int"):
        PipelineParams.from_dict({"mc_events": "3000"})
    with pytest.raises(ValueError, match="input_uri.*give a gs:// folder"):
        PipelineParams(input_uri="/data/3dgan").validate(cluster=True)
    PipelineParams(input_uri="gs://bucket/3dgan").validate(cluster=True)
    with pytest.raises(ValueError, match="beam_args"):
        PipelineParams(beam_args="--runner='Dataflow").validate()


def test_gate_parameters_are_checked_before_anything_runs(tmp_path):
    """models_uri, model_name, register_vertex_model and eval_thresholds: one line each."""
    for name, value, verb in (("models_uri", "/srv/models", "write to"), ("eval_thresholds", "/srv/t.yaml", "read")):
        with pytest.raises(ValueError, match=f"pipeline parameter {name}='{value}': a cluster cannot {verb} this"):
            PipelineParams(**{name: value}).validate(cluster=True)
    PipelineParams(models_uri="gs://b/models", eval_thresholds="gs://b/t.yaml").validate(cluster=True)  # not read here
    PipelineParams(models_uri=str(tmp_path / "models")).validate()
    with pytest.raises(ValueError, match=r"pipeline parameter model_name='a b': model_name='a b': use 1-128 letters"):
        PipelineParams(model_name="a b").validate()
    with pytest.raises(ValueError, match="eval_thresholds=.*does not exist"):
        PipelineParams(eval_thresholds=str(tmp_path / "none.yaml")).validate()
    with pytest.raises(ValueError, match="register_vertex_model=True needs a gs:// models_uri on a local run"):
        PipelineParams(register_vertex_model=True).validate()
    with pytest.raises(ValueError, match=r"pipeline parameter models_uri s3://b/m: only local paths and gs:// URIs"):
        PipelineParams(models_uri="s3://b/m").validate()
    PipelineParams(register_vertex_model=True).validate(cluster=True)  # the pipeline root is gs:// there


def test_default_layers_apply_in_order():
    layered = PipelineParams.layered(EMBEDDED_DEMO, {"batch_size_per_replica": (128, "a bigger device")})
    assert layered.batch_size_per_replica == 128 and layered.mc_events == 3000
    assert PipelineParams.layered(EMBEDDED_DEMO) == PipelineParams()
    with pytest.raises(ValueError, match="unknown keys"):
        PipelineParams.layered({"batch": (1, "typo")})


def test_the_quality_recipe_is_a_valid_parameter_file_run_by_make_quality():
    """examples/cpu-quality.json (docs/trainer.md, "A GAN shown to learn") names real parameters,
    passes every check (locally and, with its shipped thresholds, on a cluster) and is what
    `make quality` runs."""
    import json
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    values = json.loads((repo / "examples" / "cpu-quality.json").read_text())
    params = PipelineParams(**values)
    params.validate()
    params.validate(cluster=True)
    assert params.eval_thresholds == "package:eval/thresholds/cpu-quality.yaml"
    assert params.max_steps > 0 and params.mc_events >= 10_000
    assert "--params-file examples/cpu-quality.json" in (repo / "Makefile").read_text()
    with pytest.raises(ValueError, match=r"package:eval/thresholds/none.yaml is not shipped"):
        PipelineParams(eval_thresholds="package:eval/thresholds/none.yaml").validate()
