"""Publishing a blessed generator (eval/publish.py): files, provenance, refusals, gs://, Vertex arguments."""

import hashlib
import json
import os

import pytest

from data_prep import uri
from eval.publish import (
    CLAIM_FILE,
    PUBLICATION_FILE,
    PublishConfig,
    PublishRefused,
    not_published_reason,
    publish,
    vertex_upload_arguments,
)
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

CHECKS = [{"name": "sampling_fraction_mre", "passed": True}, {"name": "fpd_x1e3", "passed": True}]


def _metrics(passed: bool) -> dict:
    failed = [] if passed else ["fpd_x1e3", "kpd_x1e3"]
    return {
        "summary": {"passed": passed,
                    "generated": {"sampling_fraction_mre": 0.031, "fpd_x1e3": 2.5, "sep_power.e_sum": 0.1},
                    "noise_floor": {"sampling_fraction_mre": 0.012, "fpd_x1e3": 1.1, "sep_power.e_sum": 0.01}},
        "verdict": {"passed": passed, "failed": failed, "checks": CHECKS + [{"name": "kpd_x1e3"}],
                    "thresholds": {"source": "package:eval/thresholds/default.yaml", "version": 1, "replicas": 20}},
        "counts": {"generated_events": 100},
    }


def _inputs(root, passed=True):
    """A trainer folder and an evaluator folder as the stages write them (small stand-in files)."""
    model = root / "model"
    (model / "generator").mkdir(parents=True)
    (model / "generator" / "generator.keras").write_bytes(b"weights" * 100)
    (model / "generator" / "generator_config.json").write_text(json.dumps({"latent_dim": 16}))
    (model / "config.json").write_text(json.dumps({
        "train_config": {"preset": "tiny"}, "seed": 3,
        "derived": {"config_hash": "abc123def4567890", "fingerprint": {"git_commit": "deadbee"}}}))
    (model / "summary.json").write_text(json.dumps({"steps": 26}))
    (model / "checkpoints").mkdir()
    (model / "checkpoints" / "ckpt-1.index").write_text("not published")
    evaluation = root / "evaluation"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps(_metrics(passed)))
    (evaluation / "report.html").write_text("<html>report</html>")
    return str(model), str(evaluation)


def _config(root, destination, run_id="run-1", **kwargs):
    model, evaluation = _inputs(root) if not (root / "model").exists() else (str(root / "model"), str(root / "evaluation"))
    return PublishConfig(model_dir=model, evaluation_dir=evaluation, destination=destination, run_id=run_id, **kwargs)


def test_publishes_generator_config_metrics_report_with_provenance_last(tmp_path):
    dest_root = tmp_path / "models"
    record = publish(_config(tmp_path, str(dest_root), run_id="caloforge-3dgan-2026-12-02-10-00-00"))
    dest = dest_root / "caloforge-3dgan-2026-12-02-10-00-00"
    assert record["destination"] == str(dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["generator/generator.keras", "generator/generator_config.json", "metrics.json",
                     PUBLICATION_FILE, "report.html", "summary.json", "train_config.json"]
    assert (dest / "generator" / "generator.keras").read_bytes() == b"weights" * 100
    saved = json.loads((dest / PUBLICATION_FILE).read_text())
    assert saved["run_id"] == "caloforge-3dgan-2026-12-02-10-00-00" and saved["name"] == dest.name
    assert saved["verdict"]["passed"] is True and saved["verdict"]["checks"] == 3
    assert saved["training"] == {"config_hash": "abc123def4567890", "git_commit": "deadbee", "preset": "tiny", "seed": 3}
    assert "git_commit" in saved["publisher"]  # this checkout's commit (None outside git)
    assert saved["metrics"]["sampling_fraction_mre"] == {"value": 0.031, "floor": 0.012}
    assert saved["metrics"]["fpd_x1e3"] == {"value": 2.5, "floor": 1.1}
    for rel, entry in saved["files"].items():
        data = (dest / rel).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, rel
    assert PUBLICATION_FILE not in saved["files"]
    # Staged next to the destination and renamed into place: nothing else is left beside it.
    assert sorted(os.listdir(dest_root)) == [dest.name]


def test_a_failed_verdict_is_never_published(tmp_path):
    model, evaluation = _inputs(tmp_path, passed=False)
    config = PublishConfig(model_dir=model, evaluation_dir=evaluation, destination=str(tmp_path / "models"), run_id="r")
    with pytest.raises(ValueError, match=r"unblessed model .*verdict FAILED \(2 of 3 checks failed: fpd_x1e3, kpd_x1e3\)"):
        publish(config)
    assert not (tmp_path / "models").exists()
    assert not_published_reason(_metrics(False)) == "not published: verdict FAILED (2 of 3 checks failed: fpd_x1e3, kpd_x1e3)"


def test_refuses_to_overwrite_foreign_files_or_another_runs_model(tmp_path):
    dest_root = tmp_path / "models"
    foreign = dest_root / "3dgan"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(PublishRefused, match=r"3dgan holds files caloforge did not publish \(notes.txt\)"):
        publish(_config(tmp_path, str(dest_root), model_name="3dgan"))
    assert sorted(os.listdir(foreign)) == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(dest_root)) == ["3dgan"]  # no staging folder left behind

    publish(_config(tmp_path, str(dest_root), run_id="run-1", model_name="v1"))
    first = (dest_root / "v1" / PUBLICATION_FILE).read_text()
    with pytest.raises(PublishRefused, match=r"already holds model 'v1' published by run 'run-1'"):
        publish(_config(tmp_path, str(dest_root), run_id="run-2", model_name="v1"))
    assert (dest_root / "v1" / PUBLICATION_FILE).read_text() == first
    # The same run again (a retried step) replaces its own publication.
    (tmp_path / "evaluation" / "report.html").write_text("<html>second</html>")
    publish(_config(tmp_path, str(dest_root), run_id="run-1", model_name="v1"))
    assert (dest_root / "v1" / "report.html").read_text() == "<html>second</html>"
    assert sorted(os.listdir(dest_root)) == ["3dgan", "v1"]


def test_settings_mistakes_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="model_name='a/b'"):
        PublishConfig(model_name="a/b")
    with pytest.raises(ValueError, match="register_vertex_model needs a gs:// destination"):
        PublishConfig(destination=str(tmp_path), register_vertex_model=True)
    with pytest.raises(ValueError, match="destination is empty"):
        publish(_config(tmp_path, ""))


def test_publishes_to_gcs_with_the_manifest_last_and_refuses_another_run(tmp_path, gcs_bucket):
    root = f"gs://{gcs_bucket}/models"
    uri.write_text(f"gs://{gcs_bucket}/models/other/keep.txt", "someone else's")
    record = publish(_config(tmp_path, root, run_id="run-7"))
    dest = f"{root}/run-7"
    assert record["destination"] == dest
    listed = {u[len(dest) + 1:] for u in uri.list_files(dest)}
    assert listed == {"generator/generator.keras", "generator/generator_config.json", "metrics.json",
                      PUBLICATION_FILE, "report.html", "summary.json", "train_config.json"}  # claim removed
    saved = json.loads(uri.read_text(f"{dest}/{PUBLICATION_FILE}"))
    assert saved["files"]["generator/generator.keras"]["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest()
    assert uri.read_text(f"{root}/other/keep.txt") == "someone else's"
    with pytest.raises(PublishRefused, match="holds files caloforge did not publish"):
        publish(_config(tmp_path, root, run_id="run-8", model_name="other"))
    # A claim left by another run's interrupted publication is not taken over...
    uri.write_text(f"{root}/busy/{CLAIM_FILE}", json.dumps({"run_id": "run-9"}))
    with pytest.raises(PublishRefused, match="being published by run 'run-9'"):
        publish(_config(tmp_path, root, run_id="run-8", model_name="busy"))
    # ... but this run's own is (a retried step finishes its publication).
    uri.write_text(f"{root}/mine/{CLAIM_FILE}", json.dumps({"run_id": "run-8"}))
    uri.write_text(f"{root}/mine/metrics.json", "partial")
    publish(_config(tmp_path, root, run_id="run-8", model_name="mine"))
    assert json.loads(uri.read_text(f"{root}/mine/metrics.json"))["verdict"]["passed"] is True
    assert not uri.exists(f"{root}/mine/{CLAIM_FILE}")


def test_vertex_model_registry_arguments_are_built_without_network(tmp_path):
    config = PublishConfig(model_dir="gs://b/run/model", evaluation_dir="gs://b/run/eval", destination="gs://b/models",
                           run_id="caloforge-3dgan-20261202101500", model_name="calo3dgan", register_vertex_model=True)
    record = {"run_id": config.run_id, "training": {"config_hash": "ABC123", "git_commit": "deadbee"},
              "publisher": {"caloforge": "0.1.0"}}
    args = vertex_upload_arguments(config, record, "gs://b/models/calo3dgan/saved_model",
                                   parent_model="projects/p/locations/europe-west4/models/42",
                                   environ={"CLOUD_ML_PROJECT_ID": "p", "CLOUD_ML_REGION": "europe-west4"})
    assert args["display_name"] == "calo3dgan" and args["artifact_uri"] == "gs://b/models/calo3dgan/saved_model"
    assert args["serving_container_image_uri"].startswith("us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu")
    assert (args["project"], args["location"]) == ("p", "europe-west4")
    assert args["parent_model"] == "projects/p/locations/europe-west4/models/42"
    assert args["labels"] == {"caloforge-run": "caloforge-3dgan-20261202101500", "caloforge-verdict": "passed",
                              "caloforge-config-hash": "abc123", "caloforge-version": "0-1-0"}
    assert "deadbee" in args["version_description"] and "PASSED" in args["version_description"]
    # Every argument is one aiplatform.Model.upload accepts.
    import inspect

    from google.cloud import aiplatform

    assert set(args) <= set(inspect.signature(aiplatform.Model.upload).parameters)
    no_env = vertex_upload_arguments(config, record, "gs://b/x", environ={})
    assert "project" not in no_env and "location" not in no_env and "parent_model" not in no_env
    with pytest.raises(ValueError, match="not gs://"):
        vertex_upload_arguments(config, record, str(tmp_path))


def test_saved_model_export_serves_the_generator(tmp_path):
    """What Vertex AI's TensorFlow container would serve: the generator's latent -> image."""
    import numpy as np

    from data_prep.console import import_quietly

    import_quietly("tensorflow")
    import tensorflow as tf

    from eval.publish import export_saved_model
    from trainer.export import export_generator, load_generator
    from trainer.models import build_generator
    from trainer.presets import get_preset

    export_generator(build_generator(get_preset("tiny")), "tiny", str(tmp_path / "generator"), {})
    files = export_saved_model(str(tmp_path / "generator"), str(tmp_path / "pub" / "saved_model"))
    assert "saved_model/saved_model.pb" in files
    served = tf.saved_model.load(str(tmp_path / "pub" / "saved_model"))
    latent = np.random.default_rng(0).standard_normal((2, 16)).astype("float32")
    want = load_generator(str(tmp_path / "generator")).model(latent, training=False).numpy()
    got = served.serve(latent).numpy()
    assert got.shape == want.shape == (2, 51, 51, 25, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))
