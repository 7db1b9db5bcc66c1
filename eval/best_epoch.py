"""Best-epoch selection: score the trainer's generator snapshots cheaply, evaluate the best one.

The published 3DGAN analysis (svalleco/3Dgan, keras/analysis) does not judge the last epoch's
generator: it computes, for each epoch's generator, the mean relative error of the sampling
fraction over energy bins against Monte Carlo and keeps the generator with the lowest value
among the last ten epochs. Here the candidates are the trainer's snapshots (trainer/snapshots.py,
once an epoch by default) and its final generator; each generates showers for Monte Carlo half
B's conditions with the evaluation's seed (the very showers the full evaluation would make) and
is scored with ``eval.metrics.sampling_fraction_mre`` against half A, the definition the full
evaluation reports as ``sampling_fraction_mre``. The score needs per-event sampling fractions
only: the Monte Carlo halves' are taken while the evaluator streams the Monte Carlo once, and
each candidate generates half B's showers chunk by chunk (the chunks the streaming evaluation
uses, on one noise stream), keeps each shower's sum and drops the shower; so scoring costs one
generation pass per candidate, no features, and memory that does not grow with the showers. The full evaluation then runs
on the chosen generator, and the scores go into metrics.json:

- ``selected_generator``: ``step``, ``epoch``, ``kind`` ("snapshot" or "final"), ``source``
  (the snapshot's json or the trainer's generator folder), ``path`` (the copy of the chosen
  generator in the evaluation's own ``generator/`` folder: generator.keras +
  generator_config.json, loadable with trainer.export.load_generator; what a publish step
  copies; ``relative_path``: the same, relative to the evaluation folder, which stays right
  when the folder is moved) and ``selected_by``.
- ``snapshot_selection``: ``metric``, ``best_of_last``, ``noise_floor`` (the same score for Monte
  Carlo half B: what a perfect generator gets), ``selected_step`` and ``series``: one row per
  candidate in step order (``step``, ``epoch``, ``kind``, ``source``,
  ``sampling_fraction_mre``, ``selected``), the training curve of the score.
"""

from __future__ import annotations

import html
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from data_prep import uri
from eval.features import ECAL_TO_DEPOSIT
from eval.metrics import BinningConfig, sampling_fraction_mre

LOG = logging.getLogger(__name__)

METRIC = "sampling_fraction_mre"
GENERATOR_DIR = "generator"


@dataclass
class Candidate:
    """One generator the selection may choose.

    Attributes:
        step: Training step of its weights (None: unknown, e.g. an export without ``steps``).
        epoch: Epochs done at that step (None when unknown).
        kind: "snapshot" or "final" (the trainer's exported generator).
        source: The snapshot's json, or the generator folder.
        load: Returns the trainer.export.GeneratorBundle.
        config: Its generator_config fields.
    """

    step: Optional[int]
    epoch: Optional[float]
    kind: str
    source: str
    load: Callable[[], Any]
    config: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {"step": self.step, "epoch": self.epoch, "kind": self.kind, "source": self.source}


def snapshots_beside(generator_dir: str) -> str:
    """The snapshots/ folder of the training run whose generator/ folder is `generator_dir`."""
    from trainer.snapshots import SNAPSHOT_DIR

    trimmed = generator_dir.rstrip("/")
    parent = trimmed.rsplit("/", 1)[0] if uri.is_gcs(trimmed) else os.path.dirname(trimmed)
    return uri.join(parent, SNAPSHOT_DIR)


def find_candidates(final_dir: str, final_bundle: Any, snapshots_dir: str, last: int) -> list[Candidate]:
    """The final generator and the snapshots in `snapshots_dir`, the last `last` of them by step.

    A snapshot at the final generator's step is the final generator (same weights): it counts
    once, as the final one. A final generator whose config has no ``steps`` comes last.

    Raises:
        ValueError: a snapshot of another preset, image shape or conditioning angle than the
            final generator (snapshots of another run), naming it.
    """
    from trainer.snapshots import list_snapshots, load_snapshot

    final_config = final_bundle.config
    final_step = final_config.get("steps")
    final_step = int(final_step) if final_step is not None else None
    out = []
    snapshots = list_snapshots(snapshots_dir)
    for snap in snapshots:
        for key in ("preset", "image_shape", "angle_key"):
            if snap.generator_config.get(key) != final_config.get(key, snap.generator_config.get(key)):
                raise ValueError(
                    f"snapshot {snap.json_uri} has {key} {snap.generator_config.get(key)!r} but the generator "
                    f"{final_dir} has {final_config.get(key)!r}: snapshots of another run; give --snapshots-dir "
                    "of this run or --no-select-best")
        if snap.step == final_step:
            continue
        out.append(Candidate(snap.step, snap.epoch, "snapshot", snap.json_uri,
                             lambda s=snap: load_snapshot(s), dict(snap.generator_config)))
    epoch = None
    if final_step is not None:
        same = [s for s in snapshots if s.step == final_step]
        epoch = same[0].epoch if same else None
    out.append(Candidate(final_step, epoch, "final", final_dir, lambda: final_bundle, dict(final_config)))
    out.sort(key=lambda c: (c.step is None, c.step or 0))
    return out[-last:]


def sampling_fractions(ecal_raw: np.ndarray, index: np.ndarray, energy: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Per-event sampling fraction (raw sum / 50 / E) of ``ecal_raw[index]``, chunk by chunk (no copy of the half)."""
    sums = np.empty(index.size)
    for start in range(0, index.size, chunk):
        sums[start:start + chunk] = np.asarray(ecal_raw[index[start:start + chunk]]).sum(axis=(1, 2, 3), dtype=np.float64)
    return sums * ECAL_TO_DEPOSIT / np.asarray(energy, dtype=np.float64)


@dataclass
class Selection:
    """The outcome: the chosen candidate and the score of every candidate."""

    chosen: Candidate
    series: list[dict]
    noise_floor: float
    scored: bool  # False: one candidate, chosen without generating (its score comes from the full evaluation)
    rule: str = ""  # how it was chosen, when not by the score (metrics' `selected_by`)

    def metrics(self, path: str, best_of_last: int, relative_path: str = GENERATOR_DIR) -> dict:
        """``selected_generator`` and ``snapshot_selection`` for metrics.json.

        Args:
            path: Where the chosen generator was copied (write_generator).
            best_of_last: The rule's window (EvalConfig.best_of_last).
            relative_path: ``path`` relative to the evaluation folder.
        """
        n = len(self.series)
        rule = self.rule or (f"lowest {METRIC} among the last {best_of_last} generators (snapshots and final)"
                             if n > 1 else "the only candidate: no snapshots")
        return {
            "selected_generator": {**self.chosen.row(), "path": path, "relative_path": relative_path,
                                   "selected_by": rule},
            "snapshot_selection": {
                "metric": METRIC,
                "best_of_last": best_of_last,
                "candidates": n,
                "noise_floor": self.noise_floor,
                "selected_step": self.chosen.step,
                "series": self.series,
            },
        }

    def fill_from_full_evaluation(self, value: float, noise_floor: Optional[float] = None) -> None:
        """The chosen candidate's score (and, when not measured before, the floor's) as the full evaluation measured it."""
        if noise_floor is not None and not math.isfinite(self.noise_floor):
            self.noise_floor = noise_floor
        for row in self.series:
            if row["selected"] and row[METRIC] is None:
                row[METRIC] = value


def generated_sampling_fractions(
    bundle: Any, energy: np.ndarray, angle: np.ndarray, seed: int, batch_size: int,
    chunks: Optional[list[int]] = None,
) -> np.ndarray:
    """Per-event sampling fractions of the showers `bundle` makes for (energy, angle), chunk by chunk.

    The chunks (default: ``batch_size`` events each) share one noise stream
    (``np.random.default_rng(seed)`` passed on from call to call, as eval.evaluate.generator_function
    does), so event i gets the noise row one call for all events would give it; with the chunks
    the streaming evaluation uses, the showers are those it makes. Only each shower's sum is kept.
    """
    energy = np.asarray(energy, dtype=np.float64)
    angle = np.asarray(angle)
    n = energy.size
    if chunks is None:
        chunks = [min(batch_size, n - s) for s in range(0, n, max(1, batch_size))]
    if sum(chunks) != n:
        raise ValueError(f"chunks cover {sum(chunks)} events, expected {n}")
    noise = np.random.default_rng(seed)
    sums = np.empty(n)
    start = 0
    for size in chunks:
        if size:
            stop = start + size
            showers = np.asarray(bundle.generate(energy[start:stop], angle[start:stop], seed=noise,
                                                 batch_size=batch_size))
            sums[start:stop] = showers.reshape(size, -1).sum(axis=1, dtype=np.float64)
            del showers
            start = stop
    return sums * ECAL_TO_DEPOSIT / energy


def select_best(
    candidates: list[Candidate],
    reference_energy: np.ndarray,
    reference_sf: np.ndarray,
    independent_sf: np.ndarray,
    energy: np.ndarray,
    angle: np.ndarray,
    binning: BinningConfig,
    seed: int,
    batch_size: int,
    chunks: Optional[list[int]] = None,
) -> Selection:
    """Score each candidate by the sampling-fraction MRE and choose the lowest (ties: the later step).

    Args:
        candidates: From find_candidates, in step order.
        reference_energy, reference_sf: Monte Carlo half A's energies and sampling fractions.
        independent_sf: Half B's sampling fractions (for the score's noise floor).
        energy, angle: Half B's energies and conditioning angles: what each candidate generates for.
        binning: The evaluation's binning.
        seed, batch_size: The evaluation's generator seed and batch size (the same showers the full
            evaluation makes for the chosen one).
        chunks: Half-B events per generator call, in order (the streaming evaluation's: half B's
            events of each Monte Carlo batch); default ``batch_size`` each.

    Returns:
        The Selection. With a single candidate nothing is generated: it is chosen, and its score is
        filled in from the full evaluation (fill_from_full_evaluation). Candidates whose score is
        NaN (no used bin, or empty showers only) are never chosen unless all are; then the latest.
    """
    energy = np.asarray(energy, dtype=np.float64)
    floor = sampling_fraction_mre(reference_energy, reference_sf, energy, independent_sf, binning)[METRIC]
    series = [{**c.row(), METRIC: None, "selected": False} for c in candidates]
    if len(candidates) == 1:
        series[0]["selected"] = True
        return Selection(candidates[0], series, floor, scored=False)
    best, best_value = len(candidates) - 1, math.inf
    for i, cand in enumerate(candidates):
        t0 = time.monotonic()
        bundle = cand.load()
        sf = generated_sampling_fractions(bundle, energy, angle, seed, batch_size, chunks)
        value = sampling_fraction_mre(reference_energy, reference_sf, energy, sf, binning)[METRIC]
        series[i][METRIC] = value
        LOG.info("candidate %d/%d (%s, step %s): %s %.4g (Monte Carlo %.4g) in %.1f s", i + 1, len(candidates),
                 cand.kind, cand.step, METRIC, value, floor, time.monotonic() - t0)
        if math.isfinite(value) and value <= best_value:
            best, best_value = i, value
    series[best]["selected"] = True
    chosen = candidates[best]
    LOG.info("selected %s generator of step %s (%s %.4g)", chosen.kind, chosen.step, METRIC, best_value)
    return Selection(chosen, series, floor, scored=True)


def unselected(final_dir: str, final_bundle: Any) -> Candidate:
    """The final generator as the only candidate (select_best off)."""
    step = final_bundle.config.get("steps")
    return Candidate(int(step) if step is not None else None, None, "final", final_dir, lambda: final_bundle,
                     dict(final_bundle.config))


def write_generator(output_dir: str, chosen: Candidate, bundle: Any, relative_path: str = GENERATOR_DIR) -> str:
    """Copy the chosen generator into ``output_dir``/``relative_path`` (generator.keras, then its config).

    The trainer's final generator is copied byte for byte; a snapshot is exported as the trainer
    exports its final generator (trainer.export.export_generator), with the snapshot's config.

    Returns:
        The folder written.
    """
    from trainer.export import CONFIG_FILE, MODEL_FILE, export_generator

    dest = uri.join(output_dir, relative_path)
    if chosen.kind == "final":
        for name in (MODEL_FILE, CONFIG_FILE):  # the config last: a folder with a config is complete
            uri.write_bytes(uri.join(dest, name), uri.read_bytes(uri.join(chosen.source, name)))
    else:
        export_generator(bundle.model, str(chosen.config["preset"]), dest, chosen.config)
    return dest


def selection_html(metrics: dict) -> str:
    """The report's table of candidates and their scores ("" when metrics has no selection).

    With several generators (metrics' ``generators``), one table per generator, under its label.
    """
    if metrics.get("generators"):
        return "".join(_selection_table(g, f" ({g.get('label', '')})") for g in metrics["generators"])
    return _selection_table(metrics, "")


def _selection_table(metrics: dict, suffix: str) -> str:
    sel = metrics.get("snapshot_selection")
    chosen = metrics.get("selected_generator")
    if not sel or not chosen:
        return ""

    def fmt(v) -> str:
        if v is None:
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    bold = " style='font-weight:bold'"
    rows = "".join(
        f"<tr{bold if r['selected'] else ''}><td>{fmt(r['step'])}</td><td>{fmt(r['epoch'])}</td>"
        f"<td>{html.escape(r['kind'])}</td><td>{fmt(r[METRIC])}</td><td>{'selected' if r['selected'] else ''}</td></tr>"
        for r in sel["series"]
    )
    return (
        f"<h2>Generator evaluated{html.escape(suffix)}</h2>"
        f"<p>Step {fmt(chosen['step'])} ({html.escape(chosen['kind'])}), chosen by "
        f"{html.escape(chosen['selected_by'])}; the same score for Monte Carlo half B: {fmt(sel['noise_floor'])}.</p>"
        f"<table><tr><th>step</th><th>epoch</th><th>kind</th><th>{METRIC}</th><th></th></tr>{rows}</table>"
    )
