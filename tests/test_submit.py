"""Submission: the Vertex AI job a user would submit, built offline from a compiled YAML."""

import pytest
from google.auth.credentials import AnonymousCredentials

from pipelines.cli import main
from pipelines.compiler import compile_pipeline
from pipelines.submit import VertexTarget, build_vertex_job, submit_kubeflow


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_pipeline(str(tmp_path_factory.mktemp("yaml") / "p.yaml"))


def test_vertex_job_carries_parameters_and_root(compiled):
    target = VertexTarget(project="my-project", region="europe-west4", pipeline_root="gs://bucket/root")
    job = build_vertex_job(compiled, target, {"preset": "full", "epochs": 60}, credentials=AnonymousCredentials())
    runtime = job._gca_resource.runtime_config
    assert runtime.gcs_output_directory == "gs://bucket/root"
    assert runtime.parameter_values["preset"] == "full"
    assert runtime.parameter_values["epochs"] == 60
    assert job._gca_resource.display_name == "caloforge"


@pytest.mark.parametrize(
    "target,message",
    [
        (VertexTarget("", "europe-west4", "gs://b/r"), "--project"),
        (VertexTarget("p", "", "gs://b/r"), "--region"),
        (VertexTarget("p", "europe-west4", "/local/root"), "gs://"),
    ],
)
def test_incomplete_vertex_target_is_named(compiled, target, message):
    with pytest.raises(ValueError, match=message):
        build_vertex_job(compiled, target, {})


def test_missing_yaml_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="caloforge compile"):
        build_vertex_job(str(tmp_path / "none.yaml"), VertexTarget("p", "r", "gs://b"), {})
    with pytest.raises(FileNotFoundError, match="none.yaml"):
        submit_kubeflow(str(tmp_path / "none.yaml"), "http://127.0.0.1:1", {})


def test_cli_dry_run_submits_nothing(compiled, capsys):
    rc = main(["submit", "vertex", "--pipeline", compiled, "--project", "p", "--region", "us-central1",
               "--pipeline-root", "gs://b/r", "--param", "preset=full", "--dry-run"])
    assert rc == 0
    assert "'preset': 'full'" in capsys.readouterr().out


def test_cli_rejects_unknown_parameter(compiled, capsys):
    rc = main(["submit", "vertex", "--pipeline", compiled, "--param", "presett=full", "--dry-run"])
    assert rc == 2
    assert "presett" in capsys.readouterr().err
