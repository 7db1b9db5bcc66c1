"""Measurements the benchmark collector makes itself, beside the trainer's timing records.

- input pipeline: events/s of the training dataset read alone (no model), so a reader that
  cannot keep up with the step shows as the ceiling it is;
- generation: showers/s of the exported generator at several batch sizes, beside the embedded
  Monte Carlo's showers/s (the thing a fast simulation must beat);
- FLOPs: analytic model FLOPs of one training step (trainer.flops).

Each result says what ran, on which device and for how long: these run where the collector
runs, which in a pipeline is usually not the training machine.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from typing import Any, Iterable

import numpy as np

LOG = logging.getLogger(__name__)
BYTES_PER_FLOAT = 4


def collector_device() -> str:
    """Where these measurements run: the first GPU's name if TensorFlow sees one, else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return "gpu:" + tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    from data_prep.provenance import host_info

    model = host_info().get("cpu_model") or platform.machine()
    return f"cpu:{model} ({_cpu_count()} cores)"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def dataset_events_per_second(ds: Iterable, batches: int, batch: int, warmup: int = 3) -> float:
    """Events/s of iterating `ds` alone: `warmup` batches untimed (fill, first reads), then
    `batches` timed; each batch is materialised on the host (one value read)."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    began = time.perf_counter()
    total = 0.0
    for _ in range(batches):
        b = next(it)
        total += float(b["energy"][0])
    return batches * batch / (time.perf_counter() - began)


def input_throughput(manifest_uri: str, batch: int, batches: int) -> dict[str, Any]:
    """The training split's tf.data pipeline (data_prep.dataset.make_dataset) read alone."""
    from data_prep.dataset import make_dataset

    ds = make_dataset(manifest_uri, "train", batch, seed=0)
    rate = dataset_events_per_second(ds, batches, batch)
    return {"events_per_second": rate, "batch": batch, "batches": batches, "device": collector_device(),
            "what": f"data_prep.dataset.make_dataset train split, {batches} batches of {batch} after 3 "
                    "warm-up batches, no model"}


def generator_bytes_per_event(model: Any) -> int:
    """Bytes of every layer output of a functional model for one event: an upper estimate of
    what one forward pass holds (measured on CPU: the small preset at batch 1024 peaked at 9.9 GB
    against 8.7 GB estimated, so it is an estimate, not a bound)."""
    total = 0
    for layer in model.layers:
        try:
            shape = layer.output.shape[1:]
        except (AttributeError, ValueError):
            continue
        if all(d is not None for d in shape):
            total += math.prod(int(d) for d in shape)
    return total * BYTES_PER_FLOAT


def _timed_calls(call, seconds: float) -> tuple[int, float]:
    """One untimed call (tracing, allocation), then calls until `seconds` pass (at least one)."""
    call()
    calls, began = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - began
        if elapsed >= seconds:
            return calls, elapsed


def generation_throughput(generator_dir: str, batch_sizes: Iterable[int], seconds: float,
                          memory_gb: float) -> dict[str, Any]:
    """Showers/s of the exported generator (trainer.export.load_generator(...).generate, raw
    units, power transform inverted) at each batch size.

    A batch size whose estimated memory (generator_bytes_per_event x batch) exceeds `memory_gb`
    is skipped and says so, rather than exhausting the machine.
    """
    from trainer.export import load_generator

    bundle = load_generator(generator_dir)
    per_event = generator_bytes_per_event(bundle.model)
    out: dict[str, Any] = {"device": collector_device(), "preset": bundle.config.get("preset"),
                           "estimated_bytes_per_event": per_event, "batches": {}}
    rng = np.random.default_rng(0)
    for batch in batch_sizes:
        need_gb = per_event * batch / 1e9
        if need_gb > memory_gb:
            out["batches"][str(batch)] = {
                "skipped": f"needs about {need_gb:.1f} GB (estimate), more than generation_memory_gb="
                           f"{memory_gb:g}; raise it on a machine with the memory"}
            continue
        energy = rng.uniform(10.0, 200.0, batch)
        theta = rng.uniform(np.deg2rad(60.0), np.deg2rad(120.0), batch)
        calls, elapsed = _timed_calls(lambda: bundle.generate(energy, theta, seed=1, batch_size=batch), seconds)
        out["batches"][str(batch)] = {"showers_per_second": calls * batch / elapsed, "calls": calls,
                                      "seconds": elapsed}
    return out


def monte_carlo_throughput(image_shape: tuple[int, ...], seconds: float, batch: int = 64) -> dict[str, Any]:
    """Showers/s of the embedded Monte Carlo (data_prep.mc_shower.simulate_showers), one process,
    no file writing: the reference a fast simulation is measured against."""
    from data_prep.mc_shower import ShowerParams, simulate_showers

    rng = np.random.default_rng(0)
    params = ShowerParams()
    energy = rng.uniform(10.0, 200.0, batch)
    theta = rng.uniform(np.deg2rad(60.0), np.deg2rad(120.0), batch)
    grid = tuple(int(d) for d in image_shape[:3])
    calls, elapsed = _timed_calls(lambda: simulate_showers(energy, theta, rng, params, grid=grid), seconds)
    return {"showers_per_second": calls * batch / elapsed, "events": calls * batch, "seconds": elapsed,
            "grid": list(grid), "device": f"cpu, 1 process ({_cpu_count()} cores visible)",
            "what": "data_prep.mc_shower.simulate_showers, no HDF5 writing"}


def training_flops(preset_name: str, generator_updates: int, layers: str) -> dict[str, Any]:
    """FLOPs per event of one training step (trainer.flops.step_flops).

    `model` counts the published architecture's Conv3D and Dense multiply-adds (stock layers,
    the MFU convention); `executed` counts what the trainer's layers run (trainer.layers' fused
    forms do less work for the same function), given when the run used them.
    """
    from trainer.flops import discriminator_flops, generator_flops, step_flops
    from trainer.models import Discriminator, build_generator
    from trainer.presets import get_preset

    preset = get_preset(preset_name)
    g = generator_flops(build_generator(preset, implementation="keras"))
    d = discriminator_flops(Discriminator(preset, implementation="keras"))
    out = {"preset": preset.name, "generator_updates": generator_updates,
           "generator_forward_per_event": g, "discriminator_forward_per_event": d,
           "model_per_event": step_flops(g, d, generator_updates),
           "convention": "2 x multiply-adds of Conv3D and Dense layers; backward = 2 x forward; one step = "
                         "G makes fakes, D trains on real and fake, G trains generator_updates times through D"}
    if layers != "keras":
        g_exec = generator_flops(build_generator(preset, implementation=layers))
        d_exec = discriminator_flops(Discriminator(preset, implementation=layers))
        out["executed_per_event"] = step_flops(g_exec, d_exec, generator_updates)
    return out
