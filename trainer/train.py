"""Entry point of training: train(config) -> TrainResult (the `caloforge train` CLI lives in trainer.cli)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from data_prep import uri
from trainer.checkpointing import Checkpointer, make_checkpoint
from trainer.cli import build_parser, main  # noqa: F401  (python -m trainer.train; older imports)
from trainer.config import TrainConfig, scaled_learning_rate
from trainer.custom_loop import CustomLoop
from trainer.export import export_generator, generator_config
from trainer.gan import GAN
from trainer.inputs import DatasetFn, distributed_input, manifest_dataset_fn
from trainer.models import Discriminator, build_generator
from trainer.output_dir import RunIdentity, dataset_fingerprint, prepare_output_dir
from trainer.presets import get_preset
from trainer.snapshots import SNAPSHOT_DIR, SnapshotWriter
from trainer.steps import StepSettings
from trainer.strategy import device_kind, make_strategy, split_cpu, task_info
from trainer.timings import Progress, TimingLog, config_hash, run_fingerprint, run_identity, write_scalar

log = logging.getLogger("trainer")


class DivergenceError(RuntimeError):
    """Training diverged: non-finite losses, or generated showers empty for too long."""


@dataclass
class TrainResult:
    """What a finished run reports (also written as summary.json by the chief)."""

    output_dir: str
    steps: int
    start_step: int
    epochs: float
    final_losses: dict[str, float]
    wall_seconds: float
    strategy: str
    replicas: int
    global_batch_size: int
    learning_rate: float
    device_kind: str
    generator_dir: str
    weights_digest: str
    is_chief: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DivergenceGuard:
    """Stops a run whose losses are NaN/inf, or whose generated showers stay empty (the
    published code's "MAPE == 100" symptom: an all-zero generator the losses cannot revive)."""

    def __init__(self, patience: int, threshold: float, every: int = 1):
        self.patience = patience
        self.threshold = threshold
        self.every = every
        self.empty_checks = 0
        self.calls = 0

    def check(self, step: int, logs: dict[str, float]) -> None:
        bad = sorted(k for k, v in logs.items() if not math.isfinite(v))
        if bad:
            raise DivergenceError(f"non-finite losses {bad} at step {step}: "
                                  + ", ".join(f"{k}={logs[k]}" for k in bad))
        self.calls += 1
        if self.calls % self.every:
            return
        if logs.get("fake_ecal_sum", 1.0) < self.threshold:
            self.empty_checks += 1
            if self.empty_checks >= self.patience:
                raise DivergenceError(
                    f"generated showers empty (mean ECAL sum {logs['fake_ecal_sum']:.3g} < "
                    f"{self.threshold:g}) for {self.empty_checks} consecutive checks, at step {step}")
        else:
            self.empty_checks = 0


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def _digest(model: keras.Model) -> str:
    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return h.hexdigest()


def _make_optimizer(lr: float, precision: str) -> keras.optimizers.Optimizer:
    opt = keras.optimizers.RMSprop(learning_rate=lr)
    if precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


class _RunHooks:
    """Per-call bookkeeping shared by both loops: timings, guard, progress, TensorBoard, saves."""

    def __init__(self, config: TrainConfig, total: int, start: int, steps_per_epoch: int,
                 global_batch: int, replicas: int, chief: bool, checkpointer: Checkpointer,
                 generator: keras.Model, snapshots: Optional[SnapshotWriter]):
        out = config.output_dir
        self.config = config
        self.generator = generator
        self.snapshots = snapshots  # None: not the chief, or keep_snapshots=0
        self.snapshot_every = config.snapshot_every or steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.global_batch = global_batch
        self.replicas = replicas
        self.chief = chief
        self.checkpointer = checkpointer
        self.timings = TimingLog(uri.join(out, "timings.jsonl"), enabled=chief,
                                 identity=run_identity(config.to_dict()))
        self.guard = DivergenceGuard(config.empty_patience, config.empty_threshold,
                                     config.empty_check_every)
        self.progress = Progress(total, start, global_batch)
        self.writer = tf.summary.create_file_writer(uri.join(out, "tensorboard")) if chief else None
        self.last_saved = start
        self.last_logs: dict[str, float] = {}

    def epoch_of(self, step: int) -> int:
        return max(step - 1, 0) // self.steps_per_epoch

    def after_call(self, step: int, steps: int, seconds: float, logs: dict[str, float]) -> None:
        self.last_logs = logs
        epoch = self.epoch_of(step)
        self.timings.record(step, steps, epoch, seconds, self.global_batch, self.replicas, logs)
        self.guard.check(step, logs)
        every = self.config.log_every
        if (step - steps) // every != step // every:
            log.info(self.progress.line(step, epoch, logs))
            if self.writer is not None:
                with self.writer.as_default():
                    for k, v in logs.items():
                        write_scalar(k, v, step)
                    write_scalar("steps_per_second", steps / seconds, step)
                self.writer.flush()
        ck = self.config.checkpoint_every
        if ck and (step - steps) // ck != step // ck:
            self.save(step)
        se = self.snapshot_every
        if (step - steps) // se != step // se:
            self.snapshot(step)

    def save(self, step: int) -> None:
        if step != self.last_saved or not self.checkpointer.manager.latest_checkpoint:
            self.checkpointer.save(step)
            self.last_saved = step

    def snapshot(self, step: int) -> None:
        """The generator's weights at `step` (chief only; after the step's timing was taken)."""
        if self.snapshots is not None:
            self.snapshots.save(self.generator.get_weights(), step, step / self.steps_per_epoch)

    def close(self) -> None:
        self.timings.flush()
        if self.writer is not None:
            self.writer.close()


def _fit_callback(hooks: _RunHooks, step_var: tf.Variable) -> keras.callbacks.Callback:
    class Hooks(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = time.perf_counter()
            self.s0 = int(step_var.numpy())

        def on_train_batch_end(self, batch, logs=None):
            step = int(step_var.numpy())
            values = {k: float(v) for k, v in (logs or {}).items()}
            hooks.after_call(step, step - self.s0, time.perf_counter() - self.t0, values)

    return Hooks()


def train(config: TrainConfig, dataset_fn: Optional[DatasetFn] = None) -> TrainResult:
    """Train 3DGAN as `config` says, resuming from the latest checkpoint in output_dir.

    Args:
        config: The run's configuration.
        dataset_fn: Optional replacement of the manifest reader, called per input pipeline
            as dataset_fn(input_context, per_replica_batch, start_batch) (benchmarks and tests
            on in-memory arrays; a two-argument one is positioned by skipping); requires
            config.steps_per_epoch or config.max_steps.

    Returns:
        TrainResult; the chief has written config.json, checkpoints/, snapshots/ (unless
        keep_snapshots is 0; trainer.snapshots), generator/, timings.jsonl, tensorboard/ and,
        last, summary.json under config.output_dir.

    Raises:
        ValueError: bad configuration or a dataset whose image shape does not fit the preset.
        trainer.output_dir.OutputDirConflictError (a ValueError): output_dir holds a run of
            another preset or dataset and config.overwrite is not set.
        trainer.strategy.HardwareNotFoundError: the strategy's hardware is absent.
        DivergenceError: non-finite losses or persistently empty generated showers.
    """
    started = time.monotonic()
    config.validate()
    if not config.output_dir:
        raise ValueError("TrainConfig.output_dir is empty")
    split_cpu(config.cpu_logical_devices)  # before anything initialises TensorFlow's devices
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    preset = get_preset(config.preset)
    strategy = make_strategy(config.strategy, config.tpu, config.tpu_connect_timeout,
                             cpu_devices=config.cpu_logical_devices)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size_per_replica * replicas
    lr = scaled_learning_rate(config.learning_rate, replicas, config.lr_scaling)
    task_type, task_id, chief = task_info(strategy)
    try:
        local_devices = len(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has one device and no worker_devices
        local_devices = 1
    if config.jit_compile and local_devices > 1 and device_kind(strategy) == "cpu":
        raise ValueError("jit_compile=True with several replicas on one CPU host is not supported "
                         "by XLA (it places the step on the first device and cannot reach the other "
                         f"replicas' variables); got {local_devices} local CPU replicas")

    steps_per_epoch = config.steps_per_epoch
    fingerprint = "in-memory data (dataset_fn)"
    if dataset_fn is None:
        if not config.data:
            raise ValueError("TrainConfig.data (the dataset's manifest.json) is empty")
        from data_prep.dataset import read_manifest

        manifest = read_manifest(config.data)
        fingerprint = dataset_fingerprint(config.data, manifest.content_hash)
        if tuple(manifest.image_shape) != tuple(preset.image_shape):
            raise ValueError(f"dataset {config.data} has images {tuple(manifest.image_shape)} but "
                             f"preset {preset.name!r} makes {preset.image_shape}")
        n_train = int(manifest.counts.get("train", 0))
        if not steps_per_epoch:
            steps_per_epoch = n_train // global_batch
            if steps_per_epoch < 1:
                raise ValueError(f"dataset {config.data} has {n_train} training events, fewer "
                                 f"than one global batch of {global_batch}")
        dataset_fn = manifest_dataset_fn(config, global_batch)
    elif not steps_per_epoch:
        if not config.max_steps:
            raise ValueError("with dataset_fn, set TrainConfig.steps_per_epoch or max_steps")
        steps_per_epoch = config.max_steps
    total = config.max_steps or config.epochs * steps_per_epoch
    if total < 1:
        raise ValueError(f"nothing to train: max_steps={config.max_steps}, epochs={config.epochs}")

    out = config.output_dir
    # Before anything is written or restored: one run per folder (resume the same run only).
    replaced = prepare_output_dir(out, RunIdentity(preset.name, fingerprint, config.data),
                                  config.overwrite, is_chief=chief)
    if replaced:
        log.warning("output dir %s: replaced the run of another preset or dataset (--overwrite)", out)
    if chief:
        uri.makedirs(out)
    with strategy.scope():
        keras.utils.set_random_seed(config.seed)
        sync_bn = replicas > 1
        generator = build_generator(preset, config.precision, sync_batch_norm=sync_bn,
                                    implementation=config.layers)
        discriminator = Discriminator(preset, config.precision, sync_batch_norm=sync_bn,
                                      implementation=config.layers,
                                      angle_definition=config.angle_definition)
        d_opt = _make_optimizer(lr, config.precision)
        g_opt = _make_optimizer(lr, config.precision)
        # Keras 3 + tf.distribute: optimizer slots must exist before the first strategy.run.
        d_opt.build(discriminator.trainable_variables)
        g_opt.build(generator.trainable_variables)
        step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step",
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    checkpointer = Checkpointer(make_checkpoint(generator, discriminator, d_opt, g_opt, step_var),
                                uri.join(out, "checkpoints"), config.keep_checkpoints,
                                is_chief=chief, task_id=task_id)
    resumed_from = checkpointer.restore_latest()
    start = int(step_var.numpy())
    settings = StepSettings(seed=config.seed, latent_dim=preset.generator.latent_dim,
                            angle_key=config.angle_key, energy_scale=config.energy_scale,
                            loss_weights=tuple(config.loss_weights),
                            label_flip_prob=config.label_flip_prob,
                            generator_updates=config.generator_updates, power=preset.power,
                            d_mode_in_g_update=config.d_mode_in_g_update)
    derived = {
        "replicas": replicas, "global_batch_size": global_batch, "effective_learning_rate": lr,
        "steps_per_epoch": steps_per_epoch, "total_steps": total, "start_step": start,
        "resumed_from": resumed_from, "strategy_class": type(strategy).__name__,
        "task": f"{task_type}:{task_id}", "device_kind": device_kind(strategy),
        "cpu_logical_devices": config.cpu_logical_devices,
        "dataset_fingerprint": fingerprint,
        "generator_params": int(generator.count_params()),
        "discriminator_params": int(discriminator.count_params()),
        "fingerprint": run_fingerprint(strategy), "config_hash": config_hash(config.to_dict()),
    }
    if chief:
        uri.write_text(uri.join(out, "config.json"), json.dumps(
            {"train_config": config.to_dict(), "derived": derived, "seed": config.seed,
             "versions": _versions()}, indent=2, sort_keys=True))
    log.info("preset %s, strategy %s (%d replicas), global batch %d, lr %.3g, steps %d -> %d "
             "(%d per epoch), loop %s", preset.name, type(strategy).__name__, replicas,
             global_batch, lr, start, total, steps_per_epoch, config.loop)

    export_info = {"angle_key": config.angle_key, "energy_scale": config.energy_scale,
                   "seed": config.seed, "precision_trained": config.precision, "versions": _versions()}
    snapshots = None
    if chief and config.keep_snapshots:
        snapshots = SnapshotWriter(
            uri.join(out, SNAPSHOT_DIR), config.keep_snapshots,
            lambda step: generator_config(preset.name, {**export_info, "steps": step}))
        snapshots.prune_after(start)
    hooks = _RunHooks(config, total, start, steps_per_epoch, global_batch, replicas, chief,
                      checkpointer, generator, snapshots)
    try:
        if start < total:
            dist = distributed_input(strategy, dataset_fn, global_batch, start)
            if config.loop == "custom":
                loop = CustomLoop(strategy, generator, discriminator, d_opt, g_opt, settings,
                                  global_batch, step_var, jit_compile=config.jit_compile)
                iterator = iter(dist)
                step = start
                while step < total:
                    n = min(config.steps_per_call, total - step)
                    t0 = time.perf_counter()
                    logs = loop.run(iterator, n)
                    step += n
                    hooks.after_call(step, n, time.perf_counter() - t0, logs)
            else:
                with strategy.scope():
                    gan = GAN(generator, discriminator, settings, global_batch, step_var)
                # fit runs whole executions of steps_per_call steps, then the remainder with
                # a second compile whose input skips the steps already done.
                k = config.steps_per_call
                remaining = total - start
                for n_steps, per_exec in ((remaining // k * k, k), (remaining % k, remaining % k)):
                    if not n_steps:
                        continue
                    done_so_far = int(step_var.numpy())
                    if done_so_far != start:
                        dist = distributed_input(strategy, dataset_fn, global_batch, done_so_far)
                    with strategy.scope():
                        gan.compile(d_opt, g_opt, steps_per_execution=per_exec,
                                    jit_compile=config.jit_compile)
                    gan.fit(dist, epochs=1, steps_per_epoch=n_steps, verbose=0,
                            callbacks=[_fit_callback(hooks, step_var)])
        done = int(step_var.numpy())
        hooks.save(done)
        hooks.snapshot(done)
    finally:
        hooks.close()

    gen_dir = uri.join(out, "generator")
    if chief:
        export_generator(generator, preset.name, gen_dir, {**export_info, "steps": done})
    result = TrainResult(
        output_dir=out, steps=done, start_step=start, epochs=done / steps_per_epoch,
        final_losses=hooks.last_logs, wall_seconds=time.monotonic() - started,
        strategy=config.strategy if config.strategy != "auto" else type(strategy).__name__,
        replicas=replicas, global_batch_size=global_batch, learning_rate=lr,
        device_kind=derived["device_kind"], generator_dir=gen_dir,
        weights_digest=_digest(generator), is_chief=chief,
        extra={"loop": config.loop, "preset": preset.name, "precision": config.precision,
               "strategy_class": derived["strategy_class"], "steps_per_epoch": steps_per_epoch,
               "snapshot_steps": sorted(snapshots.steps) if snapshots is not None else []},
    )
    if chief:
        uri.write_text(uri.join(out, "summary.json"),
                       json.dumps(result.to_dict(), indent=2, sort_keys=True))
    log.info("trained %d steps (%d this run) in %.1f s", done, done - start, result.wall_seconds)
    return result


if __name__ == "__main__":
    sys.exit(main())
