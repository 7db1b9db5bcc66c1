"""Tests of the record codec (dense/sparse, GZIP framing) and of the manifest's hash and histograms."""

from __future__ import annotations

import gzip
import io
import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from data_prep import manifest as manifest_lib
from data_prep import records


def _showers(n: int, seed: int = 0) -> np.ndarray:
    """Sparse-ish random images with a few exact zeros rows, including one all-zero image."""
    rng = np.random.default_rng(seed)
    img = rng.gamma(0.5, 2.0, size=(n, 51, 51, 25)).astype(np.float32)
    img[rng.random(img.shape) < 0.9] = 0.0
    img[0] = 0.0
    img[1, 0, 0, 0] = 7.5  # first cell (flat index 0) non-zero
    img[1, -1, -1, -1] = 3.25  # last cell non-zero
    return img


@pytest.mark.parametrize("encoding", records.ENCODINGS)
def test_encode_decode_round_trip_is_exact(encoding):
    images = _showers(4)
    serialized = [
        records.encode_event(images[i], 10.0 + i, 1.2 + i / 10, 1.3 + i / 10, float(images[i].sum()), i, 3, encoding)
        for i in range(4)
    ]
    out = records.decode_records(serialized, (51, 51, 25), encoding)
    assert sorted(out) == sorted(records.OUTPUT_KEYS)
    np.testing.assert_array_equal(out["ecal"], images)
    np.testing.assert_allclose(out["energy"], [10, 11, 12, 13])
    np.testing.assert_allclose(out["theta"], [1.2, 1.3, 1.4, 1.5], rtol=1e-6)
    np.testing.assert_allclose(out["ecal_sum"], images.reshape(4, -1).sum(axis=1), rtol=1e-6)
    assert out["ecal"].dtype == np.float32


@pytest.mark.parametrize("encoding", records.ENCODINGS)
def test_hand_written_examples_equal_tf_train_example(encoding):
    """The direct wire-format writer builds exactly the message tf.train.Example would."""
    image = _showers(2)[1]
    ours = records.encode_event(image, 123.25, 1.25, 1.5, 99.5, 2**40, 7, encoding)
    feature = {
        key: tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        for key, value in zip(records.SCALAR_FLOAT_KEYS, (123.25, 1.25, 1.5, 99.5))
    }
    feature["event_index"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[2**40]))
    feature["source_index"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[7]))
    if encoding == "dense":
        feature["ecal"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.astype("<f4").tobytes()]))
    else:
        deltas, values = records.sparse_parts(image)
        feature["ecal_index_delta"] = tf.train.Feature(int64_list=tf.train.Int64List(value=deltas.tolist()))
        feature["ecal_values"] = tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))
    expected = tf.train.Example(features=tf.train.Features(feature=feature))
    assert tf.train.Example.FromString(ours) == expected
    assert records.encode_event(image, 123.25, 1.25, 1.5, 99.5, 2**40, 7, encoding) == ours  # deterministic


def test_varints_match_protobuf():
    values = np.array([0, 1, 127, 128, 300, 16383, 16384, 2**40, 2**63 - 1], dtype=np.int64)
    packed = tf.train.Int64List(value=values.tolist()).SerializeToString()
    assert packed[0] == 0x0A and records.varint_array(values) == packed[2:]  # tag, length, varints
    with pytest.raises(ValueError, match="non-negative"):
        records.varint_array(np.array([3, -1]))
    empty = tf.train.Example.FromString(records.encode_event(np.zeros((3, 3, 3), np.float32), 1, 1, 1, 0, 0, 0, "sparse"))
    assert list(empty.features.feature["ecal_values"].float_list.value) == []


def test_sparse_is_smaller_and_stores_index_gaps():
    images = _showers(2)
    dense = records.encode_event(images[1], 1, 1, 1, 1, 0, 0, "dense")
    sparse = records.encode_event(images[1], 1, 1, 1, 1, 0, 0, "sparse")
    assert len(sparse) < len(dense) / 4
    deltas, values = records.sparse_parts(images[1])
    flat = images[1].reshape(-1)
    np.testing.assert_array_equal(np.cumsum(deltas), np.flatnonzero(flat))
    np.testing.assert_array_equal(values, flat[flat != 0])
    assert deltas[0] == 0  # the first non-zero cell is flat index 0


@pytest.mark.parametrize("encoding", records.ENCODINGS)
def test_packed_events_encode_to_the_same_records(encoding):
    """Events cross Beam's shuffle packed (non-zero cells only); the sink's coder must then write
    exactly the record the direct encoder writes."""
    from data_prep.transforms import ExampleCoder

    images = _showers(3)
    coder = ExampleCoder((51, 51, 25), encoding)
    for i in range(3):
        packed = records.pack_event(images[i], 50.0 + i, 1.1, 1.2, 33.0, i, 2)
        assert len(packed) == len(records.PACKED_FIELDS)
        np.testing.assert_array_equal(records.unpack_image(packed, (51, 51, 25)), images[i])
        direct = records.encode_event(images[i], 50.0 + i, 1.1, 1.2, 33.0, i, 2, encoding)
        assert records.encode_packed(packed, (51, 51, 25), encoding) == direct
        assert coder.encode(packed) == direct
    assert len(records.pack_event(images[0], 1, 1, 1, 1, 0, 0)[6]) == 0  # the all-zero image packs to nothing


def test_unknown_encoding_and_compression_are_named():
    with pytest.raises(ValueError, match="'png'"):
        records.check_encoding("png", "none")
    with pytest.raises(ValueError, match="'zstd'"):
        records.check_encoding("dense", "zstd")
    with pytest.raises(ValueError, match="encoding"):
        records.encode_event(np.zeros((2, 2, 2), np.float32), 1, 1, 1, 1, 0, 0, "jpeg")


@pytest.mark.parametrize("compression", records.COMPRESSIONS)
def test_tfrecord_framing_reader_matches_tensorflow(tmp_path, compression):
    path = str(tmp_path / f"x{records.shard_suffix(compression)}")
    payloads = [b"", b"a", b"hello world" * 100, bytes(range(256))]
    with tf.io.TFRecordWriter(path, options=records.tf_compression_type(compression) or None) as writer:
        for p in payloads:
            writer.write(p)
    with open(path, "rb") as fh:
        assert list(records.iter_tfrecord_file(fh, compression)) == payloads
    assert [r.numpy() for r in tf.data.TFRecordDataset(path, records.tf_compression_type(compression))] == payloads
    if compression == "gzip":
        with open(path, "rb") as fh:
            assert fh.read(2) == b"\x1f\x8b"


def test_truncated_tfrecord_is_an_error():
    stream = io.BytesIO()
    stream.write((100).to_bytes(8, "little") + b"\0" * 4 + b"short")
    stream.seek(0)
    with pytest.raises(ValueError, match="truncated"):
        list(records.iter_tfrecord_frames(stream))


def test_record_digest_is_order_independent_and_content_sensitive():
    a, b, c = (records.record_digest(x) for x in (b"one", b"two", b"three"))
    assert records.combine_digests(a, b, c) == records.combine_digests(c, records.combine_digests(b, a))
    assert records.combine_digests(a, b) != records.combine_digests(a, c)


def test_histogram_counts_have_underflow_and_overflow():
    edges = np.array([0.0, 1.0, 2.0])
    counts = manifest_lib.histogram_counts(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 5.0]), edges)
    # [under, [0,1), [1,2], over]: 2.0 sits in the last bin like numpy.histogram
    assert counts.tolist() == [1, 2, 2, 1]
    assert counts.sum() == 6


def _manifest(**over) -> manifest_lib.Manifest:
    base = dict(
        image_shape=[51, 51, 25], encoding="dense", compression="none", counts={"train": 9, "test": 1},
        shards=[{"split": "train", "name": "train-00000-of-00001.tfrecord", "records": 9, "bytes": 1, "sha256": "a"}],
        preprocessing={"power": 0.85}, split={"by": "event"}, events_read=10, bad_events={}, dropped_low_sum=0,
        histograms={}, records_digest={"train": "1", "test": "2"},
        sources=[{"name": "f.h5", "uri": "/data/f.h5", "sha256": "x"}], versions={"numpy": "2"},
        config={"inputs": ["/data/f.h5"], "output": "/out", "overwrite": False, "encoding": "dense"}, seed=0,
    )
    base.update(over)
    return manifest_lib.Manifest(**base)


def test_content_hash_ignores_where_and_when_but_not_what():
    ref = manifest_lib.compute_content_hash(_manifest().to_dict())
    moved = _manifest(
        output="gs://b/x", created_utc="2030-01-01", run={"beam_seconds": 3},
        shards=[{"split": "train", "name": "train-00000-of-00002.tfrecord", "records": 4, "bytes": 9, "sha256": "b"}],
        sources=[{"name": "f.h5", "uri": "gs://b/f.h5", "sha256": "x"}],
        config={"inputs": ["gs://b/*.h5"], "output": "gs://b/x", "overwrite": True, "encoding": "dense"},
    )
    assert manifest_lib.compute_content_hash(moved.to_dict()) == ref
    for change in ({"records_digest": {"train": "3", "test": "2"}}, {"seed": 1},
                   {"sources": [{"name": "f.h5", "uri": "/data/f.h5", "sha256": "y"}]},
                   {"config": {"encoding": "sparse", "inputs": [], "output": "", "overwrite": False}}):
        assert manifest_lib.compute_content_hash(_manifest(**change).to_dict()) != ref, change


def test_manifest_round_trip_and_missing_manifest(tmp_path):
    m = _manifest().with_content_hash()
    manifest_lib.write_manifest(m, str(tmp_path))
    assert manifest_lib.load_manifest(str(tmp_path)) == m
    assert manifest_lib.load_manifest(str(tmp_path / "manifest.json")) == m
    assert m.shard_names("train") == ["train-00000-of-00001.tfrecord"]
    with pytest.raises(ValueError, match="split"):
        m.shard_names("validation")
    with pytest.raises(FileNotFoundError, match="not a finished dataset"):
        manifest_lib.load_manifest(str(tmp_path / "elsewhere"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(gzip.compress(b"{}").decode("latin-1"))
    with pytest.raises(ValueError, match="not a valid caloforge manifest"):
        manifest_lib.load_manifest(str(tmp_path / "bad"))


def _write_manifest_dict(folder, drop=(), **over) -> str:
    """A manifest.json as another caloforge might write it: _manifest()'s keys, changed."""
    folder.mkdir(exist_ok=True)
    data = {**_manifest().to_dict(), **over}
    for key in drop:
        del data[key]
    (folder / "manifest.json").write_text(json.dumps(data))
    return str(folder / "manifest.json")


def test_newer_major_format_version_says_upgrade_caloforge(tmp_path):
    path = _write_manifest_dict(tmp_path / "v2", format_version="2.0", shard_index={"train": []})
    with pytest.raises(manifest_lib.ManifestVersionError) as err:
        manifest_lib.load_manifest(str(tmp_path / "v2"))
    message = str(err.value)
    for part in (path, "'2.0'", f"{manifest_lib.FORMAT_VERSION!r}", "upgrade caloforge"):
        assert part in message, (part, message)
    assert "not a valid caloforge manifest" not in message  # a newer file, not a broken one


def test_newer_minor_format_version_tolerates_unknown_keys_and_logs_once(tmp_path, caplog):
    written = manifest_lib.write_manifest(_manifest(), str(tmp_path / "now"))
    assert json.loads(open(written).read())["format_version"] == manifest_lib.FORMAT_VERSION == "1.0"
    path = _write_manifest_dict(tmp_path / "v1.3", format_version="1.3", shard_index={"train": [0, 9]}, signed_by="x")
    with caplog.at_level(logging.WARNING, logger="data_prep.manifest"):
        loaded = [manifest_lib.load_manifest(path) for _ in range(3)]
    assert loaded[0] == loaded[2] and loaded[0].counts == {"train": 9, "test": 1}
    assert loaded[0].format_version == "1.3"
    notes = [r.getMessage() for r in caplog.records if "signed_by" in r.getMessage()]
    assert len(notes) == 1 and "shard_index" in notes[0] and path in notes[0]
    # at this caloforge's own version an unknown key is still an error (a typo or a hand edit)
    same = _write_manifest_dict(tmp_path / "v1.0", format_version="1.0", shard_index={})
    with pytest.raises(ValueError, match=r"unknown keys \['shard_index'\]"):
        manifest_lib.load_manifest(same)


@pytest.mark.parametrize("version", ["1", "v1", "1.x", "1.0.0", 1.0, True, None, "missing"])
def test_malformed_format_version_is_named(tmp_path, version):
    if version == "missing":
        path = _write_manifest_dict(tmp_path / "bad", drop=["format_version"])
    else:
        path = _write_manifest_dict(tmp_path / "bad", format_version=version)
    with pytest.raises(manifest_lib.ManifestVersionError, match="format_version") as err:
        manifest_lib.load_manifest(path)
    assert path in str(err.value)
    if version != "missing":
        assert f"{json.loads(json.dumps(version))!r}" in str(err.value) and "MAJOR.MINOR" in str(err.value)
    # manifests written before minor versions existed hold the integer 1: still read, as 1.0
    legacy = _write_manifest_dict(tmp_path / "legacy", format_version=1)
    assert manifest_lib.load_manifest(legacy).counts["train"] == 9
