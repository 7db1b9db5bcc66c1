"""Impossible hardware requests fail at compile time: exit code 2, one line naming the limit, no YAML."""

import json
import os
import subprocess
import sys

import pytest

from pipelines.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (profile fields for a --hardware-file, extra flags, target, message fragment)
BAD_PROFILES = [
    ({"accelerator": "gpu", "gpu_type": "nvidia-tesla-t4", "count": 8}, [], "vertex",
     "nvidia-tesla-t4 comes 1, 2, 4 per machine (n1-* + nvidia-tesla-t4), not count=8"),
    *[({"accelerator": "gpu", "gpu_type": "h100", "count": n}, [], "vertex",
       f"nvidia-h100-80gb comes 8 per machine (a3-highgpu-*), not count={n}") for n in (1, 2, 3, 4)],
    ({"accelerator": "gpu", "gpu_type": "nvidia-l4", "count": 1, "memory_gb": 200}, [], "kubeflow",
     "no machine with 1 x nvidia-l4 gives a pod cpu=0 and memory_gb=200; the largest, g2-standard-32"),
    ({"accelerator": "gpu", "gpu_type": "nvidia-l4", "count": 4, "machine_type": "g2-standard-48", "memory_gb": 190},
     [], "vertex", "g2-standard-48 (48 vCPUs, 192 GB) gives a pod at most"),
    ({"accelerator": "gpu", "gpu_type": "a100", "count": 100}, [], "vertex",
     "not count=100 (more GPUs: several workers)"),
    ({"accelerator": "gpu", "gpu_type": "a100", "count": 3}, [], "kubeflow", "nvidia-tesla-a100 comes 1, 2, 4, 8, 16"),
    ({"accelerator": "tpu", "tpu_version": "v5e", "tpu_topology": "3x3"}, [], "kubeflow",
     "tpu_topology='3x3' is not a TPU v5e slice; valid: 1x1, 2x2, 2x4, 4x4"),
    ({"accelerator": "cpu", "count": 2, "workers": 2}, [], "vertex",
     "accelerator=cpu with count=2 logical CPU devices takes one worker, not workers=2"),
    ({"accelerator": "cpu", "count": 2, "training": {"distribution_strategy": "default"}}, [], "vertex",
     "distribution_strategy='default', cpu_logical_devices=2: TrainConfig.cpu_logical_devices=2 needs strategy 'mirrored'"),
    ({"accelerator": "cpu", "count": 2, "training": {"cpu_logical_devices": 3}}, [], "kubeflow",
     "cpu_logical_devices=3 on hardware profile 'mine': its CPU is split into 2 logical devices"),
    ({"accelerator": "gpu", "gpu_type": "a100", "count": 8, "training": {"cpu_logical_devices": 2}}, [], "vertex",
     "only a cpu profile with count > 1 splits its CPU"),
    ({"accelerator": "gpu", "gpu_type": "gtx480"}, [], "vertex", "gpu_type='gtx480' is not one of nvidia-tesla-t4"),
    ({"accelerator": "tpu", "tpu_version": "v9"}, [], "vertex", "tpu_version='v9' is not one of v3, v4, v5e, v5p"),
    ({"accelerator": "fpga"}, [], "vertex", "accelerator='fpga' is not one of cpu, gpu, tpu"),
    ({"accelerator": "gpu", "gpus": 4}, [], "vertex", "unknown keys ['gpus']"),
    ({"accelerator": "tpu", "tpu_version": "v5e", "count": 8, "tpu_topology": "4x4"}, [], "kubeflow",
     "count=8 chips does not match tpu_topology=4x4 (16 chips)"),
    ({"accelerator": "tpu", "tpu_version": "v5e", "count": 6}, [], "kubeflow", "no TPU v5e slice has count=6 chips"),
    ({"accelerator": "tpu", "tpu_version": "v5e", "tpu_topology": "4x4", "workers": 2}, [], "kubeflow",
     "TPU v5e 4x4 runs on 4 host(s) of 4 chips; workers=2 does not match"),
    ({"accelerator": "tpu", "tpu_version": "v5e", "tpu_topology": "2x4", "machine_type": "ct5lp-hightpu-4t"}, [],
     "kubeflow", "TPU v5e 2x4 runs on ct5lp-hightpu-8t (8 chips per host)"),
    ({"accelerator": "tpu", "tpu_version": "v5p", "tpu_topology": "2x2x1"}, [], "vertex",
     "Vertex AI has no TPU v5p accelerator"),
    ({"accelerator": "tpu", "tpu_version": "v3", "tpu_topology": "4x4"}, [], "vertex",
     "Vertex AI trains on TPU v3 slices 2x2, not 4x4"),
    ({"accelerator": "gpu", "gpu_type": "a100", "count": 8, "training": {"global_batch_size": 100}}, [], "vertex",
     "training.global_batch_size=100 is not divisible by the 8 replicas"),
    ({"accelerator": "gpu", "gpu_type": "a100", "count": 8, "machine_type": "a2-highgpu-4g"}, [], "vertex",
     "machine_type='a2-highgpu-4g' cannot carry 8 x nvidia-tesla-a100; valid: a2-highgpu-8g"),
    ({"accelerator": "gpu", "gpu_type": "v100", "count": 1, "machine_type": "n1-standard-32"}, [], "vertex",
     "machine_type='n1-standard-32' cannot carry 1 x nvidia-tesla-v100"),
    ({"accelerator": "gpu", "gpu_type": "a100", "count": 1, "cpu": 50}, [], "kubeflow",
     "no machine with 1 x nvidia-tesla-a100 gives a pod cpu=50"),
    ({"accelerator": "gpu", "count": -1}, [], "vertex", "must be >= 0"),
    ({"accelerator": "gpu", "workers": 0}, [], "vertex", "workers=0 >= 1"),
    ({"accelerator": "gpu", "retries": -1}, [], "vertex", "retries=-1 must be >= 0"),
    ({"accelerator": "tpu", "gpu_type": "nvidia-l4"}, [], "vertex", "gpu_type='nvidia-l4' needs accelerator=gpu"),
    ({"accelerator": "gpu", "tpu_topology": "2x2"}, [], "vertex", "tpu_version/tpu_topology need accelerator=tpu"),
    ({"accelerator": "gpu", "memory_gb": "lots"}, [], "vertex", "memory_gb='lots' must be a number"),
    ({"accelerator": "gpu", "training": {"batch": 3}}, [], "vertex", "training keys ['batch'] are not pipeline parameters"),
    ({"accelerator": "gpu", "training": {"preset": "ful"}}, [], "vertex", "preset='ful' is not one of full, small"),
]

# (flags, message fragment): built-in profiles with parameter values their hardware cannot take.
BAD_FLAGS = [
    (["--hardware", "tpu-v3-8", "--param", "batch_size_per_replica=12"],
     "batch_size_per_replica=12 on hardware profile 'tpu-v3-8': a TPU per-replica batch must be a multiple of 8"),
    (["--hardware", "gpu-a100-8", "--param", "distribution_strategy=tpu"],
     "distribution_strategy='tpu' cannot run on hardware profile 'gpu-a100-8' (8 replica(s) on 1 worker(s))"),
    (["--hardware", "tpu-v5e-8", "--param", "distribution_strategy=mirrored"], "use one of auto, tpu"),
    (["--hardware", "gpu-a100-8x4", "--param", "distribution_strategy=mirrored"], "use one of auto, multi_worker"),
    (["--hardware", "cpu", "--param", "distribution_strategy=multi_worker"], "cannot run on hardware profile 'cpu'"),
    (["--hardware", "tpu-v3-8", "--param", "precision=mixed_float16"], "TPUs compute in bfloat16"),
    (["--hardware", "gpu-t4-1", "--param", "precision=mixed_bfloat16"], "nvidia-tesla-t4 has no bfloat16 support"),
    (["--hardware", "gpu-a100-9"], "--hardware 'gpu-a100-9' is not a profile; valid: cpu, gpu-t4-1"),
    (["--hardware", "gpu-a100-8", "--accelerator", "gpu"], "--accelerator: give either --hardware/--hardware-file"),
    (["--hardware-file", "missing.yaml"], "--hardware-file missing.yaml: no such file"),
    (["--hardware", "gpu-a100-8", "--param", "preset=ful"], "pipeline parameter preset='ful' is not one of"),
    (["--hardware", "gpu-a100-8", "--param", "strategy=mirrored"],
     "pipeline parameter 'strategy' is now 'distribution_strategy'"),
]

BAD_FILES = [
    ("foo: 1\n", "expected `profiles: {NAME: {accelerator: ..., ...}}` at the top"),
    ("profiles: [a, b\n", "not valid YAML"),
    ("profiles:\n  a: {accelerator: gpu}\n  b: {accelerator: tpu}\n", "holds 2 profiles (a, b); choose one with --hardware NAME"),
]


def _check_one_line(rc, err, message, out_path):
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("caloforge compile: error: "), err
    assert message in err, err
    assert "Traceback" not in err
    assert not out_path.exists()


def _hardware_file(tmp_path, fields):
    path = tmp_path / "hardware.yaml"
    path.write_text(json.dumps({"profiles": {"mine": fields}}))  # JSON is YAML
    return path


@pytest.mark.parametrize("fields,flags,target,message", BAD_PROFILES)
def test_impossible_profile_is_one_line_exit_2(tmp_path, capsys, monkeypatch, fields, flags, target, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p.yaml"
    rc = main(["compile", "--output", str(out), "--target", target, "--hardware-file",
               str(_hardware_file(tmp_path, fields)), "--hardware", "mine", *flags])
    _check_one_line(rc, capsys.readouterr().err, message, out)


@pytest.mark.parametrize("flags,message", BAD_FLAGS)
def test_impossible_parameters_for_a_profile_are_one_line_exit_2(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p.yaml"
    rc = main(["compile", "--output", str(out), *flags])
    _check_one_line(rc, capsys.readouterr().err, message, out)


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_malformed_hardware_file_is_one_line_exit_2(tmp_path, capsys, text, message):
    path = tmp_path / "hardware.yaml"
    path.write_text(text)
    out = tmp_path / "p.yaml"
    rc = main(["compile", "--output", str(out), "--hardware-file", str(path)])
    _check_one_line(rc, capsys.readouterr().err, message, out)


def test_there_are_more_than_thirty_cases():
    assert len(BAD_PROFILES) + len(BAD_FLAGS) + len(BAD_FILES) >= 30


def test_hardware_errors_come_before_kfp_or_tensorflow_load(tmp_path):
    """In a fresh interpreter: the request is refused before the heavy libraries load."""
    hardware = _hardware_file(tmp_path, {"accelerator": "gpu", "gpu_type": "t4", "count": 8})
    commands = [["compile", "--hardware-file", str(hardware), "--output", str(tmp_path / "a.yaml")],
                ["compile", "--hardware", "tpu-v3-8", "--param", "batch_size_per_replica=12",
                 "--output", str(tmp_path / "b.yaml")]]
    code = ("import contextlib, io, json, sys\nfrom pipelines.cli import main\nout = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        rc = main(argv)\n"
            "    out.append([rc, err.getvalue(), [m for m in ('kfp', 'tensorflow') if m in sys.modules]])\n"
            "print(json.dumps(out))\n")
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for rc, err, heavy in json.loads(proc.stdout):
        assert rc == 2 and err.count("\n") == 1 and heavy == [], (rc, err, heavy)
