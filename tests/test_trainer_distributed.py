"""Distributed and fault-tolerant training in real processes: MirroredStrategy over two logical
CPUs, MultiWorkerMirroredStrategy with two workers on localhost, and SIGKILL + auto-resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.test_trainer_train import make_tiny_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _finish_all(procs) -> list[dict]:
    """Each worker process's last JSON line, in order; all must exit 0, none is left running."""
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=600)
            assert p.returncode == 0, stderr[-3000:]
            outputs.append(_last_json(stdout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outputs


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tiny_dataset(str(tmp_path_factory.mktemp("trainer_dist_data")))


def _cli(manifest, out, *flags):
    return [sys.executable, "-m", "trainer.train", "--data", manifest, "--output-dir", str(out),
            "--preset", "tiny", "--batch-size-per-replica", "2", "--seed", "9", *flags]


MIRRORED_SCRIPT = r"""
import json, sys
import numpy as np, tensorflow as tf
# TrainConfig.cpu_logical_devices splits the CPU before TensorFlow initialises its devices,
# hence a fresh process; the second and third runs find the split made and keep it.
from trainer.config import TrainConfig
from trainer.inputs import in_memory_dataset_fn
from trainer.train import train
rng = np.random.default_rng(0)
raw = (rng.exponential(1.0, (8, 51, 51, 25)) * (rng.random((8, 51, 51, 25)) < 0.03)).astype(np.float32)
th = rng.uniform(1.1, 2.0, 8).astype(np.float32)
arrays = {"ecal": raw ** 0.85, "energy": rng.uniform(50, 200, 8).astype(np.float32), "theta": th,
          "mtheta": th, "ecal_sum": raw.reshape(8, -1).sum(1)}
out = {}
# auto picks MirroredStrategy over a split CPU as mirrored does.
for loop, strategy in (("custom", "auto"), ("builtin", "mirrored")):
    cfg = TrainConfig(output_dir=sys.argv[1] + "/" + loop, preset="tiny", strategy=strategy, loop=loop,
                      batch_size_per_replica=2, max_steps=2, steps_per_call=2, checkpoint_every=0,
                      lr_scaling="linear", cpu_logical_devices=2)
    r = train(cfg, dataset_fn=in_memory_dataset_fn(arrays))
    out[loop] = {"digest": r.weights_digest, "replicas": r.replicas, "lr": r.learning_rate,
                 "global_batch": r.global_batch_size, "strategy_class": r.extra["strategy_class"]}
try:
    train(TrainConfig(output_dir=sys.argv[1] + "/jit", preset="tiny", strategy="mirrored", jit_compile=True,
                      batch_size_per_replica=2, max_steps=1, cpu_logical_devices=2),
          dataset_fn=in_memory_dataset_fn(arrays))
    out["jit_error"] = ""
except ValueError as err:
    out["jit_error"] = str(err)
from trainer.strategy import HardwareNotFoundError, split_cpu
try:  # the devices are set up: another split cannot be made any more
    split_cpu(3)
    out["resplit_error"] = ""
except HardwareNotFoundError as err:
    out["resplit_error"] = str(err)
print(json.dumps(out))
"""


def test_mirrored_over_two_logical_cpus_both_loops_agree(tmp_path):
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _last_json(proc.stdout)
    for loop in ("custom", "builtin"):
        assert out[loop]["replicas"] == 2 and out[loop]["global_batch"] == 4
        assert out[loop]["strategy_class"] == "MirroredStrategy"
        assert out[loop]["lr"] == pytest.approx(2e-3)  # linear scaling, recorded
    # Bit-exact on purpose: both loops take the same distributed input (2 events per replica),
    # run the same gan_step on the same shapes with the same step-keyed random draws and reduce
    # gradients over the same two replicas, in one process: identical work, so identical bits.
    # (Across batch sizes, replica counts or CPUs only float32 rounding agreement would hold.)
    assert out["custom"]["digest"] == out["builtin"]["digest"]
    # XLA cannot compile one step over several logical CPU devices: refused up front.
    assert "not supported by XLA" in out["jit_error"]
    assert "cpu_logical_devices=3: TensorFlow already initialised" in out["resplit_error"]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_two_processes_finish_with_identical_weights(manifest, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            _cli(manifest, tmp_path / "run", "--strategy", "multi_worker", "--max-steps", "3",
                 "--steps-per-call", "1", "--checkpoint-every", "2", "--snapshot-every", "1"),
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = _finish_all(procs)
    assert [o["is_chief"] for o in outputs] == [True, False]
    assert all(o["steps"] == 3 and o["replicas"] == 2 and o["global_batch_size"] == 4 for o in outputs)
    # Bit-exact on purpose: synchronous replicas start from the same weights and apply the same
    # all-reduced gradients (the reduction's result is shared, not recomputed per worker), so
    # the two workers must hold the very same weights.
    assert outputs[0]["weights_digest"] == outputs[1]["weights_digest"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["extra"]["strategy_class"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")
    ckpts = tmp_path / "run" / "checkpoints"
    assert (ckpts / "ckpt-3.index").exists()
    assert not [n for n in os.listdir(ckpts) if n.startswith(".worker")]  # scratch copies removed
    # Generator snapshots: the chief alone writes them, mid-run too (no collective involved).
    assert sorted(os.listdir(tmp_path / "run" / "snapshots")) == [
        f"step_00000000{s}.{e}" for s in (1, 2, 3) for e in ("json", "npz")]


def test_sigkill_mid_run_then_restart_finishes_with_the_uninterrupted_weights(manifest, tmp_path):
    flags = ["--strategy", "default", "--max-steps", "10", "--steps-per-call", "1",
             "--checkpoint-every", "2", "--deterministic"]
    reference = subprocess.run(_cli(manifest, tmp_path / "reference", *flags), env=_env(),
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = _last_json(reference.stdout)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(manifest, out, *flags), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "checkpoint").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()  # the killed run published nothing as finished

    resumed = subprocess.run(_cli(manifest, out, *flags), env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = _last_json(resumed.stdout)
    assert 0 < result["start_step"] < 10 and result["steps"] == 10
    # Bit-exact on purpose: same machine, same batch, one replica, one step per call, TF op
    # determinism and a seeded ordered input; the resumed steps are the same work on the same
    # shapes as the uninterrupted run's.
    assert result["weights_digest"] == expected["weights_digest"]
