"""gs:// for real: the uri layer and a gs:// -> gs:// Beam conversion against a local GCS emulator."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data_prep import uri
from data_prep.convert import ConvertConfig, convert, run
from data_prep.dataset import load_split_numpy, make_dataset, read_manifest
from data_prep.montecarlo import MonteCarloConfig, generate_files
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

IN_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]


@pytest.fixture(scope="module")
def mc_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gcsmc")
    return generate_files(MonteCarloConfig(n_events=160, events_per_file=80, seed=5, chunk_events=16), str(folder))


@pytest.fixture(params=["local", "gcs"])
def storage_root(request, tmp_path):
    """The same uri-layer assertions run on a local folder and on an emulator bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return f"gs://{request.getfixturevalue('gcs_bucket')}"


def test_uri_layer_round_trip(storage_root, tmp_path):
    base = uri.join(storage_root, "dir")
    uri.write_text(uri.join(base, "a.txt"), "alpha")
    uri.write_bytes(uri.join(base, "sub", "b.bin"), b"\x00\x01" * 1000)
    uri.write_text(uri.join(storage_root, "dir2", "c.txt"), "not under dir/")
    a, b = uri.join(base, "a.txt"), uri.join(base, "sub", "b.bin")
    assert uri.read_text(a) == "alpha"
    assert uri.exists(a) and not uri.exists(uri.join(base, "zzz"))
    assert uri.list_files(base) == [a, b]
    assert uri.glob(uri.join(base, "*.txt")) == [a]
    assert uri.size(b) == 2000 and uri.basename(b) == "b.bin"
    local = tmp_path / "b.bin"
    local.write_bytes(b"\x00\x01" * 1000)
    assert uri.sha256(b) == uri.sha256(str(local))
    with uri.open_read(b) as fh:  # seekable, as h5py needs
        fh.seek(1998)
        assert fh.read() == b"\x00\x01"
    moved = uri.join(base, "moved.txt")
    uri.rename(a, moved)
    assert not uri.exists(a) and uri.read_text(moved) == "alpha"
    with pytest.raises(FileNotFoundError, match="zzz"):
        uri.read_bytes(uri.join(base, "zzz"))
    with pytest.raises(FileNotFoundError):
        uri.open_read(uri.join(base, "zzz"))
    uri.delete_tree(base)
    assert uri.list_files(base) == [] and uri.exists(uri.join(storage_root, "dir2", "c.txt"))


def test_convert_gcs_to_gcs_end_to_end(gcs_bucket, mc_files, tmp_path):
    for path in mc_files:
        uri.upload_file(path, f"gs://{gcs_bucket}/raw/{os.path.basename(path)}")
    out = f"gs://{gcs_bucket}/datasets/mc"
    manifest = run(["--inputs", f"gs://{gcs_bucket}/raw/*.h5", "--output", out, "--encoding", "sparse",
                    "--compression", "gzip", "--min-shards", "2"], save_main_session=False)
    names = [uri.basename(u) for u in uri.list_files(out)]
    assert sorted(names) == sorted([s["name"] for s in manifest["shards"]] + ["manifest.json"])
    assert [s["uri"] for s in manifest["sources"]] == [f"gs://{gcs_bucket}/raw/{os.path.basename(p)}" for p in mc_files]
    for shard in manifest["shards"]:
        assert uri.sha256(uri.join(out, shard["name"])) == shard["sha256"]
    assert read_manifest(out).to_dict() == manifest

    # The same files converted from local disk to local disk are the same dataset, bit for bit:
    # the gs:// run used Beam's multi-process runner and this one a single process, but every
    # float is computed per event by NumPy on this same machine, whatever the grouping
    # (docs/data_prep_convert.md).
    local = convert(ConvertConfig(inputs=mc_files, output=str(tmp_path / "local"), encoding="sparse",
                                  compression="gzip", min_shards=2), IN_PROCESS)
    assert local["content_hash"] == manifest["content_hash"]

    # Reading back from gs://: shards are staged through the uri layer (TensorFlow's own gs://
    # cannot reach an emulator), checked against the manifest's sha256, then read by tf.data.
    from_gcs = load_split_numpy(out, "train")
    from_disk = load_split_numpy(str(tmp_path / "local"), "train")
    a, b = np.argsort(from_gcs["energy"]), np.argsort(from_disk["energy"])
    for key in from_gcs:
        np.testing.assert_array_equal(from_gcs[key][a], from_disk[key][b])
    batch = next(iter(make_dataset(out, "train", 4, stage_dir=str(tmp_path / "stage"))))
    assert batch["ecal"].shape == (4, 51, 51, 25)
    assert sorted(os.listdir(tmp_path / "stage")) == sorted(read_manifest(out).shard_names("train"))

    # A non-empty gs:// destination is refused without --overwrite, replaced with it.
    with pytest.raises(FileExistsError, match=out):
        convert(ConvertConfig(inputs=mc_files, output=out), IN_PROCESS)
    again = convert(ConvertConfig(inputs=[f"gs://{gcs_bucket}/raw/*.h5"], output=out, overwrite=True, min_shards=1,
                                  encoding="dense"), IN_PROCESS)
    assert sorted(uri.basename(u) for u in uri.list_files(out)) == sorted(
        [s["name"] for s in again["shards"]] + ["manifest.json"])
    assert again["encoding"] == "dense"


def test_corrupted_staged_shard_is_detected(gcs_bucket, mc_files, tmp_path):
    out = f"gs://{gcs_bucket}/ds"
    manifest = convert(ConvertConfig(inputs=mc_files[:1], output=out, min_shards=1, test_fraction=0.5), IN_PROCESS)
    name = manifest["shards"][0]["name"]
    uri.write_bytes(uri.join(out, name), b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        make_dataset(out, manifest["shards"][0]["split"], 2, stage_dir=str(tmp_path / "s"))
