"""trainer configuration surface: TrainConfig, the CLI flags, lr scaling and the strategy factory's
errors. (The hardware map moved to pipelines/hardware.py: tests/test_hardware_profiles.py.)"""

import json
import time

import pytest

from trainer.config import TrainConfig, scaled_learning_rate
from trainer.strategy import HardwareNotFoundError, make_strategy
from trainer.train import build_parser


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


def test_default_and_auto_strategies_on_cpu():
    assert make_strategy("default").num_replicas_in_sync == 1
    assert make_strategy("AUTO").num_replicas_in_sync == 1
    assert make_strategy("one_device").num_replicas_in_sync == 1


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
