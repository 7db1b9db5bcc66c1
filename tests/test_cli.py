"""The caloforge command: stage dispatch, compile with hardware profiles, helpful errors."""

import json

import pytest
import yaml

from pipelines.cli import main


def _train_resources(path):
    # With Kubernetes platform settings the YAML holds a second document (the platform spec).
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    spec = docs[0]
    platform = docs[1] if len(docs) > 1 else {}
    executor = spec["deploymentSpec"]["executors"]["exec-train-gan"]
    return platform, executor["container"].get("resources", {})


def test_stage_command_runs_the_stage(tmp_path):
    out = tmp_path / "mc"
    main(["generate", "--output-dir", str(out), "--n-events", "12", "--events-per-file", "6", "--workers", "1"])
    assert sorted(p.name for p in out.glob("*.h5")) == ["mc_variable_angle_00000.h5", "mc_variable_angle_00001.h5"]


def test_deprecated_hardware_flags_map_onto_a_profile(tmp_path, capsys):
    path = tmp_path / "gpu.yaml"
    rc = main(["compile", "--output", str(path), "--target", "kubeflow", "--accelerator", "gpu",
               "--gpu-type", "nvidia-tesla-v100", "--accelerator-count", "4"])
    assert rc == 0
    assert "--accelerator --accelerator-count --gpu-type are deprecated: use --hardware NAME" in capsys.readouterr().err
    platform, resources = _train_resources(path)
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "4"
    selector = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-gan"]["nodeSelector"]
    assert selector["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-v100"}


def test_compile_from_hardware_file_for_kubeflow_tpu(tmp_path):
    profiles = tmp_path / "hardware.yaml"
    profiles.write_text("profiles:\n  my-v4:\n    accelerator: tpu\n    tpu_version: v4\n    tpu_topology: 2x2x1\n")
    path = tmp_path / "tpu.yaml"
    assert main(["compile", "--output", str(path), "--hardware-file", str(profiles), "--hardware", "my-v4",
                 "--target", "kubeflow"]) == 0
    platform, resources = _train_resources(path)
    assert resources["accelerator"]["resourceType"] == "google.com/tpu"
    assert resources["accelerator"]["resourceCount"] == "4"  # chips of the one v4 host
    selectors = json.dumps(platform)
    assert "cloud.google.com/gke-tpu-topology" in selectors and "2x2x1" in selectors


def test_cpu_compile_requests_no_accelerator(tmp_path):
    path = tmp_path / "cpu.yaml"
    assert main(["compile", "--output", str(path)]) == 0
    _, resources = _train_resources(path)
    assert "accelerator" not in resources


def test_bad_hardware_file_key_is_named(tmp_path, capsys):
    profile = tmp_path / "bad.yaml"
    profile.write_text("profiles:\n  mine:\n    gpus: 4\n")
    assert main(["compile", "--output", str(tmp_path / "x.yaml"), "--hardware-file", str(profile)]) == 2
    assert "gpus" in capsys.readouterr().err


def test_params_prints_defaults(capsys):
    assert main(["params", "--json"]) == 0
    params = json.loads(capsys.readouterr().out)
    assert params["preset"]["default"] == "small" and "mc_events" in params


def test_stage_user_error_is_one_line_with_exit_code_2(tmp_path, capsys):
    """Every stage command runs under the CLI's error handling, not only convert."""
    argv = ["generate", "--output-dir", str(tmp_path / "mc"), "--n-events", "-5"]
    with pytest.raises(SystemExit) as info:  # the stage parser's own one-line usage error
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("caloforge generate: error:")]
    assert len(errors) == 1 and "MonteCarloConfig.n_events must be an integer >= 1, got -5" in errors[0]
    with pytest.raises(SystemExit):
        main([*argv, "-v"])  # --verbose after the stage name too
    assert "Traceback" in capsys.readouterr().err
