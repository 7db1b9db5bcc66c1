"""TrainConfig: every knob of a 3DGAN training run, JSON-serialisable and mapped 1:1 to CLI flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from data_prep.angle import ANGLE_DEFINITIONS
from data_prep.config_cli import check_choices, choices_field
from data_prep.strict_fields import reject_unknown_keys
from trainer.presets import PRESETS

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LR_SCALINGS = ("none", "linear", "sqrt")
LOOPS = ("custom", "builtin")
LAYERS = ("fused", "keras")  # trainer.models.IMPLEMENTATIONS
ANGLE_KEYS = ("mtheta", "theta")
D_MODES = ("train", "inference")


@dataclass
class TrainConfig:
    """Configuration of one training run; stored as config.json beside its outputs.

    Attributes:
        data: manifest.json of a converted dataset (local path or gs://).
        output_dir: Folder or gs:// prefix receiving checkpoints, generator, timings, summary.
        preset: Model preset name (see trainer.presets.PRESETS).
        strategy: Distribution strategy: auto|default|one_device|mirrored|multi_worker|tpu.
        tpu: TPU for the tpu strategy: 'local' (a TPU VM's own chips; '' means 'local'),
            grpc://HOST:PORT (a TPU worker), or a Cloud TPU name (resolved through the Google
            Cloud metadata server, so refused at once off Google Cloud).
        tpu_connect_timeout: Seconds a grpc:// TPU address may take to answer as a gRPC server
            before the run fails (TensorFlow itself would wait forever).
        cpu_logical_devices: Split the host CPU into this many logical devices before TensorFlow
            starts, one replica each under the mirrored (or auto) strategy; 0 or 1 = one device.
            The devices share the same cores: it exercises the multi-replica code on a machine
            without accelerators (tests, the local scaling sweep), it does not make training faster.
        loop: 'custom' (strategy.run in a tf.function) or 'builtin' (keras fit).
        batch_size_per_replica: Events per replica per step; global batch = this x replicas.
        learning_rate: RMSprop base learning rate before lr_scaling.
        lr_scaling: How the base rate grows with replicas: none|linear|sqrt. Linear by default:
            the published code never scaled it, which silently changes the dynamics with the
            replica count (one replica trains the same under every rule).
        epochs: Passes over the training split (ignored when max_steps > 0).
        steps_per_epoch: Steps per epoch; 0 derives it from the manifest's train count.
        max_steps: If > 0, stop after this many steps in total (tests, benchmarks, demos).
        steps_per_call: Steps per tf.function call (custom) or keras steps_per_execution.
        precision: float32 | mixed_bfloat16 | mixed_float16 (the latter with loss scaling).
        jit_compile: Compile the step with XLA.
        layers: fused (trainer.layers' equivalent fast forms, the default) | keras (the stock
            layers one by one, as the published code; for comparison and debugging).
        angle_key: Batch key used as the angle label (measured 'mtheta' by default).
        energy_scale: Energy label divisor (3DGAN uses E/100).
        loss_weights: Weights of (real/fake BCE, energy MAPE, angle MAE, ECAL-sum MAPE).
        label_flip_prob: Probability of flipping a D label in the D step, drawn afresh per event
            and step: real 1 -> 0 on the real batch and fake 0 -> 1 on the fake batch (as the
            published BitFlip on both batches).
        generator_updates: Generator updates per step (3DGAN trains G twice).
        d_mode_in_g_update: Mode of the discriminator while G trains through it (its weights
            are not updated either way): 'train' (batch statistics and dropout, as published;
            the default) or 'inference' (moving statistics, no dropout). See docs/trainer.md
            for a measured comparison.
        angle_definition: Formula of the discriminator's angle head: 'published' (3DGAN's
            measured angle, the one real files' mtheta follow; the default) or 'slope' (an
            energy-weighted slope; closer to the generated theta on Monte Carlo, but it
            disagrees with a published mtheta label: pair it with --angle-key theta).
        seed: Seed of weights, noise, label flips, dropout and input shuffling.
        deterministic: Enable TF op determinism (bit-exact resume on the same machine, batch
            size and replica count; slower).
        shuffle: Shuffle the training input (deterministically, from seed).
        checkpoint_every: Save a checkpoint every this many steps (0: only at the end).
        keep_checkpoints: Checkpoints kept by the CheckpointManager.
        snapshot_every: Save the generator's weights alone (output_dir/snapshots/, a few MB)
            every this many steps, the candidates of the evaluator's best-epoch selection;
            0: once an epoch (every steps_per_epoch steps, derived from the dataset when not
            set). A snapshot is also taken at the end of the run.
        keep_snapshots: Snapshots kept, the newest by step (3DGAN picks the best of the last
            10 epochs); 0: no snapshots.
        log_every: Progress log / TensorBoard scalars every this many steps.
        empty_check_every: Check generated showers for emptiness every this many calls
            (a call runs steps_per_call steps).
        empty_patience: Stop after this many consecutive checks with empty generated showers.
        empty_threshold: A generated batch whose mean raw ECAL sum is below this is 'empty'.
        overwrite: Replace a run of another preset or dataset found in output_dir (its
            config.json, checkpoints, generator, timings, TensorBoard scalars and summary are
            removed first; nothing else); without it such a folder is refused. A folder holding
            the same preset and dataset is resumed either way.
    """

    # Empty in a bare TrainConfig() (presets, tests, the DAG fill them in); required on the CLI.
    data: str = field(default="", metadata={"path": "input", "required": True})
    output_dir: str = field(default="", metadata={"path": "output", "required": True})
    preset: str = choices_field("small", PRESETS)
    strategy: str = choices_field("auto", STRATEGIES)
    tpu: str = ""
    tpu_connect_timeout: float = 60.0
    cpu_logical_devices: int = 0
    loop: str = choices_field("custom", LOOPS)
    batch_size_per_replica: int = 64
    learning_rate: float = 1e-3
    lr_scaling: str = choices_field("linear", LR_SCALINGS)
    epochs: int = 1
    steps_per_epoch: int = 0
    max_steps: int = 0
    steps_per_call: int = 1
    precision: str = choices_field("float32", PRECISIONS)
    jit_compile: bool = False
    layers: str = choices_field("fused", LAYERS)
    angle_key: str = choices_field("mtheta", ANGLE_KEYS)
    energy_scale: float = 100.0
    loss_weights: tuple[float, float, float, float] = (3.0, 0.1, 25.0, 0.1)
    label_flip_prob: float = 0.05
    generator_updates: int = 2
    d_mode_in_g_update: str = choices_field("train", D_MODES)
    angle_definition: str = choices_field("published", ANGLE_DEFINITIONS)
    seed: int = 0
    deterministic: bool = False
    shuffle: bool = True
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    snapshot_every: int = 0
    keep_snapshots: int = 10
    log_every: int = 10
    empty_check_every: int = 1
    empty_patience: int = 50
    empty_threshold: float = 1e-6
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.loss_weights = tuple(float(w) for w in self.loss_weights)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its value."""
        check_choices(self)  # preset, strategy, loop, lr_scaling, precision, layers, angle_key,
        # d_mode_in_g_update, angle_definition
        positive = ("batch_size_per_replica", "steps_per_call", "generator_updates", "log_every",
                    "keep_checkpoints", "empty_check_every", "empty_patience")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 1")
        for name in ("epochs", "steps_per_epoch", "max_steps", "checkpoint_every", "cpu_logical_devices",
                     "snapshot_every", "keep_snapshots"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 0")
        if self.cpu_logical_devices > 1 and self.strategy not in ("auto", "mirrored"):
            raise ValueError(f"TrainConfig.cpu_logical_devices={self.cpu_logical_devices} needs strategy "
                             f"'mirrored' or 'auto' to use them (strategy={self.strategy!r} would train one "
                             "replica on the first)")
        if not self.tpu_connect_timeout > 0:
            raise ValueError(f"TrainConfig.tpu_connect_timeout={self.tpu_connect_timeout!r} "
                             "must be > 0 seconds")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate={self.learning_rate!r} must be > 0")
        if not 0.0 <= self.label_flip_prob < 1.0:
            raise ValueError(f"TrainConfig.label_flip_prob={self.label_flip_prob!r} must be in [0, 1)")
        if len(self.loss_weights) != 4:
            raise ValueError(f"TrainConfig.loss_weights={self.loss_weights!r} needs 4 values "
                             "(bce, energy, angle, ecal_sum)")
        if self.energy_scale <= 0:
            raise ValueError(f"TrainConfig.energy_scale={self.energy_scale!r} must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["loss_weights"] = list(self.loss_weights)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of to_dict; unknown keys are an error so typos do not pass silently."""
        reject_unknown_keys(cls, data, "TrainConfig")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def scaled_learning_rate(base: float, replicas: int, rule: str) -> float:
    """Learning rate for `replicas` replicas under rule none|linear|sqrt.

    Raises:
        ValueError: for an unknown rule or a replica count < 1.
    """
    if replicas < 1:
        raise ValueError(f"replicas={replicas} must be >= 1")
    if rule == "none":
        return float(base)
    if rule == "linear":
        return float(base) * replicas
    if rule == "sqrt":
        return float(base) * replicas ** 0.5
    raise ValueError(f"lr_scaling={rule!r} is not one of {', '.join(LR_SCALINGS)}")
