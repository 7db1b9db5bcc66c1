"""train(config) end to end on a converted Monte Carlo dataset: the CONTRACTS §3 outputs, resume,
both loops, the divergence guard and input checks."""

import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from trainer.config import TrainConfig
from trainer.export import load_generator
from trainer.inputs import distributed_input, in_memory_dataset_fn, manifest_dataset_fn
from trainer.output_dir import OutputDirConflictError
from trainer.train import DivergenceError, train


def make_tiny_dataset(folder: str) -> str:
    """Simulate 80 showers with data_prep's Monte Carlo, convert them with the Beam pipeline;
    returns the manifest path."""
    from data_prep.convert import ConvertConfig, convert
    from data_prep.montecarlo import MonteCarloConfig, generate_files

    generate_files(MonteCarloConfig(n_events=80, events_per_file=40, energy_min=50, energy_max=200,
                                    workers=1, seed=3), os.path.join(folder, "h5"))
    convert(ConvertConfig(inputs=[os.path.join(folder, "h5", "*.h5")], output=os.path.join(folder, "tfr"),
                          min_shards=2, test_fraction=0.2))
    return os.path.join(folder, "tfr", "manifest.json")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tiny_dataset(str(tmp_path_factory.mktemp("trainer_data")))


def tiny_config(manifest, out, **kw):
    base = dict(data=manifest, output_dir=str(out), preset="tiny", strategy="default",
                batch_size_per_replica=4, max_steps=4, steps_per_call=2, checkpoint_every=2,
                log_every=2, seed=5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    logger = logging.getLogger("trainer")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = train(tiny_config(manifest, out))
    finally:
        logger.removeHandler(handler)
    return out, result, [r.getMessage() for r in records]


def test_training_writes_the_contract_outputs(trained, manifest):
    out, result, _ = trained
    assert result.steps == 4 and result.start_step == 0 and result.replicas == 1
    config = json.loads((out / "config.json").read_text())
    assert config["train_config"]["data"] == manifest
    assert config["derived"]["global_batch_size"] == 4
    assert config["derived"]["effective_learning_rate"] == pytest.approx(1e-3)
    assert {"tensorflow", "keras", "numpy"} <= set(config["versions"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["device_kind"] == "cpu"
    assert set(summary["final_losses"]) >= {"d_loss", "g_loss", "g_energy", "g_angle", "g_ecal_sum"}
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "checkpoints" / "ckpt-*.index"))) == [
        "ckpt-2.index", "ckpt-4.index"]


def test_timings_are_one_record_per_call(trained):
    out, _, _ = trained
    records = [json.loads(l) for l in (out / "timings.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert r["steps"] == 2 and r["global_batch"] == 4 and r["replicas"] == 1 and r["seconds"] > 0
        assert r["epoch"] == 0 and np.isfinite(r["losses"]["g_loss"])


def test_progress_lines_and_tensorboard_scalars(trained):
    out, _, messages = trained
    progress = [m for m in messages if m.startswith("step ")]
    assert len(progress) == 2 and "steps/s" in progress[-1] and "ETA" in progress[-1]
    tags = set()
    for path in glob.glob(str(out / "tensorboard" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {v.tag for v in event.summary.value}
    assert {"d_loss", "g_loss", "steps_per_second"} <= tags


# Showers of one generator, same seed, generated in differently sized batches agree only to float32
# rounding: oneDNN picks its kernels (and so the order of every sum) by batch shape and by CPU
# (AVX-512 or AVX2), so cells differ in the last bits (a clean clone on an AVX2 machine saw 1 ulp
# in 26 % of cells). A cell whose sum nearly cancels can differ by a large fraction of itself, so
# the bound is relative to each shower's largest cell, not per cell. Measured with oneDNN held to
# AVX2 (ONEDNN_MAX_CPU_ISA=AVX2), batches 1, 2, 3 against 64, presets full, small, tiny and
# fixed_angle (untrained): at most 2.7e-6 of the shower's maximum; this file's trained tiny
# generator: 2.8e-7. 1e-5 leaves headroom and is still ~1e5 times smaller than what another
# seed or another event's noise changes (about the maximum itself).
ACROSS_BATCHES_OF_PEAK = 1e-5


def diff_of_peak(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| over all cells, each shower's difference divided by that shower's maximum."""
    a64, b64 = (np.asarray(x, np.float64).reshape(len(x), -1) for x in (a, b))
    peak = np.maximum(np.abs(b64).max(axis=1, keepdims=True), 1e-30)
    return float((np.abs(a64 - b64) / peak).max())


def test_exported_generator_returns_raw_showers(trained):
    out, _, _ = trained
    bundle = load_generator(str(out / "generator"))
    assert bundle.config["angle_key"] == "mtheta" and bundle.config["power"] == 0.85
    energy, theta = np.array([60.0, 120.0, 180.0]), np.array([1.2, 1.57, 1.9])
    showers = bundle.generate(energy, theta, seed=1, batch_size=3)
    assert showers.shape == (3, 51, 51, 25) and showers.dtype == np.float32
    assert showers.min() >= 0 and showers.max() > 0
    # Same seed, same batch size, same process: the very same work, so the very same bits.
    np.testing.assert_array_equal(showers, bundle.generate(energy, theta, seed=1, batch_size=3))
    assert diff_of_peak(bundle.generate(energy, theta, seed=2, batch_size=3), showers) > 1e3 * ACROSS_BATCHES_OF_PEAK
    # Raw units: the power transform is undone, so x == (model output) ** (1 / 0.85). The model
    # is called on the same (3, 16) batch generate() used, so only the inversion is tested here.
    latent_out = np.asarray(bundle.model(np.concatenate(
        [np.stack([energy / 100.0, theta], 1), np.random.default_rng(1).standard_normal((3, 14), dtype=np.float32)], 1).astype(np.float32)))
    np.testing.assert_allclose(showers, latent_out[..., 0] ** (1 / 0.85), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="energy_gev has 3 values but theta_rad has 2"):
        bundle.generate(energy, theta[:2], seed=0)


def test_generated_showers_depend_on_seed_and_event_not_on_batch_split(trained):
    out, _, _ = trained
    bundle = load_generator(str(out / "generator"))
    energy = np.array([60.0, 120.0, 180.0, 90.0, 150.0])
    theta = np.array([1.2, 1.57, 1.9, 1.4, 1.7])
    reference = bundle.generate(energy, theta, seed=4, batch_size=64)
    # Event i's noise is row i of the seed's stream: other batch splits, and the first events
    # generated alone, give the same showers (to float32 rounding, see ACROSS_BATCHES_OF_PEAK).
    for batch_size in (1, 2, 3):
        split = bundle.generate(energy, theta, seed=4, batch_size=batch_size)
        assert diff_of_peak(split, reference) <= ACROSS_BATCHES_OF_PEAK, batch_size
    assert diff_of_peak(bundle.generate(energy[:2], theta[:2], seed=4, batch_size=2), reference[:2]) <= ACROSS_BATCHES_OF_PEAK
    # Same conditions for two events: only their noise differs, and it does.
    twins = bundle.generate(np.full(2, 100.0), np.full(2, 1.5), seed=4, batch_size=1)
    assert diff_of_peak(twins[:1], twins[1:]) > 1e3 * ACROSS_BATCHES_OF_PEAK


def test_rerun_resumes_from_the_latest_checkpoint(trained, manifest):
    out, first, _ = trained
    result = train(tiny_config(manifest, out, max_steps=6))
    assert (result.start_step, result.steps) == (4, 6)
    records = [json.loads(l) for l in (out / "timings.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert json.loads((out / "config.json").read_text())["derived"]["start_step"] == 4
    assert result.weights_digest != first.weights_digest


def test_resume_positions_the_input_by_start_batch_not_by_replay(manifest):
    """distributed_input hands the resume position to the reader (which starts there without
    reading what came before, tests/test_reader_distribution.py); a two-argument dataset_fn
    is still positioned by skipping. Same batches either way."""
    strategy = tf.distribute.get_strategy()
    fn = manifest_dataset_fn(tiny_config(manifest, "unused"), 4)
    calls = []

    def recording(ctx, per_replica, start_batch):
        calls.append((per_replica, start_batch))
        return fn(ctx, per_replica, start_batch)

    def energies(dist, n=3):
        it = iter(dist)
        return [next(it)["energy"].numpy().tolist() for _ in range(n)]

    uninterrupted = energies(distributed_input(strategy, fn, 4, 0), n=10)
    assert energies(distributed_input(strategy, recording, 4, 7)) == uninterrupted[7:]
    assert calls == [(4, 7)]
    two_args = energies(distributed_input(strategy, lambda ctx, per_replica: fn(ctx, per_replica), 4, 7))
    assert two_args == uninterrupted[7:]


def test_builtin_loop_runs_whole_executions_then_the_remainder(manifest, tmp_path):
    result = train(tiny_config(manifest, tmp_path, loop="builtin", max_steps=3, checkpoint_every=0))
    assert result.steps == 3
    records = [json.loads(l) for l in (tmp_path / "timings.jsonl").read_text().splitlines()]
    assert [(r["step"], r["steps"]) for r in records] == [(2, 2), (3, 1)]
    assert os.path.exists(tmp_path / "checkpoints" / "ckpt-3.index")  # saved at the end


def _events(n, energy=100.0):
    rng = np.random.default_rng(0)
    raw = (rng.exponential(1.0, (n, 51, 51, 25)) * (rng.random((n, 51, 51, 25)) < 0.03)).astype(np.float32)
    return {"ecal": raw ** 0.85, "energy": np.full(n, energy, np.float32),
            "theta": np.full(n, 1.5, np.float32), "mtheta": np.full(n, 1.5, np.float32),
            "ecal_sum": raw.reshape(n, -1).sum(1)}


def test_nan_losses_stop_training_with_a_clear_error(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), preset="tiny", strategy="default",
                      batch_size_per_replica=2, max_steps=2, checkpoint_every=0)
    with pytest.raises(DivergenceError, match="non-finite losses .* at step 1"):
        train(cfg, dataset_fn=in_memory_dataset_fn(_events(4, energy=float("nan"))))
    assert not (tmp_path / "summary.json").exists()  # nothing published as finished


def test_empty_generated_showers_stop_training(tmp_path):
    # Every generated batch counts as empty under an impossible threshold: the guard must fire
    # after `empty_patience` consecutive checks.
    cfg = TrainConfig(output_dir=str(tmp_path), preset="tiny", strategy="default",
                      batch_size_per_replica=2, max_steps=5, checkpoint_every=0,
                      empty_threshold=1e30, empty_patience=2)
    with pytest.raises(DivergenceError, match="generated showers empty .* for 2 consecutive checks, at step 2"):
        train(cfg, dataset_fn=in_memory_dataset_fn(_events(4)))


def test_dataset_image_shape_must_match_the_preset(manifest, tmp_path):
    with pytest.raises(ValueError, match=r"has images \(51, 51, 25\) but preset 'fixed_angle' makes \(25, 25, 25\)"):
        train(tiny_config(manifest, tmp_path, preset="fixed_angle"))


def test_incomplete_generator_folder_is_named(tmp_path):
    (tmp_path / "generator.keras").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="generator_config.json does not exist"):
        load_generator(str(tmp_path))


def test_output_dir_of_another_preset_is_refused_and_left_alone(trained, manifest):
    out, _, _ = trained
    before = {name: (out / name).read_bytes() for name in ("config.json", "timings.jsonl")}
    with pytest.raises(OutputDirConflictError, match=(
            rf"output dir {out} holds a run of preset 'tiny', dataset content:[0-9a-f]+ \({manifest}\); "
            rf"this run is preset 'small', .*: choose another --output-dir, or pass --overwrite")):
        train(tiny_config(manifest, out, preset="small"))
    assert {name: (out / name).read_bytes() for name in before} == before


def _other_dataset(manifest, folder):
    """The same shards under a manifest with another content hash: another dataset."""
    copy = shutil.copytree(os.path.dirname(manifest), folder)
    path = os.path.join(copy, "manifest.json")
    data = json.loads(open(path).read())
    data["content_hash"] = "0" * 64
    with open(path, "w") as fh:
        json.dump(data, fh)
    return path


def test_output_dir_of_another_dataset_is_refused_unless_overwrite(manifest, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(manifest, out, max_steps=2, checkpoint_every=0))
    (out / "notes.txt").write_text("mine")
    other = _other_dataset(manifest, str(tmp_path / "other"))
    with pytest.raises(OutputDirConflictError, match="this run is preset 'tiny', dataset content:0000"):
        train(tiny_config(other, out, max_steps=2, checkpoint_every=0))
    result = train(tiny_config(other, out, max_steps=2, checkpoint_every=0, overwrite=True))
    assert (result.start_step, result.steps) == (0, 2)  # started afresh, not resumed
    records = [json.loads(l) for l in (out / "timings.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]  # the first run's records are gone
    config = json.loads((out / "config.json").read_text())
    assert config["derived"]["dataset_fingerprint"] == "content:" + "0" * 64
    assert (out / "notes.txt").read_text() == "mine"  # nothing the trainer did not write is removed
    # The same run again resumes, --overwrite or not.
    again = train(tiny_config(other, out, max_steps=3, checkpoint_every=0, overwrite=True))
    assert again.start_step == 2
