"""Artifact translations used by the components: gs:// URIs for files under a FUSE-mounted path."""

from types import SimpleNamespace

from kfp.dsl import Metrics

from components.artifacts import location, log_scalars, uri_of


def test_files_under_a_gcs_artifact_are_named_by_gs_uri():
    artifact = SimpleNamespace(uri="gs://bucket/root/run/raw_data", path="/gcs/bucket/root/run/raw_data")
    assert uri_of(artifact, "/gcs/bucket/root/run/raw_data/mc_00000.h5") == "gs://bucket/root/run/raw_data/mc_00000.h5"
    assert location(artifact) == "gs://bucket/root/run/raw_data"


def test_local_artifacts_keep_local_paths(tmp_path):
    artifact = SimpleNamespace(uri=str(tmp_path / "raw"), path=str(tmp_path / "raw"))
    assert uri_of(artifact, str(tmp_path / "raw" / "a.h5")) == str(tmp_path / "raw" / "a.h5")
    assert uri_of(artifact, "/elsewhere/b.h5") == "/elsewhere/b.h5"
    assert location(artifact) == str(tmp_path / "raw")


def test_log_scalars_flattens_one_level_and_skips_non_numbers(tmp_path):
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    log_scalars(metrics, {"a": 1, "b": True, "c": "text", "d": {"e": 2.5, "f": {"g": 1}}})
    assert metrics.metadata == {"a": 1.0, "b": 1.0, "d.e": 2.5}


def test_every_figure_is_logged_beside_its_noise_floor(tmp_path):
    from components.artifacts import log_with_floor

    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    log_with_floor(metrics, {"fpd_x1e3": 2.5, "sep_power.e_sum": 0.1, "kpd_x1e3": None, "note": "x", "n": 3},
                   {"fpd_x1e3": 1.1, "sep_power.e_sum": 0.01, "kpd_x1e3": 0.7})
    assert metrics.metadata == {"fpd_x1e3": 2.5, "fpd_x1e3_floor": 1.1, "sep_power.e_sum": 0.1,
                                "sep_power.e_sum_floor": 0.01, "n": 3.0}
