"""Tests of the tf.data reader: contract keys and shapes, per-replica batching, sharding, distribution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from data_prep.convert import ConvertConfig, convert
from data_prep.dataset import load_split_numpy, make_dataset, read_manifest
from data_prep.montecarlo import MonteCarloConfig, generate_files

IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same 200 MC events converted dense and sparse+gzip, 4 shards per split."""
    folder = tmp_path_factory.mktemp("dsmc")
    files = generate_files(MonteCarloConfig(n_events=200, events_per_file=100, seed=11, chunk_events=25), str(folder))
    out = {}
    for encoding, compression in (("dense", "none"), ("sparse", "gzip")):
        target = str(folder / f"{encoding}-{compression}")
        convert(ConvertConfig(inputs=files, output=target, encoding=encoding, compression=compression,
                              test_fraction=0.2, min_shards=4), IN_PROCESS)
        out[encoding] = target
    return out


def _energies(ds) -> list[float]:
    return [float(e) for batch in ds for e in batch["energy"].numpy()]


@pytest.mark.parametrize("encoding", ["dense", "sparse"])
def test_batches_follow_the_contract(datasets, encoding):
    ds = make_dataset(datasets[encoding], "train", global_batch_size=16)
    assert ds.element_spec["ecal"].shape.as_list() == [16, 51, 51, 25]
    for batch in ds.take(2):
        assert sorted(batch) == ["ecal", "ecal_sum", "energy", "mtheta", "theta"]
        assert all(v.dtype == tf.float32 for v in batch.values())
        assert batch["energy"].shape == (16,)
        ecal = batch["ecal"].numpy()
        assert ecal.min() >= 0 and ecal.max() > 0
        # the image is the power-transformed raw image: undoing it gives back the raw-sum label
        raw = np.power(ecal, 1 / 0.85).reshape(16, -1).sum(axis=1)
        np.testing.assert_allclose(raw, batch["ecal_sum"].numpy(), rtol=2e-3)
        assert np.all((batch["mtheta"].numpy() > 0.5) & (batch["mtheta"].numpy() < 2.6))


def test_repeat_and_drop_remainder(datasets):
    n = read_manifest(datasets["dense"]).counts["test"]
    once = make_dataset(datasets["dense"], "test", 7, shuffle=False, repeat=False)
    assert sum(1 for _ in once) == n // 7
    tail = make_dataset(datasets["dense"], "test", 7, shuffle=False, repeat=False, drop_remainder=False)
    assert sum(int(b["energy"].shape[0]) for b in tail) == n
    forever = make_dataset(datasets["dense"], "test", 7, repeat=True)
    assert sum(1 for _ in forever.take(3 * (n // 7) + 1)) == 3 * (n // 7) + 1


def test_per_replica_batches_and_file_sharding_cover_each_event_once(datasets):
    everything = sorted(load_split_numpy(datasets["sparse"], "train")["energy"].tolist())
    seen = []
    for pipeline_id in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2)
        ds = make_dataset(datasets["sparse"], "train", global_batch_size=8, input_context=ctx, shuffle=False,
                          repeat=False, drop_remainder=False)
        assert ds.element_spec["ecal"].shape.as_list()[0] in (None, 4)
        first = next(iter(ds))
        assert first["ecal"].shape[0] == 4  # 8 global / 2 replicas
        part = _energies(ds)
        assert part  # each pipeline got its own files
        seen.append(part)
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == everything


def test_data_sharding_when_fewer_files_than_pipelines(datasets):
    manifest = read_manifest(datasets["dense"])
    n_files = len(manifest.shard_names("test"))
    n_pipelines = n_files + 2
    everything = sorted(load_split_numpy(datasets["dense"], "test")["energy"].tolist())
    seen = []
    for pipeline_id in range(n_pipelines):
        ctx = tf.distribute.InputContext(num_input_pipelines=n_pipelines, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=n_pipelines)
        seen.append(_energies(make_dataset(datasets["dense"], "test", n_pipelines, input_context=ctx, shuffle=False,
                                           repeat=False, drop_remainder=False)))
    flat = [e for part in seen for e in part]
    assert sorted(flat) == everything and len(set(flat)) == len(flat)
    assert sum(1 for part in seen if part) > n_files  # more readers than files were all fed


def test_shuffle_is_seeded(datasets):
    def first(seed):
        ds = make_dataset(datasets["dense"], "train", 32, shuffle=True, deterministic=True, seed=seed)
        return next(iter(ds))["energy"].numpy()

    np.testing.assert_array_equal(first(5), first(5))
    assert not np.array_equal(first(5), first(6))
    ordered = next(iter(make_dataset(datasets["dense"], "train", 32, shuffle=False)))["energy"].numpy()
    assert not np.array_equal(first(5), ordered)


def test_load_split_numpy_and_errors(datasets, tmp_path):
    manifest = read_manifest(datasets["dense"])
    full = load_split_numpy(datasets["dense"], "test")
    assert full["ecal"].shape == (manifest.counts["test"], 51, 51, 25)
    head = load_split_numpy(datasets["dense"] + "/manifest.json", "test", max_events=5)
    np.testing.assert_array_equal(head["ecal"], full["ecal"][:5])
    with pytest.raises(ValueError, match="validation"):
        make_dataset(datasets["dense"], "validation", 4)
    with pytest.raises(ValueError, match="global_batch_size"):
        make_dataset(datasets["dense"], "train", 0)
    with pytest.raises(FileNotFoundError, match="not a finished dataset"):
        make_dataset(str(tmp_path), "train", 4)


def test_distribute_datasets_from_function_with_mirrored_strategy(datasets):
    """Two logical CPU devices need a fresh TensorFlow runtime, hence a subprocess."""
    script = textwrap.dedent(
        f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from data_prep.dataset import make_dataset
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        dist = strategy.distribute_datasets_from_function(
            lambda ctx: make_dataset({datasets["sparse"]!r}, "train", 8, input_context=ctx))

        @tf.function
        def step(batch):
            n = strategy.run(lambda b: tf.cast(tf.shape(b["ecal"])[0], tf.float32), args=(batch,))
            return strategy.reduce("SUM", n, axis=None)

        it = iter(dist)
        batch = next(it)
        per_replica = [tuple(t.shape) for t in strategy.experimental_local_results(batch["ecal"])]
        totals = [float(step(next(it))) for _ in range(3)]
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "per_replica": per_replica, "totals": totals}}))
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["per_replica"] == [[4, 51, 51, 25], [4, 51, 51, 25]]
    assert result["totals"] == [8.0, 8.0, 8.0]
