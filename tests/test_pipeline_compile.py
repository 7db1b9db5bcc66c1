"""The compiled YAML: the stages and the publish gate, every pipeline parameter, hardware requests from one mapping."""

import dataclasses

import pytest
import yaml

from pipelines.compiler import compile_pipeline
from pipelines.config import PipelineParams

COMPONENTS = {
    "comp-prepare-raw-data",
    "comp-convert-to-tfrecords",
    "comp-train-gan",
    "comp-evaluate-gan",
    "comp-collect-benchmark",
    "comp-publish-model",
    "comp-skip-publish",
}


def _compile(tmp_path, **kwargs):
    path = compile_pipeline(str(tmp_path / "p.yaml"), **kwargs)
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_yaml_has_the_stages_wired_in_order_and_the_gate(tmp_path):
    spec = _compile(tmp_path, image="example.org/caloforge:test")
    assert {c for c in spec["components"] if not c.startswith("comp-condition")} == COMPONENTS
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {c[len("comp-"):] for c in COMPONENTS if "publish" not in c} | {"condition-branches-1"}
    assert tasks["convert-to-tfrecords"]["dependentTasks"] == ["prepare-raw-data"]
    assert tasks["train-gan"]["dependentTasks"] == ["convert-to-tfrecords"]
    assert set(tasks["evaluate-gan"]["dependentTasks"]) == {"convert-to-tfrecords", "train-gan"}
    assert set(tasks["collect-benchmark"]["dependentTasks"]) == {"convert-to-tfrecords", "train-gan"}
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"example.org/caloforge:test"}
    # The gate: publish only when the evaluator's verdict is PASSED, else record why; both
    # branches feed the run's `publication` output.
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    conditions = {name: task["triggerPolicy"]["condition"] for name, task in branches.items()}
    passed = "inputs.parameter_values['pipelinechannel--evaluate-gan-verdict'] == 'PASSED'"
    assert conditions == {"condition-2": passed, "condition-3": f"!({passed})"}
    assert set(spec["components"]["comp-condition-2"]["dag"]["tasks"]) == {"publish-model"}
    assert set(spec["components"]["comp-condition-3"]["dag"]["tasks"]) == {"skip-publish"}
    publish_inputs = spec["components"]["comp-condition-2"]["dag"]["tasks"]["publish-model"]["inputs"]
    assert publish_inputs["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"
    assert set(publish_inputs["artifacts"]) == {"model", "evaluation"}
    assert "publication" in spec["root"]["outputDefinitions"]["parameters"]


def test_every_pipeline_parameter_is_exposed_with_its_default(tmp_path):
    spec = _compile(tmp_path)
    params = spec["root"]["inputDefinitions"]["parameters"]
    defaults = PipelineParams()
    for field in dataclasses.fields(PipelineParams):
        assert field.name in params, field.name
        assert params[field.name]["defaultValue"] == getattr(defaults, field.name), field.name


def test_compile_param_sets_the_yaml_defaults_and_help_describes_each(tmp_path):
    from pipelines.cli import main

    path = tmp_path / "full.yaml"
    assert main(["compile", "--output", str(path), "--param", "preset=full", "--param", "max_steps=0"]) == 0
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f)["root"]["inputDefinitions"]["parameters"]
    assert params["preset"]["defaultValue"] == "full" and params["max_steps"]["defaultValue"] == 0
    assert params["mc_events"]["defaultValue"] == PipelineParams().mc_events
    assert params["training_loop"]["description"].startswith("'custom' (strategy.run in a tf.function)")


def test_image_comes_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CALOFORGE_IMAGE", "registry.local/caloforge-cpu:dev")
    spec = _compile(tmp_path)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.local/caloforge-cpu:dev"}


def test_components_install_nothing_at_run_time(tmp_path):
    spec = _compile(tmp_path)
    for executor in spec["deploymentSpec"]["executors"].values():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command


def test_failed_compile_keeps_previous_yaml(tmp_path):
    out = tmp_path / "p.yaml"
    out.write_text("previous")
    with pytest.raises(Exception):
        compile_pipeline(str(out), hardware=object())
    assert out.read_text() == "previous"
