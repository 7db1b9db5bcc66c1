"""A benchmark.json as rows a person reads: figure, value with unit, and how it was measured.

Used by the run folder's index page (pipelines.run_folder); every row says what was measured,
on which device and over how many steps, and the published rows are labelled as such.
"""

from __future__ import annotations

from typing import Any


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def summary_rows(bench: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, how measured) rows of one benchmark.json, measured figures only."""
    rows: list[tuple[str, str, str]] = []
    fp = bench.get("fingerprint") or {}
    trainer = fp.get("trainer") or {}
    device = trainer.get("device_summary") or bench.get("trainer_device") or "unknown device"
    steps = bench.get("measured_steps")
    over = f"{steps} measured steps on {device}"
    if bench.get("status") == "measured":
        spread = bench.get("step_time") or {}
        rows += [
            ("training throughput", f"{bench['showers_per_second']:.4g} showers/s, {bench['steps_per_second']:.4g} steps/s",
             f"{over}, global batch {bench.get('global_batch')}"),
            ("step time", f"median {spread.get('median', bench.get('seconds_per_step_median')):.4g} s "
                          f"(p25-p75 {spread.get('p25', float('nan')):.4g}-{spread.get('p75', float('nan')):.4g} s, "
                          f"mean {bench['seconds_per_step']:.4g} s)", over),
        ]
        if bench.get("seconds_per_epoch") is not None:
            rows.append(("time per epoch, this dataset", f"{bench['seconds_per_epoch']:.4g} s",
                         f"{bench.get('steps_per_epoch')} steps of {bench.get('train_events')} events x mean step time"))
        rows.append(("time per epoch, published set", f"{bench['seconds_per_epoch_published_set']:.4g} s",
                     f"projected: {bench.get('steps_per_epoch_published_set')} steps of the 124,987-event set x mean "
                     "step time"))
    else:
        rows.append(("training figures", "withheld", str(bench.get("withheld"))))
    warm = bench.get("warmup_step_ranges") or []
    rows.append(("warm-up left out", f"{bench.get('warmup_steps_excluded', 0)} steps",
                 "steps " + (", ".join(f"{a}-{b}" for a, b in warm) or "none")))
    inp = bench.get("input_pipeline") or {}
    if "events_per_second" in inp:
        head = inp.get("headroom_vs_training")
        rows.append(("input pipeline alone", f"{inp['events_per_second']:.4g} events/s"
                     + (f" ({head:.3g} x training)" if head else ""),
                     f"{inp.get('batches')} batches of {inp.get('batch')} on {inp.get('device')}"))
    gen = bench.get("generation") or {}
    for batch, entry in sorted((gen.get("batches") or {}).items(), key=lambda kv: int(kv[0])):
        if "showers_per_second" in entry:
            rows.append((f"generation, batch {batch}", f"{entry['showers_per_second']:.4g} showers/s",
                         f"exported generator, {entry['calls']} calls in {entry['seconds']:.3g} s on {gen.get('device')}"))
        else:
            rows.append((f"generation, batch {batch}", "skipped", entry.get("skipped", "")))
    mc = bench.get("monte_carlo") or {}
    if "showers_per_second" in mc:
        rows.append(("embedded Monte Carlo", f"{mc['showers_per_second']:.4g} showers/s",
                     f"{mc.get('events')} showers, {mc.get('device')}"))
    flops = bench.get("flops") or {}
    if "model_per_step" in flops:
        achieved = flops.get("achieved_model_flops_per_second")
        rows.append(("model FLOPs", _si(flops["model_per_step"], "FLOP") + " per step"
                     + (f", achieved {_si(achieved, 'FLOP/s')}" if achieved else ""),
                     f"analytic count, preset {flops.get('preset')}" + (f"; {over}" if achieved else "")))
    reference = bench.get("reference_comparison") or {}
    fastest = reference.get("fastest_reference")
    if fastest:
        rows.append(("published reference (not ours)",
                     f"{fastest['seconds_per_epoch']:.4g} s per epoch, {fastest['device']} x {fastest['replicas']}",
                     "fastest published 3DGAN row, eval/reference_data; ours is "
                     f"{reference['ratio_to_fastest_reference']:.3g} x its time"))
    return rows


def fingerprint_line(bench: dict[str, Any]) -> str:
    """The fingerprint in one line: profile, devices, strategy, precision, XLA, batches, versions, hash, commit."""
    fp = bench.get("fingerprint") or {}
    t = fp.get("trainer") or {}
    libs = t.get("libraries") or {}
    tf_version = libs.get("tensorflow") or libs.get("tensorflow-cpu")
    parts = [
        f"profile {fp.get('hardware_profile') or 'not recorded'}",
        str(t.get("device_summary")),
        f"strategy {t.get('strategy')} ({t.get('strategy_class')})",
        f"{t.get('replicas')} replicas",
        f"batch {t.get('batch_size_per_replica')}/replica, {t.get('global_batch')} global",
        f"precision {t.get('precision')}",
        f"XLA {t.get('xla')}",
        f"preset {fp.get('preset')}",
        f"config {fp.get('config_hash')}",
        f"TF {tf_version}, Keras {libs.get('keras')}, Beam {libs.get('apache-beam')}, kfp {libs.get('kfp')}",
        f"git {t.get('git_commit') or 'unknown'}",
    ]
    return "; ".join(parts)
