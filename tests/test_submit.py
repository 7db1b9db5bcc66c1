"""Submission: the jobs a user submits, built offline, and sent through the real clients
(google-cloud-aiplatform over REST, kfp.Client) to a recording HTTP server on 127.0.0.1."""

import pytest
from google.auth.credentials import AnonymousCredentials
from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component
from kfp import compiler, dsl, kubernetes

from pipelines.cli import main
from pipelines.compiler import compile_pipeline
from pipelines.submit import (VertexTarget, build_vertex_job, compiled_target, parse_labels, submit_kubeflow,
                              version_label_value)
from pipelines.version import VERSION
from tests.recording_server import RecordingServer

VERSION_LABEL_VALUE = version_label_value(VERSION)


# --- small compiled pipelines, one per target, with the parts a submission must carry ------------

@dsl.component(base_image="python:3.11-slim")
def train(epochs: int, preset: str, learning_rate: float, jit_compile: bool) -> str:
    return preset


@dsl.component(base_image="python:3.11-slim")
def report(model: str) -> str:
    return model


# A chief and three workers of 8 A100 each: what a multi-node Vertex profile compiles to.
_TrainJob = create_custom_training_job_from_component(
    train, display_name="train", replica_count=4, machine_type="a2-highgpu-8g",
    accelerator_type="NVIDIA_TESLA_A100", accelerator_count=8)


@dsl.pipeline(name="caloforge-3dgan")
def _vertex_pipeline(preset: str = "small", epochs: int = 1, learning_rate: float = 0.001, jit_compile: bool = False,
                     compile_target: str = "vertex"):
    trained = _TrainJob(epochs=epochs, preset=preset, learning_rate=learning_rate, jit_compile=jit_compile)
    report(model=trained.outputs["Output"])


@dsl.pipeline(name="caloforge-3dgan")
def _kubeflow_pipeline(preset: str = "small", epochs: int = 1, learning_rate: float = 0.001, jit_compile: bool = False,
                       compile_target: str = "kubeflow"):
    trained = train(epochs=epochs, preset=preset, learning_rate=learning_rate, jit_compile=jit_compile)
    kubernetes.add_node_selector(trained, "cloud.google.com/gke-accelerator", "nvidia-tesla-a100")
    kubernetes.add_pod_label(trained, "team", "compiled")
    report(model=trained.output)


@dsl.pipeline(name="caloforge-3dgan")
def _unrecorded_pipeline(preset: str = "small", epochs: int = 1):
    train(epochs=epochs, preset=preset, learning_rate=0.001, jit_compile=False)


@dsl.pipeline(name="caloforge-3dgan",
              description='Demo. caloforge-compiled: {"hardware": {"name": "cpu"}, "target": "kubeflow", "version": "0.1.0"}')
def _described_pipeline(preset: str = "small", epochs: int = 1):
    train(epochs=epochs, preset=preset, learning_rate=0.001, jit_compile=False)


@pytest.fixture(autouse=True)
def _not_verbose(monkeypatch):
    # A `-v` test elsewhere leaves CALOFORGE_VERBOSE=1 in os.environ; these tests read the quiet console.
    monkeypatch.delenv("CALOFORGE_VERBOSE", raising=False)


@pytest.fixture(scope="module")
def yamls(tmp_path_factory):
    folder = tmp_path_factory.mktemp("yamls")
    out = {}
    for name, pipeline in (("vertex", _vertex_pipeline), ("kubeflow", _kubeflow_pipeline), ("none", _unrecorded_pipeline),
                           ("described", _described_pipeline)):
        out[name] = str(folder / f"{name}.yaml")
        compiler.Compiler().compile(pipeline, out[name])
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return compile_pipeline(str(tmp_path_factory.mktemp("yaml") / "p.yaml"))


def _vertex_args(path, server, *extra):
    return ["submit", "vertex", "--pipeline", path, "--project", "my-project", "--region", "europe-west4",
            "--pipeline-root", "gs://my-bucket/root", "--api-endpoint", server.url, *extra]


def _kubeflow_args(path, server, *extra):
    return ["submit", "kubeflow", "--pipeline", path, "--host", server.url, *extra]


def _tasks(spec):
    """Every task of the spec (root DAG and sub-DAGs)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    return [task for dag in dags for task in dag["tasks"].values()]


# --- the job, built offline ----------------------------------------------------------------------

def test_vertex_job_carries_parameters_and_root(compiled):
    target = VertexTarget(project="my-project", region="europe-west4", pipeline_root="gs://bucket/root")
    job = build_vertex_job(compiled, target, {"preset": "full", "epochs": 60}, credentials=AnonymousCredentials())
    runtime = job._gca_resource.runtime_config
    assert runtime.gcs_output_directory == "gs://bucket/root"
    assert runtime.parameter_values["preset"] == "full"
    assert runtime.parameter_values["epochs"] == 60
    assert job._gca_resource.display_name == "caloforge"
    assert dict(job._gca_resource.labels) == {"caloforge-version": VERSION_LABEL_VALUE}


@pytest.mark.parametrize(
    "target,message",
    [
        (VertexTarget("", "europe-west4", "gs://b/r"), "--project"),
        (VertexTarget("p", "", "gs://b/r"), "--region"),
        (VertexTarget("p", "europe-west4", "/local/root"), "gs://"),
        (VertexTarget("p", "europe-west4", "gs://b/r", experiment="My_Exp"), "--experiment 'My_Exp'"),
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


def test_compiled_target_reads_the_root_parameter_default(yamls):
    assert compiled_target(yamls["vertex"]) == "vertex"
    assert compiled_target(yamls["kubeflow"]) == "kubeflow"
    assert compiled_target(yamls["none"]) is None
    assert compiled_target(yamls["described"]) == "kubeflow"  # the description's record, when no parameter


def test_the_description_record_is_enforced_too(yamls, capsys):
    rc = main(["submit", "vertex", "--pipeline", yamls["described"], "--project", "p", "--region", "r",
               "--pipeline-root", "gs://b/r", "--dry-run"])
    assert rc == 2
    assert "described.yaml was compiled for kubeflow, not vertex" in capsys.readouterr().err


# --- Vertex AI through the real client, over REST, to the recording server -----------------------

def test_vertex_submission_sends_the_whole_job(yamls, monkeypatch, capsys):
    with RecordingServer() as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)  # aiplatform checks the root's bucket
        rc = main(_vertex_args(yamls["vertex"], server, "--param", "preset=full", "--param", "epochs=60",
                               "--param", "learning_rate=0.002", "--param", "jit_compile=true",
                               "--service-account", "runner@my-project.iam.gserviceaccount.com",
                               "--labels", "team=calo,purpose=bench", "--experiment", "calo-exp"))
        out = capsys.readouterr().out
        assert rc == 0
        [create] = server.find("POST", r"/v1/projects/my-project/locations/europe-west4/pipelineJobs$")
        body = create.body
        assert "Authorization" not in create.headers  # a plain-http endpoint never gets a token
        runtime = body["runtimeConfig"]
        assert runtime["gcsOutputDirectory"] == "gs://my-bucket/root"
        values = runtime["parameterValues"]
        assert set(values) == {"preset", "epochs", "learning_rate", "jit_compile"}  # only what was given
        assert values["preset"] == "full"
        assert isinstance(values["epochs"], (int, float)) and values["epochs"] == 60
        assert isinstance(values["learning_rate"], float) and values["learning_rate"] == pytest.approx(0.002)
        assert values["jit_compile"] is True
        assert body["serviceAccount"] == "runner@my-project.iam.gserviceaccount.com"
        assert body["labels"] == {"team": "calo", "purpose": "bench", "caloforge-version": VERSION_LABEL_VALUE}
        # Caching as compiled (on) unless --no-cache: no submission-time override.
        assert [t["cachingOptions"]["enableCache"] for t in _tasks(body["pipelineSpec"])] == [True, True]
        pools = body["pipelineSpec"]["components"]["comp-train"]["inputDefinitions"]["parameters"][
            "worker_pool_specs"]["defaultValue"]
        assert [p["replica_count"] for p in pools] == [1, 3]  # chief + 3 workers
        assert {(p["machine_spec"]["machine_type"], p["machine_spec"]["accelerator_type"],
                 p["machine_spec"]["accelerator_count"]) for p in pools} == {("a2-highgpu-8g", "NVIDIA_TESLA_A100", 8)}
        # The experiment is created and the run filed under it.
        job_id = create.query["pipelineJobId"][0]
        assert server.find("POST", r"/metadataStores/default/contexts$")[0].body["schemaTitle"] == "system.Experiment"
        [child] = server.find("POST", r"/contexts/calo-exp:addContextChildren$")
        assert child.body["childContexts"] == [
            f"projects/my-project/locations/europe-west4/metadataStores/default/contexts/{job_id}"]
    assert f"run id: {job_id}\n" in out
    assert (f"console: https://console.cloud.google.com/vertex-ai/locations/europe-west4/pipelines/runs/{job_id}"
            f"?project=my-project\n") in out


def test_vertex_no_cache_turns_caching_off_for_every_task(yamls, monkeypatch, capsys):
    with RecordingServer() as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        assert main(_vertex_args(yamls["vertex"], server, "--no-cache")) == 0
        [create] = server.find("POST", r"/pipelineJobs$")
        assert [t["cachingOptions"].get("enableCache", False) for t in _tasks(create.body["pipelineSpec"])] == [False, False]
        assert "serviceAccount" not in create.body and create.body["runtimeConfig"].get("parameterValues", {}) == {}


# --- Kubeflow through kfp.Client to the recording server ------------------------------------------

def test_kubeflow_submission_sends_the_whole_run(yamls, tmp_path, capsys):
    original = open(yamls["kubeflow"], encoding="utf-8").read()
    with RecordingServer() as server:
        rc = main(_kubeflow_args(yamls["kubeflow"], server, "--param", "preset=full", "--param", "epochs=60",
                                 "--param", "jit_compile=true", "--service-account", "pipeline-runner",
                                 "--labels", "team=calo", "--pipeline-root", "gs://my-bucket/kf", "--no-cache"))
        out = capsys.readouterr().out
        assert rc == 0
        [experiment] = server.find("POST", r"^/apis/v2beta1/experiments$")
        assert experiment.body["display_name"] == "caloforge"
        [create] = server.find("POST", r"^/apis/v2beta1/runs$")
        body = create.body
        assert body["experiment_id"] == "exp-1"
        assert body["service_account"] == "pipeline-runner"
        assert body["runtime_config"] == {"parameters": {"preset": "full", "epochs": 60, "jit_compile": True},
                                          "pipeline_root": "gs://my-bucket/kf"}
        assert [t["cachingOptions"].get("enableCache", False) for t in _tasks(body["pipeline_spec"]["pipeline_spec"])] \
            == [False, False]
        executors = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert sorted(executors) == ["exec-report", "exec-train"]
        for config in executors.values():  # labels on every pod; a submitted label wins over a compiled one
            assert config["podMetadata"]["labels"] == {"team": "calo", "caloforge-version": VERSION_LABEL_VALUE}
        assert executors["exec-train"]["nodeSelector"] == {"labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}}
    assert out.splitlines()[-2:] == ["run id: run-1", f"console: {server.url}/#/runs/details/run-1"]
    assert open(yamls["kubeflow"], encoding="utf-8").read() == original  # the user's YAML is left as compiled


# --- --wait ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["vertex", "kubeflow"])
@pytest.mark.parametrize("final,rc", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_wait_follows_the_run_to_its_end(yamls, backend, final, rc, monkeypatch, capsys):
    with RecordingServer(states=["PENDING", "RUNNING", "RUNNING", final], error_message="train: exit code 137 (OOMKilled)") as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        args = (_vertex_args if backend == "vertex" else _kubeflow_args)(yamls[backend], server, "--wait", "--poll-seconds", "0.02")
        assert main(args) == rc
        looks = server.find("GET", r"/pipelineJobs/|/runs/")
    captured = capsys.readouterr()
    run_id = captured.out.split("run id: ", 1)[1].split("\n", 1)[0]
    states = [line.rsplit(": ", 1)[1] for line in captured.out.splitlines() if line.startswith("[")]
    assert states == ["PENDING", "RUNNING", final]  # each change once, in order
    assert len(looks) == 4
    messages = [line for line in captured.err.splitlines() if line.startswith("caloforge submit:")]
    assert "Traceback" not in captured.err
    if final == "FAILED":
        [message] = messages
        assert message.startswith(f"caloforge submit: run {run_id} ended FAILED: train: exit code 137 (OOMKilled)")
    else:
        assert messages == []


def test_wait_survives_a_failed_look(yamls, capsys):
    with RecordingServer(states=["RUNNING", "HTTP500", "RUNNING", "SUCCEEDED"]) as server:
        assert main(_kubeflow_args(yamls["kubeflow"], server, "--wait", "--poll-seconds", "0.02")) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split("run-1: ", 1)[1][:24] for line in lines] == [
        "RUNNING", "could not read its state", "SUCCEEDED"]


def test_wait_gives_up_after_failed_looks_in_a_row(yamls, capsys):
    with RecordingServer(states=["RUNNING", "HTTP500"]) as server:
        with pytest.raises(Exception, match="500"):
            main(_kubeflow_args(yamls["kubeflow"], server, "--wait", "--poll-seconds", "0.01"))
        assert len(server.find("GET", r"/runs/run-1$")) == 6  # one good look, then five failed ones


# --- what is refused before anything is sent ------------------------------------------------------

@pytest.mark.parametrize(
    "yaml_name,backend,message",
    [
        ("vertex", "kubeflow", "vertex.yaml was compiled for vertex, not kubeflow: compile it again with `caloforge compile --target kubeflow`"),
        ("kubeflow", "vertex", "kubeflow.yaml was compiled for kubeflow, not vertex: compile it again with `caloforge compile --target vertex`"),
    ],
)
def test_a_yaml_for_the_other_target_is_refused(yamls, yaml_name, backend, message, monkeypatch, capsys):
    with RecordingServer() as server:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        args = (_vertex_args if backend == "vertex" else _kubeflow_args)(yamls[yaml_name], server)
        assert main(args) == 2
        assert server.requests == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_yaml_without_target_record_is_submitted_with_a_warning(yamls, capsys):
    with RecordingServer() as server:
        assert main(_kubeflow_args(yamls["none"], server)) == 0
        assert len(server.find("POST", r"^/apis/v2beta1/runs$")) == 1
    assert "warning: " in capsys.readouterr().err


def test_a_kubernetes_platform_spec_is_refused_by_vertex_even_without_target(yamls, tmp_path, capsys):
    text = open(yamls["kubeflow"], encoding="utf-8").read().replace("defaultValue: kubeflow", "defaultValue: ''")
    (tmp_path / "k.yaml").write_text(text)
    rc = main(["submit", "vertex", "--pipeline", str(tmp_path / "k.yaml"), "--project", "p", "--region", "r",
               "--pipeline-root", "gs://b/r", "--dry-run"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Kubernetes platform spec" in err and "--target vertex" in err


@pytest.mark.parametrize(
    "labels,message",
    [
        ("Team=calo", "--labels key 'Team'"),
        ("team=Calo", "--labels team='Calo'"),
        ("team", "--labels 'team': expected KEY=VALUE"),
        ("team=calo,team=hep", "--labels team: given twice"),
        ("caloforge-version=9", "--labels caloforge-version: set by caloforge itself"),
        ("team=calo-", "--labels team='calo-'"),
        ("1team=calo", "--labels key '1team'"),
    ],
)
def test_bad_labels_are_refused_in_one_line(yamls, labels, message, capsys):
    rc = main(["submit", "kubeflow", "--pipeline", yamls["kubeflow"], "--host", "http://127.0.0.1:1",
               "--labels", labels, "--dry-run"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_labels_parse_and_the_version_label():
    assert parse_labels("team=calo, purpose=bench,empty=") == {"team": "calo", "purpose": "bench", "empty": ""}
    assert parse_labels(None) == {}
    assert version_label_value("1.2.3rc1") == "1-2-3rc1"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--param", "mc_events=10"], "has no pipeline parameter mc_events"),
        (["--poll-seconds", "0", "--wait"], "--poll-seconds 0.0: must be > 0"),
        (["--host", "localhost:8080"], "--host 'localhost:8080': give the scheme"),
    ],
)
def test_kubeflow_mistakes_are_named_before_anything_is_sent(yamls, argv, message, capsys):
    with RecordingServer() as server:
        args = ["submit", "kubeflow", "--pipeline", yamls["kubeflow"]]
        if "--host" not in argv:
            args += ["--host", server.url]
        assert main(args + argv) == 2
        assert server.requests == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_not_a_pipeline_yaml_is_named(tmp_path, capsys):
    (tmp_path / "x.yaml").write_text("a: [1, 2\n")
    (tmp_path / "y.yaml").write_text("name: not a pipeline\n")
    for name, message in (("x.yaml", "not a YAML file"), ("y.yaml", "not a compiled KFP pipeline")):
        rc = main(["submit", "kubeflow", "--pipeline", str(tmp_path / name), "--host", "http://127.0.0.1:1", "--dry-run"])
        assert rc == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and name in err
