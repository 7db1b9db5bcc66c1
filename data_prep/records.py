"""TFRecord event encoding: tf.train.Example writing (dense or sparse ECAL) and batched TF decoding."""

from __future__ import annotations

import gzip
import hashlib
import struct
from typing import BinaryIO, Iterator

import numpy as np

ENCODING_DENSE = "dense"
ENCODING_SPARSE = "sparse"
ENCODINGS = (ENCODING_DENSE, ENCODING_SPARSE)

COMPRESSION_NONE = "none"
COMPRESSION_GZIP = "gzip"
COMPRESSIONS = (COMPRESSION_NONE, COMPRESSION_GZIP)

# Feature names inside each tf.train.Example.
F_ECAL = "ecal"  # dense: float32 little-endian bytes of the whole image
F_ECAL_DELTA = "ecal_index_delta"  # sparse: gaps between sorted flat indices of non-zero cells
F_ECAL_VALUES = "ecal_values"  # sparse: values of those cells, same order
SCALAR_FLOAT_KEYS = ("energy", "theta", "mtheta", "ecal_sum")
F_EVENT_INDEX = "event_index"
F_SOURCE_INDEX = "source_index"

#: Keys of each decoded batch (CONTRACTS.md section 2).
OUTPUT_KEYS = ("ecal", "energy", "theta", "mtheta", "ecal_sum")


def check_encoding(encoding: str, compression: str) -> None:
    """Raise ValueError naming the bad value when encoding/compression are unknown."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


def shard_suffix(compression: str) -> str:
    """File name suffix of the shards: .tfrecord or .tfrecord.gz."""
    return ".tfrecord.gz" if compression == COMPRESSION_GZIP else ".tfrecord"


def tf_compression_type(compression: str) -> str:
    """The compression_type string tf.data.TFRecordDataset expects."""
    return "GZIP" if compression == COMPRESSION_GZIP else ""


# ----------------------------------------------------------------------------------------------
# tf.train.Example wire format, written directly
#
# Example{features: Features{map<string, Feature> feature}}; Feature is a oneof of BytesList (1),
# FloatList (2, packed float) and Int64List (3, packed varint). Writing these few messages by hand
# keeps TensorFlow out of the Beam workers (importing it costs seconds and hundreds of MB per
# worker) and avoids building a proto object per event. Map entries are written sorted by key, so
# the same event always gives the same bytes (the split digests rely on it); a test checks that
# protobuf parses them into exactly the Example that tf.train.Example would build.

_LEN = 2  # wire type of length-delimited fields


def _tag(field: int) -> bytes:
    return bytes([(field << 3) | _LEN])


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"only non-negative integers are encoded here, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_array(values: np.ndarray) -> bytes:
    """Protobuf varints of a non-negative integer array, vectorised with numpy."""
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return b""
    if int(v.min()) < 0:
        raise ValueError(f"only non-negative integers are encoded here, got {int(v.min())}")
    u = v.astype(np.uint64)
    nbytes = np.ones(u.shape, dtype=np.int64)
    for k in range(1, 10):
        nbytes += u >= np.uint64(1 << (7 * k))
    starts = np.cumsum(nbytes) - nbytes
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    for k in range(int(nbytes.max())):
        sel = nbytes > k
        byte = ((u[sel] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (nbytes[sel] > k + 1).astype(np.uint8) << 7
        out[starts[sel] + k] = byte | more
    return out.tobytes()


def _len_field(field: int, payload: bytes) -> bytes:
    return _tag(field) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _len_field(1, _len_field(1, value))


def _float_feature(values: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return _len_field(2, _len_field(1, raw) if raw else b"")


def _int64_feature(values: np.ndarray) -> bytes:
    raw = varint_array(values)
    return _len_field(3, _len_field(1, raw) if raw else b"")


def serialize_example(features: dict[str, bytes]) -> bytes:
    """An Example from already-encoded Feature messages, entries sorted by key."""
    body = b"".join(
        _len_field(1, _len_field(1, key.encode("utf-8")) + _len_field(2, features[key]))
        for key in sorted(features)
    )
    return _len_field(1, body)


def sparse_parts(ecal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index gaps, values) of the non-zero cells of one image, flattened in C order.

    Gaps between consecutive sorted indices are small inside a shower, so most take one varint
    byte in the Int64List instead of the two or three an absolute index needs.
    """
    flat = np.ascontiguousarray(ecal, dtype=np.float32).reshape(-1)
    idx = np.flatnonzero(flat)
    deltas = np.diff(idx, prepend=0) if idx.size else idx
    return deltas.astype(np.int64), flat[idx]


def encode_event(
    ecal: np.ndarray,
    energy: float,
    theta: float,
    mtheta: float,
    ecal_sum: float,
    event_index: int,
    source_index: int,
    encoding: str = ENCODING_DENSE,
) -> bytes:
    """Serialize one preprocessed event as a tf.train.Example (deterministic bytes).

    Args:
        ecal: float32 image (any shape; the manifest records it).
        energy, theta, mtheta, ecal_sum: scalar labels (GeV, radians, radians, raw sum).
        event_index: Index of the event in its source file (for tracing a record back).
        source_index: Index of the source file in the manifest's `sources` list.
        encoding: "dense" (all cells as float32 bytes) or "sparse" (non-zero cells only).

    Returns:
        The serialized Example.
    """
    feature = {
        key: _float_feature(np.array([value], dtype=np.float32))
        for key, value in zip(SCALAR_FLOAT_KEYS, (energy, theta, mtheta, ecal_sum))
    }
    feature[F_EVENT_INDEX] = _int64_feature(np.array([event_index], dtype=np.int64))
    feature[F_SOURCE_INDEX] = _int64_feature(np.array([source_index], dtype=np.int64))
    if encoding == ENCODING_DENSE:
        feature[F_ECAL] = _bytes_feature(np.ascontiguousarray(ecal, dtype="<f4").tobytes())
    elif encoding == ENCODING_SPARSE:
        deltas, values = sparse_parts(ecal)
        feature[F_ECAL_DELTA] = _int64_feature(deltas)
        feature[F_ECAL_VALUES] = _float_feature(values)
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    return serialize_example(feature)


# ----------------------------------------------------------------------------------------------
# Packed events: a compact form for pipelines that move events between Beam stages
#
# A dense record is 260 kB, mostly zeros. A pipeline that shuffles events (e.g. into
# WriteToTFRecord, which groups records into a fixed number of shards) moves far fewer bytes
# when events travel as their non-zero cells and the sink's coder serializes the final Example
# (~75x fewer on the Monte Carlo). The conversion itself writes events where it reads them.

PACKED_FIELDS = ("energy", "theta", "mtheta", "ecal_sum", "event_index", "source_index", "index", "values")


def pack_event(
    ecal: np.ndarray, energy: float, theta: float, mtheta: float, ecal_sum: float, event_index: int, source_index: int
) -> tuple:
    """A plain tuple (fast for Beam's default coder) in PACKED_FIELDS order; cells as int32/float32 bytes."""
    flat = np.ascontiguousarray(ecal, dtype=np.float32).reshape(-1)
    index = np.flatnonzero(flat)
    return (
        float(energy), float(theta), float(mtheta), float(ecal_sum), int(event_index), int(source_index),
        index.astype("<i4").tobytes(), flat[index].astype("<f4").tobytes(),
    )


def unpack_image(packed: tuple, image_shape: tuple[int, ...]) -> np.ndarray:
    """The full float32 image of a packed event."""
    flat = np.zeros(int(np.prod(image_shape)), dtype=np.float32)
    flat[np.frombuffer(packed[6], dtype="<i4")] = np.frombuffer(packed[7], dtype="<f4")
    return flat.reshape(image_shape)


def encode_packed(packed: tuple, image_shape: tuple[int, ...], encoding: str) -> bytes:
    """The final serialized Example of a packed event (same bytes as encode_event on the image)."""
    energy, theta, mtheta, ecal_sum, event_index, source_index = packed[:6]
    return encode_event(unpack_image(packed, image_shape), energy, theta, mtheta, ecal_sum, event_index,
                        source_index, encoding)


def record_digest(record: bytes) -> int:
    """sha256 of one record as an integer, for the order-independent split digest."""
    return int.from_bytes(hashlib.sha256(record).digest(), "big")


def combine_digests(*digests: int) -> int:
    """Order-independent combination (sum modulo 2**256) of record digests.

    Which records share a shard depends on the shard count; the sum of record hashes does not
    (nor on their order), and it changes if any record changes.
    """
    return sum(digests) % (1 << 256)


def masked_crc32c(data: bytes) -> int:
    """The masked crc32c a TFRecord frame stores after its length and after its data."""
    import google_crc32c  # C implementation; installed with google-cloud-storage (apache-beam[gcp])

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _HashingWriter:
    """Binary file wrapper that hashes (sha256) and counts every byte written through it."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self.digest = hashlib.sha256()
        self.n_bytes = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.n_bytes += len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()


class ShardWriter:
    """Writes one TFRecord shard to a binary file object and describes it while writing.

    The description (record count, bytes, sha256 of the file, records digest) is what the
    manifest lists for each shard; computing it here, on the bytes as they go out, saves reading
    every shard back. Files are byte-for-byte reproducible: records in the order written, GZIP
    header without file name or time. The framing (length, masked crc32c of the length, data,
    masked crc32c of the data) is TensorFlow's, so tf.data reads and checks these files.
    """

    def __init__(self, fh: BinaryIO, compression: str = COMPRESSION_NONE):
        check_encoding(ENCODING_DENSE, compression)
        self._hashing = _HashingWriter(fh)
        self._gzip = None
        if compression == COMPRESSION_GZIP:
            # level 6, as Beam's TFRecord sink and zlib's default
            self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._hashing, compresslevel=6, mtime=0)
        self._out = self._gzip or self._hashing
        self.records = 0
        self.records_digest = 0

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._out.write(length + struct.pack("<I", masked_crc32c(length)))
        self._out.write(record)
        self._out.write(struct.pack("<I", masked_crc32c(record)))
        self.records_digest = combine_digests(self.records_digest, record_digest(record))
        self.records += 1

    def close(self) -> None:
        """Finish the GZIP stream (the file object itself stays open: its owner closes it)."""
        if self._gzip is not None:
            self._gzip.close()
        self._hashing.flush()

    def describe(self, name: str) -> dict:
        """The manifest's entry for this shard (call after close): split, name, records, bytes,
        sha256 and records_digest (as data_prep.transforms.describe_shard computes by reading)."""
        return {
            "split": name.split("-", 1)[0],
            "name": name,
            "records": self.records,
            "bytes": self._hashing.n_bytes,
            "sha256": self._hashing.digest.hexdigest(),
            "records_digest": f"{self.records_digest:064x}",
        }


def iter_tfrecord_frames(fh: BinaryIO) -> Iterator[bytes]:
    """Yield the records of an uncompressed TFRecord stream (framing only; CRCs not checked).

    Raises:
        ValueError: on a truncated stream.
    """
    while True:
        header = fh.read(12)
        if not header:
            return
        if len(header) < 12:
            raise ValueError("truncated TFRecord header")
        (length,) = struct.unpack("<Q", header[:8])
        data = fh.read(length)
        footer = fh.read(4)
        if len(data) < length or len(footer) < 4:
            raise ValueError("truncated TFRecord record")
        yield data


def iter_tfrecord_file(fh: BinaryIO, compression: str) -> Iterator[bytes]:
    """Records of a TFRecord file object, decompressing GZIP shards on the fly."""
    if compression == COMPRESSION_GZIP:
        with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
            yield from iter_tfrecord_frames(gz)
    else:
        yield from iter_tfrecord_frames(fh)


# ----------------------------------------------------------------------------------------------
# TensorFlow decoding


def parse_batch(serialized, image_shape: tuple[int, ...], encoding: str):
    """Decode a batch of serialized Examples into the CONTRACTS.md dict of tensors.

    Works on a whole batch at once (one parse_example call, one scatter for sparse), which is
    far cheaper than mapping a parser over single records.

    Args:
        serialized: tf.string tensor of shape (B,).
        image_shape: The image shape from the manifest.
        encoding: "dense" or "sparse".

    Returns:
        {"ecal": (B, *image_shape) float32, "energy", "theta", "mtheta", "ecal_sum": (B,)}.
    """
    import tensorflow as tf

    n_cells = int(np.prod(image_shape))
    spec = {key: tf.io.FixedLenFeature([], tf.float32) for key in SCALAR_FLOAT_KEYS}
    if encoding == ENCODING_DENSE:
        spec[F_ECAL] = tf.io.FixedLenFeature([], tf.string)
    elif encoding == ENCODING_SPARSE:
        spec[F_ECAL_DELTA] = tf.io.RaggedFeature(tf.int64)
        spec[F_ECAL_VALUES] = tf.io.RaggedFeature(tf.float32)
    else:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    parsed = tf.io.parse_example(serialized, spec)
    batch = tf.shape(serialized)[0]
    if encoding == ENCODING_DENSE:
        flat = tf.io.decode_raw(parsed[F_ECAL], tf.float32, little_endian=True)
    else:
        deltas = parsed[F_ECAL_DELTA]
        values = parsed[F_ECAL_VALUES]
        # Per-row cumulative sum of the gaps gives the flat indices: one global cumsum minus
        # the running total reached before each row starts.
        running = tf.cumsum(deltas.flat_values)
        before_row = tf.gather(tf.concat([tf.zeros([1], tf.int64), running], 0), deltas.row_starts())
        index = running - tf.repeat(before_row, tf.cast(deltas.row_lengths(), tf.int64))
        rows = tf.cast(deltas.value_rowids(), tf.int64)
        flat = tf.scatter_nd(
            tf.stack([rows, index], axis=1),
            values.flat_values,
            tf.cast(tf.stack([batch, n_cells]), tf.int64),
        )
    ecal = tf.reshape(flat, tf.concat([[batch], tf.constant(image_shape, tf.int32)], 0))
    out = {"ecal": ecal}
    for key in SCALAR_FLOAT_KEYS:
        out[key] = parsed[key]
    return out


def decode_records(records: list[bytes], image_shape: tuple[int, ...], encoding: str) -> dict[str, np.ndarray]:
    """Decode serialized Examples to numpy (tests, small tools); same code path as the reader."""
    import tensorflow as tf

    out = parse_batch(tf.constant(records, dtype=tf.string), tuple(image_shape), encoding)
    return {key: value.numpy() for key, value in out.items()}
