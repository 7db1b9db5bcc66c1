"""Best-epoch selection: the trainer's generator snapshots (written, rotated, resumed) and the
evaluator scoring them by the sampling-fraction MRE and evaluating the best one (real TF training
on the tiny preset, real Beam conversion, the real evaluator)."""

import json
import logging
import os
import shutil

import numpy as np
import pytest

from eval.best_epoch import select_best, snapshots_beside
from eval.evaluate import EvalConfig, evaluate, split_halves
from eval.features import ECAL_TO_DEPOSIT, compute_features
from eval.metrics import BinningConfig, compare_physics, energy_bins, sampling_fraction_mre
from trainer.config import TrainConfig
from trainer.export import export_generator, float32_generator, load_generator
from trainer.snapshots import SnapshotWriter, list_snapshots, load_snapshot, read_weights
from trainer.train import train


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """120 Monte Carlo showers converted by Beam: 48 to train on (12 steps of 4), 72 to evaluate."""
    from data_prep.convert import ConvertConfig, convert
    from data_prep.montecarlo import MonteCarloConfig, generate_files

    folder = tmp_path_factory.mktemp("best_epoch_data")
    files = generate_files(MonteCarloConfig(n_events=120, events_per_file=120, energy_min=20.0, energy_max=200.0,
                                            workers=1, seed=4), str(folder / "h5"))
    convert(ConvertConfig(inputs=files, output=str(folder / "tfr"), test_fraction=0.6, min_shards=1))
    return str(folder / "tfr" / "manifest.json")


def tiny(manifest, out, **kw):
    base = dict(data=manifest, output_dir=str(out), preset="tiny", strategy="default", batch_size_per_replica=4,
                max_steps=8, steps_per_call=1, checkpoint_every=4, log_every=4, seed=5, snapshot_every=2,
                keep_snapshots=3)
    base.update(kw)
    return TrainConfig(**base)


def steps_in(out) -> list[int]:
    return [s.step for s in list_snapshots(str(out / "snapshots"))]


@pytest.fixture(scope="module")
def run(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("snap_run")
    # snapshot_every 0: once an epoch, here every 2 steps.
    return out, train(tiny(manifest, out, snapshot_every=0, steps_per_epoch=2))


def test_snapshots_once_an_epoch_keep_the_last_n(run):
    out, result = run
    # Steps 2, 4, 6, 8 written; the last 3 kept, each a json with its weights.
    assert steps_in(out) == [4, 6, 8] and result.extra["snapshot_steps"] == [4, 6, 8]
    assert sorted(os.listdir(out / "snapshots")) == [f"step_00000000{s}.{e}" for s in (4, 6, 8) for e in ("json", "npz")]
    meta = json.loads((out / "snapshots" / "step_000000006.json").read_text())
    assert meta["step"] == 6 and meta["epoch"] == 3.0
    assert meta["generator_config"]["steps"] == 6 and meta["generator_config"]["preset"] == "tiny"
    assert meta["generator_config"]["angle_key"] == "mtheta" and meta["generator_config"]["power"] == 0.85
    # The last snapshot is the final generator: same weights, same showers.
    final = load_generator(str(out / "generator"))
    last = load_snapshot(list_snapshots(str(out / "snapshots"))[-1])
    for a, b in zip(last.model.get_weights(), final.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    energy, theta = np.array([50.0, 150.0]), np.array([1.5, 1.6])
    np.testing.assert_array_equal(last.generate(energy, theta, seed=3), final.generate(energy, theta, seed=3))
    # An earlier snapshot holds other weights (training moved them).
    assert any(not np.array_equal(a, b) for a, b in zip(read_weights(list_snapshots(str(out / "snapshots"))[0]),
                                                         final.model.get_weights()))


def test_resume_continues_the_sequence_and_drops_the_abandoned_future(run, manifest):
    out, _ = run
    written = (out / "snapshots" / "step_000000004.json").read_text()
    # A run killed after step 8's snapshot but before its checkpoint resumes from step 4: the
    # snapshots after 4 belong to steps it redoes and go (a shorter rerun must not leave them),
    # as do weights whose json was never written; step 4's is not written twice.
    for name in os.listdir(out / "checkpoints"):
        if name.startswith("ckpt-8"):
            os.remove(out / "checkpoints" / name)
    (out / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-4"\n')
    (out / "snapshots" / "step_000000011.npz").write_bytes(b"half-written")
    result = train(tiny(manifest, out, snapshot_every=0, steps_per_epoch=2, max_steps=7))
    assert result.start_step == 4 and steps_in(out) == [4, 6, 7]
    assert (out / "snapshots" / "step_000000004.json").read_text() == written
    assert sorted(os.listdir(out / "snapshots")) == [f"step_00000000{s}.{e}" for s in (4, 6, 7) for e in ("json", "npz")]


def test_snapshot_every_n_steps_in_the_builtin_loop(manifest, tmp_path):
    # Several steps a call: at the first call boundary past each multiple (4 for 3, 6 for 6).
    train(tiny(manifest, tmp_path, loop="builtin", steps_per_call=2, snapshot_every=3, max_steps=6,
               checkpoint_every=0))
    assert steps_in(tmp_path) == [4, 6]


def test_cheap_score_is_compare_physics_sampling_fraction_mre():
    """The function that scores snapshots gives the full evaluation's sampling_fraction_mre."""
    from data_prep.mc_shower import ShowerParams, simulate_showers

    rng = np.random.default_rng(2)
    energy = rng.uniform(20.0, 200.0, 300)
    theta = np.radians(rng.choice([62.0, 90.0, 118.0], 300))
    ecal = simulate_showers(energy, theta, rng, ShowerParams(), grid=(12, 12, 10))[0]
    ref = compute_features(ecal[:150], energy[:150], theta[:150])
    cand = compute_features(ecal[150:] * 1.07, energy[150:], theta[150:])
    # 3DGAN-style bins, the last one beyond the sample's energies (skipped).
    cfg = BinningConfig(energy_centres=(40.0, 90.0, 150.0, 250.0), energy_half_width=20.0)
    full = compare_physics(ref, cand, cfg)
    cheap = sampling_fraction_mre(ref.energy, ref.sampling_fraction, cand.energy, cand.sampling_fraction, cfg)
    assert cheap["sampling_fraction_mre"] == pytest.approx(full["summary"]["sampling_fraction_mre"], rel=1e-12)
    assert 0.05 < cheap["sampling_fraction_mre"] < 0.09  # the 1.07 scale
    assert [r["skipped"] for r in cheap["energy_bins"]] == [r["skipped"] for r in full["energy_bins"]] == [
        False, False, False, True]


# ---------------------------------------------------------------------------------------------
# The evaluator's selection, on generators whose score is known by construction.

SCALES = {2: 0.35, 4: 0.6, 6: 1.0, 8: 1.7, 10: 2.9}  # step -> factor on the best scale; 10 is the final


def scaled(weights, k):
    """The generator's last layer (ReLU output conv, no BN) times k: every shower times k ** (1 / 0.85)."""
    out = [np.array(w) for w in weights]
    out[-2] *= k
    out[-1] *= k
    return out


@pytest.fixture(scope="module")
def crafted(run, manifest, tmp_path_factory):
    """A run folder whose snapshots and final generator are the trained tiny generator scaled so
    that step 6 has the lowest sampling-fraction MRE, computed here independently of eval."""
    from data_prep.dataset import load_split_numpy

    out, _ = run
    base = load_generator(str(out / "generator"))
    weights = base.model.get_weights()
    config = EvalConfig(data=manifest, generator_dir="x", output_dir="x", seed=3, batch_size=16)
    data = load_split_numpy(manifest, "test", None)
    mc = np.clip(data["ecal"], 0, None) ** (1 / 0.85)
    a, b = split_halves(len(mc), config.seed)
    energy = data["energy"].astype(np.float64)
    sf_a = mc[a].sum(axis=(1, 2, 3), dtype=np.float64) * ECAL_TO_DEPOSIT / energy[a]
    gen = base.generate(energy[b], data["mtheta"][b], seed=config.seed, batch_size=16)
    sf_b = gen.sum(axis=(1, 2, 3), dtype=np.float64) * ECAL_TO_DEPOSIT / energy[b]
    # Per energy bin (the evaluator's bins), generated / Monte Carlo mean sampling fraction. A
    # generator scaled by k gives k ** (1 / 0.85) times it, so its MRE is mean_b |k' q_b - 1|: a
    # convex function of k' whose minimum lies at one of the 1 / q_b.
    masks = [(bn.mask(energy[a]), bn.mask(energy[b])) for bn in energy_bins(energy[a], config.binning())]
    used = [(ma, mb) for ma, mb in masks if min(ma.sum(), mb.sum()) >= config.min_events_per_bin]  # the skip rule
    assert len(used) >= 2
    q = np.array([sf_b[mb].mean() / sf_a[ma].mean() for ma, mb in used])
    assert np.all(q > 0)

    def mre(k):
        return float(np.mean(np.abs(k ** (1 / 0.85) * q - 1)))

    best = min((qb ** -0.85 for qb in q), key=mre)
    folder = tmp_path_factory.mktemp("crafted")
    export_generator(float32_generator("tiny", scaled(weights, best * SCALES[10])), "tiny", str(folder / "generator"),
                     {**base.config, "steps": 10})
    writer = SnapshotWriter(str(folder / "snapshots"), 10, lambda step: {**base.config, "steps": step})
    for step in (2, 4, 6, 8, 10):  # 10 duplicates the final generator and counts once
        writer.save(scaled(weights, best * SCALES[step]), step, step / 12)
    expected = {step: mre(best * k) for step, k in SCALES.items()}
    return folder, config, expected


def test_evaluator_scores_every_snapshot_and_fully_evaluates_the_best(crafted, manifest, tmp_path, caplog):
    folder, base_config, expected = crafted
    assert min(expected, key=expected.get) == 6  # by construction
    config = EvalConfig(data=manifest, generator_dir=str(folder / "generator"), output_dir=str(tmp_path / "eval"),
                        seed=base_config.seed, batch_size=16)
    with caplog.at_level(logging.INFO, logger="eval.best_epoch"):
        metrics = evaluate(config)
    selection = metrics["snapshot_selection"]
    assert [r["step"] for r in selection["series"]] == [2, 4, 6, 8, 10]
    assert [r["kind"] for r in selection["series"]] == ["snapshot"] * 4 + ["final"]
    for row in selection["series"]:
        # Float32 generation of scaled weights against the exact scaling: agreement to 1e-4.
        assert row["sampling_fraction_mre"] == pytest.approx(expected[row["step"]], rel=1e-4)
        assert row["selected"] == (row["step"] == 6)
    chosen = metrics["selected_generator"]
    assert (chosen["step"], chosen["kind"], chosen["epoch"]) == (6, "snapshot", pytest.approx(0.5))
    assert chosen["source"] == str(folder / "snapshots" / "step_000000006.json")
    assert chosen["path"] == str(tmp_path / "eval" / "generator") == metrics["outputs"]["generator"]
    assert chosen["relative_path"] == "generator"
    # The full evaluation ran on step 6: its sampling_fraction_mre is the snapshot's score (same
    # showers, same definition) and its generator config is the snapshot's.
    assert metrics["summary"]["generated"]["sampling_fraction_mre"] == pytest.approx(expected[6], rel=1e-4)
    assert metrics["summary"]["generated"]["sampling_fraction_mre"] == pytest.approx(
        selection["series"][2]["sampling_fraction_mre"], rel=1e-9)
    assert metrics["generator_config"]["steps"] == 6
    assert selection["noise_floor"] == pytest.approx(metrics["summary"]["noise_floor"]["sampling_fraction_mre"], rel=1e-9)
    # The copy in the evaluation folder is the chosen generator, loadable on its own.
    copy = load_generator(chosen["path"])
    snap6 = load_snapshot(next(s for s in list_snapshots(str(folder / "snapshots")) if s.step == 6))
    e, t = np.array([40.0, 160.0]), np.array([1.3, 1.8])
    np.testing.assert_array_equal(copy.generate(e, t, seed=1), snap6.generate(e, t, seed=1))
    assert copy.config["steps"] == 6
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "Generator evaluated" in report and "lowest sampling_fraction_mre among the last 10" in report
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["selected_generator"]["step"] == 6 and len(on_disk["snapshot_selection"]["series"]) == 5
    assert sum(r.name == "eval.best_epoch" and r.getMessage().startswith("candidate") for r in caplog.records) == 5


def test_the_last_n_and_without_selection(crafted, manifest, tmp_path):
    folder, base_config, expected = crafted
    from eval.best_epoch import find_candidates

    config = dict(data=manifest, generator_dir=str(folder / "generator"), seed=base_config.seed, batch_size=16)
    # The window: the last two by step (8 and the final 10; the snapshot of step 10 is the final).
    final = load_generator(str(folder / "generator"))
    last2 = find_candidates(str(folder / "generator"), final, str(folder / "snapshots"), 2)
    assert [(c.step, c.kind) for c in last2] == [(8, "snapshot"), (10, "final")]
    # --no-select-best: the final generator, copied byte for byte, its score from the full evaluation.
    plain = evaluate(EvalConfig(output_dir=str(tmp_path / "plain"), select_best=False, **config))
    chosen = plain["selected_generator"]
    assert (chosen["step"], chosen["kind"], chosen["source"]) == (10, "final", str(folder / "generator"))
    assert chosen["selected_by"] == "select_best off: the final generator"
    [row] = plain["snapshot_selection"]["series"]
    assert row["sampling_fraction_mre"] == plain["summary"]["generated"]["sampling_fraction_mre"]
    assert row["sampling_fraction_mre"] == pytest.approx(expected[10], rel=1e-4)
    for name in ("generator.keras", "generator_config.json"):
        assert (tmp_path / "plain" / "generator" / name).read_bytes() == (folder / "generator" / name).read_bytes()


def test_selection_helpers(tmp_path):
    assert snapshots_beside("/runs/x/model/generator/") == "/runs/x/model/snapshots"
    assert snapshots_beside("gs://b/runs/model/generator") == "gs://b/runs/model/snapshots"
    # Snapshots of another run (another preset) are refused, naming the file.
    from eval.best_epoch import find_candidates

    base = load_generator_stub()
    writer = SnapshotWriter(str(tmp_path / "snapshots"), 3, lambda step: {**base.config, "preset": "small"})
    writer.save(base.model.get_weights(), 1, 0.1)
    with pytest.raises(ValueError, match=r"step_000000001.json has preset 'small'.*snapshots of another run"):
        find_candidates(str(tmp_path / "generator"), base, str(tmp_path / "snapshots"), 10)
    # No snapshots folder: the final generator alone.
    cands = find_candidates(str(tmp_path / "generator"), base, str(tmp_path / "none"), 10)
    assert [(c.kind, c.step) for c in cands] == [("final", 5)]


class Proportional:
    """A stand-in bundle whose showers all have sampling fraction `sf` (one cell of sf x E x 50 raw units)."""

    def __init__(self, sf):
        self.sf = sf

    def generate(self, energy, angle, seed, batch_size):
        out = np.zeros((len(energy), 2, 2, 2), np.float32)
        out[:, 0, 0, 0] = self.sf * np.asarray(energy) / ECAL_TO_DEPOSIT
        return out


def test_ties_go_to_the_later_step_and_nan_scores_never_win():
    from eval.best_epoch import Candidate

    energy = np.random.default_rng(0).uniform(10, 100, 40)
    sf = np.full(40, 0.02)

    def cands(sfs):
        return [Candidate(step, None, "snapshot", f"s{step}", lambda g=Proportional(v): g)
                for step, v in enumerate(sfs, start=1)]

    # Sampling fractions 0.03, 0.02, 0.02, 0.01 against 0.02: steps 2 and 3 are exact; 3 is later.
    picked = select_best(cands([0.03, 0.02, 0.02, 0.01]), energy, sf, sf, energy, energy, BinningConfig(), 0, 8)
    assert [r["sampling_fraction_mre"] for r in picked.series] == pytest.approx([0.5, 0, 0, 0.5], abs=1e-6)
    assert picked.chosen.step == 3 and [r["selected"] for r in picked.series] == [False, False, True, False]
    # No bin holds enough events: every score is NaN, and the latest candidate is taken.
    nan = select_best(cands([0.02, 0.03]), energy, sf, sf, energy, energy, BinningConfig(min_events_per_bin=100), 0, 8)
    assert nan.chosen.step == 2 and all(np.isnan(r["sampling_fraction_mre"]) for r in nan.series)


def load_generator_stub():
    from trainer.export import GeneratorBundle, generator_config
    from trainer.models import build_generator
    from trainer.presets import get_preset

    model = build_generator(get_preset("tiny"), "float32", implementation="keras")
    return GeneratorBundle(model=model, config=generator_config("tiny", {"steps": 5}))
