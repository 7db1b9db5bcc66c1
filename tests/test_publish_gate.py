"""The DAG's gate run by kfp.local: the real publish / skip components behind `dsl.If` on the verdict.

The trainer and the evaluator are stood in by two small components writing the files they
write, so both branches run in seconds; the whole DAG with the gate runs in test_e2e_local.
"""

import json
import os
from typing import NamedTuple

import pytest
from kfp import dsl, local
from kfp.dsl import Artifact, Model, Output

from components import build_components
from pipelines.pipeline import add_publish_gate
from pipelines.run_folder import collect_run


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fake_train(model: Output[Model]):
    import json
    import os

    os.makedirs(os.path.join(model.path, "generator"))
    with open(os.path.join(model.path, "generator", "generator.keras"), "wb") as f:
        f.write(b"weights")
    with open(os.path.join(model.path, "generator", "generator_config.json"), "w") as f:
        json.dump({"latent_dim": 16}, f)
    with open(os.path.join(model.path, "config.json"), "w") as f:
        json.dump({"train_config": {"preset": "tiny"}, "derived": {"config_hash": "c0ffee"}}, f)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fake_evaluate(passed: bool, evaluation: Output[Artifact]) -> NamedTuple("EvaluateOutputs", [("verdict", str)]):
    import collections
    import json
    import os

    os.makedirs(evaluation.path)
    failed = [] if passed else ["fpd_x1e3", "sampling_fraction_mre"]
    metrics = {"verdict": {"passed": passed, "failed": failed, "checks": [{}] * 13},
               "summary": {"generated": {"fpd_x1e3": 3.0}, "noise_floor": {"fpd_x1e3": 1.0}}}
    with open(os.path.join(evaluation.path, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    with open(os.path.join(evaluation.path, "report.html"), "w") as f:
        f.write("<html></html>")
    return collections.namedtuple("EvaluateOutputs", ["verdict"])("PASSED" if passed else "FAILED")


def _gate_pipeline():
    comps = build_components("example.org/caloforge:test")

    class Outputs(NamedTuple):
        model: Model
        evaluation: Artifact
        publication: str

    @dsl.pipeline(name="gate")
    def gate(passed: bool, models_uri: str, model_name: str = "", register_vertex_model: bool = False) -> Outputs:
        trained = fake_train()
        evaluated = fake_evaluate(passed=passed)
        publication = add_publish_gate(
            comps, trained.outputs["model"], evaluated.outputs["evaluation"], evaluated.outputs["verdict"],
            {"models_uri": models_uri, "model_name": model_name, "register_vertex_model": register_vertex_model})
        return Outputs(model=trained.outputs["model"], evaluation=evaluated.outputs["evaluation"],
                       publication=publication)

    return gate


@pytest.fixture
def kfp_local(tmp_path):
    from pipelines.kfp_console import quiet_kfp_local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    with quiet_kfp_local():
        yield _gate_pipeline()


def _collect(task, run_dir, **params):
    outputs = dict(task.outputs)
    publication = json.loads(outputs.pop("publication"))
    artifacts = {name: artifact.path for name, artifact in outputs.items()}
    summary = collect_run(artifacts, str(run_dir), params, 1.0, publication=publication)
    return summary, (run_dir / "index.html").read_text()


def test_a_passed_verdict_publishes_into_the_run_and_to_models_uri(kfp_local, tmp_path):
    task = kfp_local(passed=True, models_uri="")
    summary, index = _collect(task, tmp_path / "run")
    name = summary.publication["name"]
    assert summary.publication["published"] is True and name.startswith("gate-")  # the KFP job name
    model_dir = tmp_path / "run" / "models" / name  # models_uri empty: the step's own artifact, moved
    record = json.loads((model_dir / "publication.json").read_text())
    assert record["run_id"] == name and record["verdict"]["passed"] is True
    assert record["training"]["config_hash"] == "c0ffee"
    assert (model_dir / "generator" / "generator.keras").read_bytes() == b"weights"
    assert f'published</b> to <a href="models/{name}/">models/{name}/</a>' in index
    assert "models" in summary.stages

    dest = tmp_path / "shelf"
    task = kfp_local(passed=True, models_uri=str(dest), model_name="calo-v1")
    summary, index = _collect(task, tmp_path / "run2")
    assert summary.publication["destination"] == str(dest / "calo-v1")
    assert json.loads((dest / "calo-v1" / "publication.json").read_text())["name"] == "calo-v1"
    assert f"published</b> to {dest / 'calo-v1'}" in index
    assert "models" not in summary.stages  # nothing of the model in the run folder's artifact


def test_a_failed_verdict_leaves_the_run_green_and_unpublished(kfp_local, tmp_path):
    dest = tmp_path / "shelf"
    task = kfp_local(passed=False, models_uri=str(dest))  # raise_on_error: a failed step would raise
    summary, index = _collect(task, tmp_path / "run")
    reason = "not published: verdict FAILED (2 of 13 checks failed: fpd_x1e3, sampling_fraction_mre)"
    assert summary.publication == {"published": False, "reason": reason}
    assert not dest.exists() and not (tmp_path / "run" / "models").exists()
    assert f'Model: <b class="FAILED">{reason}</b>' in index
    assert json.loads((tmp_path / "run" / "run.json").read_text())["publication"]["reason"] == reason


def test_a_publication_the_step_must_refuse_fails_the_run(kfp_local, tmp_path):
    """Blessed but not publishable (another model's folder): the run fails, the folder is kept."""
    dest = tmp_path / "shelf"
    (dest / "calo-v1").mkdir(parents=True)
    (dest / "calo-v1" / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="publish-model"):
        kfp_local(passed=True, models_uri=str(dest), model_name="calo-v1")
    assert os.listdir(dest / "calo-v1") == ["mine.txt"]
