"""trainer configuration surface: TrainConfig, the CLI flags, lr scaling and the strategy factory's
errors. (The hardware map moved to pipelines/hardware.py: tests/test_hardware_profiles.py.)"""

import concurrent.futures
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from trainer.config import TrainConfig, scaled_learning_rate
from trainer.strategy import (TPU_ENV_HINTS, HardwareNotFoundError,
                              check_grpc_endpoint, make_strategy, on_google_cloud, tpu_hinted)
from trainer.train import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_round_trips_through_json():
    cfg = TrainConfig(data="d/manifest.json", output_dir="out", preset="tiny", loss_weights=(1, 2, 3, 4))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.loss_weights == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize("field,value,match", [
    ("strategy", "horovod", "strategy='horovod' is not one of auto, default, one_device, mirrored, multi_worker, tpu"),
    ("precision", "float16", "precision='float16'"),
    ("lr_scaling", "cubic", "lr_scaling='cubic'"),
    ("batch_size_per_replica", 0, "batch_size_per_replica=0"),
    ("label_flip_prob", 1.5, "label_flip_prob=1.5"),
    ("loss_weights", (1.0, 2.0), "loss_weights"),
    ("d_mode_in_g_update", "eval", "d_mode_in_g_update='eval' is not one of train, inference"),
    ("angle_definition", "axis", "angle_definition='axis' is not one of published, slope"),
])
def test_bad_config_values_are_named(field, value, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_unknown_config_key_is_rejected():
    with pytest.raises(ValueError, match="TrainConfig: unknown keys \\[.batchsize.\\]"):
        TrainConfig.from_dict({"batchsize": 3})


def test_defaults_follow_3dgan():
    cfg = TrainConfig()
    assert cfg.loss_weights == (3.0, 0.1, 25.0, 0.1)
    assert cfg.learning_rate == 1e-3 and cfg.batch_size_per_replica == 64
    assert cfg.label_flip_prob == 0.05 and cfg.generator_updates == 2 and cfg.angle_key == "mtheta"
    # G trains through D in training mode; the angle head is the published measured angle.
    assert cfg.d_mode_in_g_update == "train" and cfg.angle_definition == "published"


def test_learning_rate_scaling_rules():
    assert scaled_learning_rate(1e-3, 8, "none") == 1e-3
    assert scaled_learning_rate(1e-3, 8, "linear") == pytest.approx(8e-3)
    assert scaled_learning_rate(1e-3, 4, "sqrt") == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="replicas=0"):
        scaled_learning_rate(1e-3, 0, "none")


def test_cli_flags_map_one_to_one_onto_config_fields():
    parser = build_parser()
    dests = {a.dest for a in parser._actions if a.dest != "help"}
    assert dests == set(TrainConfig().to_dict())
    args = parser.parse_args(["--data", "m.json", "--output-dir", "o", "--preset", "tiny",
                              "--no-shuffle", "--jit-compile", "--loss-weights", "1", "2", "3", "4",
                              "--max-steps", "7"])
    cfg = TrainConfig.from_dict(vars(args))
    assert (cfg.data, cfg.output_dir, cfg.shuffle, cfg.jit_compile, cfg.max_steps) == ("m.json", "o", False, True, 7)
    assert cfg.loss_weights == (1.0, 2.0, 3.0, 4.0)


def test_unknown_strategy_names_the_valid_ones():
    with pytest.raises(ValueError, match="strategy='nccl' is not one of auto, default, one_device, mirrored"):
        make_strategy("nccl")


def test_default_and_auto_strategies_on_cpu(monkeypatch, caplog):
    for name in TPU_ENV_HINTS:
        monkeypatch.delenv(name, raising=False)
    assert make_strategy("default").num_replicas_in_sync == 1
    with caplog.at_level(logging.INFO):
        assert make_strategy("AUTO").num_replicas_in_sync == 1
    # auto on a machine without any sign of a TPU never starts TensorFlow's TPU initialisation.
    assert not tpu_hinted()
    assert "TPU system" not in caplog.text and "strategy auto -> default" in caplog.text
    assert make_strategy("one_device").num_replicas_in_sync == 1


def test_tpu_hints_are_the_variables_tpu_hosts_set(monkeypatch):
    for name in TPU_ENV_HINTS:
        monkeypatch.delenv(name, raising=False)
    assert tpu_hinted("grpc://10.0.0.2:8470") and not tpu_hinted("")
    monkeypatch.setenv("TPU_WORKER_ID", "0")  # set on Cloud TPU VMs and GKE TPU nodes
    assert tpu_hinted("")


@pytest.fixture
def silent_port():
    """A local TCP port that accepts connections (kernel backlog) but never sends a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def closed_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _bounded(fn, seconds):
    """fn() in a thread, failing the test (not hanging it) if it does not return in time."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=_capture(fn)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return box["result"]


def _capture(fn):
    try:
        return fn()
    except Exception as err:  # returned for the test to inspect
        return err


def test_grpc_tpu_address_that_never_answers_times_out_with_a_clear_error(silent_port):
    t0 = time.monotonic()
    err = _bounded(lambda: make_strategy("tpu", tpu=f"grpc://127.0.0.1:{silent_port}",
                                         connect_timeout=2.0), 30)
    assert isinstance(err, HardwareNotFoundError), err
    assert str(err) == (f"TPU address grpc://127.0.0.1:{silent_port} did not answer as a gRPC "
                        "server within 2 s (down, filtered, or not a TPU worker; see "
                        "--tpu-connect-timeout)")
    assert time.monotonic() - t0 < 15


def test_grpc_tpu_address_probe_tells_refused_from_grpc(closed_port):
    with pytest.raises(HardwareNotFoundError, match=f"grpc://127.0.0.1:{closed_port} cannot be reached"):
        check_grpc_endpoint(f"grpc://127.0.0.1:{closed_port}", 5.0)
    with pytest.raises(HardwareNotFoundError, match="is not grpc://HOST:PORT"):
        check_grpc_endpoint("grpc://my-tpu", 5.0)
    # A real gRPC server (grpcio, a TensorFlow dependency) passes the probe.
    grpc = pytest.importorskip("grpc")
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        check_grpc_endpoint(f"grpc://127.0.0.1:{port}", 10.0)
    finally:
        server.stop(None)


def test_named_tpu_off_google_cloud_fails_at_once_in_one_line(monkeypatch, silent_port, closed_port):
    # The metadata server that names resolve through: silent (black-holed) or refusing.
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{silent_port}")
    t0 = time.monotonic()
    assert _bounded(lambda: on_google_cloud(timeout=1.0), 10) is False
    assert time.monotonic() - t0 < 5
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{closed_port}")
    err = _bounded(lambda: make_strategy("tpu", tpu="my-tpu"), 30)
    assert isinstance(err, HardwareNotFoundError), err
    assert "\n" not in str(err)
    assert str(err).startswith("strategy 'tpu' asked for TPU 'my-tpu' by name, which only "
                               f"resolves on Google Cloud (metadata server 127.0.0.1:{closed_port} "
                               "did not answer)")


def test_mirrored_without_gpus_or_logical_cpus_is_a_clear_error():
    with pytest.raises(HardwareNotFoundError, match="needs GPUs or several logical CPU devices"):
        make_strategy("mirrored")


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(HardwareNotFoundError, match="TF_CONFIG"):
        make_strategy("multi_worker")


def test_tpu_strategy_without_a_tpu_fails_fast_and_clearly():
    t0 = time.monotonic()
    with pytest.raises(HardwareNotFoundError, match="strategy 'tpu' asked for TPU 'local'"):
        make_strategy("tpu", tpu="local")
    # Not a timing assertion on speed, only that it did not hang on a network connection.
    assert time.monotonic() - t0 < 120


def test_cli_reports_a_named_tpu_off_google_cloud_in_one_line(tmp_path, closed_port):
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")  # never read: the strategy is made first
    env = {**os.environ, "GCE_METADATA_HOST": f"127.0.0.1:{closed_port}",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TF_CONFIG", None)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "train", "--data", str(manifest),
                           "--output-dir", str(tmp_path / "out"), "--strategy", "tpu", "--tpu", "my-tpu"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "caloforge train: error: strategy 'tpu' asked for TPU 'my-tpu' by name, which only resolves "
        "on Google Cloud")
    assert time.monotonic() - t0 < 120  # TensorFlow's start-up, not a 90 s metadata timeout
