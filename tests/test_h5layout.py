"""Layout detection, structural validation and bad-event checks on real, crafted HDF5 files."""

from __future__ import annotations

import io
import os
import pickle

import h5py
import numpy as np
import pytest

from data_prep import h5layout
from data_prep.angle import measured_angle
from data_prep.errors import InputValidationError

N = 6
#: Sampling fraction of the crafted files (raw ECAL sum / 50 / energy), as in the 3DGAN files.
SAMPLING_FRACTION = 0.02


def _shower_like(n: int, shape: tuple[int, int, int], seed: int = 0, energies=None) -> np.ndarray:
    """Small positive deposits around the grid centre (enough for a measurable angle).

    With `energies` (GeV) each event is scaled to the 3DGAN raw scale, raw sum = 50 x 0.02 x E,
    so the files also pass the converter's sampling-fraction check.
    """
    rng = np.random.default_rng(seed)
    ecal = np.zeros((n, *shape), dtype=np.float32)
    cx, cy = shape[0] // 2, shape[1] // 2
    ecal[:, cx - 1 : cx + 2, cy - 1 : cy + 2, :] = rng.uniform(0.1, 1.0, size=(n, 3, 3, shape[2]))
    if energies is not None:
        raw_sum = 50.0 * SAMPLING_FRACTION * np.asarray(energies, np.float64)
        ecal *= (raw_sum / ecal.reshape(n, -1).sum(axis=1, dtype=np.float64)).astype(np.float32)[:, None, None, None]
    return ecal


def write_variable(path, n=N, chunks=None, drop=(), override=None, **kw) -> str:
    """A valid variable-angle file, minus the `drop` keys, with `override` datasets replaced."""
    energy = np.linspace(20.0, 120.0, n).astype(np.float32)
    data = {
        "ECAL": _shower_like(n, (51, 51, 25), energies=energy),
        "energy": energy,
        "theta": np.full(n, np.deg2rad(80.0), np.float32),
        "mtheta": np.full(n, np.deg2rad(81.0), np.float64),
        "eta": np.zeros(n, np.float32),
        "sum": np.ones(n, np.float32),
    }
    data.update(override or {})
    with h5py.File(path, "w") as h5:
        for key, value in data.items():
            if key in drop:
                continue
            if key == "ECAL" and chunks:
                h5.create_dataset(key, data=value, chunks=(chunks, 51, 51, 25), compression="gzip")
            else:
                h5.create_dataset(key, data=value)
    return str(path)


def write_fixed(path, n=N, energy_kind="target2d", hcal=True, ecal_dtype=np.float32) -> str:
    """A valid fixed-angle file whose primary energy is stored as `energy_kind` ("none": absent)."""
    energies = np.linspace(10.0, 60.0, n).astype(np.float32)
    with h5py.File(path, "w") as h5:
        h5["ECAL"] = _shower_like(n, (25, 25, 25), energies=energies).astype(ecal_dtype)
        if hcal:
            h5["HCAL"] = np.zeros((n, 5, 5, 60), np.float32)
        if energy_kind == "target2d":
            target = np.zeros((n, 5), np.float32)
            target[:, 1] = energies
            h5["target"] = target
        elif energy_kind == "target3d":
            target = np.zeros((n, 1, 5), np.float32)
            target[:, 0, 1] = energies
            h5["target"] = target
        elif energy_kind == "energy3d":
            energy = np.zeros((n, 1, 5), np.float32)
            energy[:, 0, 1] = energies
            h5["energy"] = energy
    return str(path)


def expect_error(source, match_dataset=None, match_event=None, name=None, func="inspect"):
    with pytest.raises(InputValidationError) as info:
        if func == "inspect":
            h5layout.inspect_file(source, name=name)
        else:
            h5layout.read_events(source, 0, N, name=name)
    err = info.value
    uri = name if name is not None else os.fspath(source)
    assert uri in str(err), str(err)
    assert err.uri == uri
    if match_dataset is not None:
        assert err.dataset == match_dataset, str(err)
        assert f"'{match_dataset}'" in str(err)
    if match_event is not None:
        assert err.event_index == match_event
        assert f"event {match_event}" in str(err)
    return err


# ---------------------------------------------------------------------------------- good files


def test_variable_angle_round_trip_casts_and_reports_chunks(tmp_path):
    ecal64 = _shower_like(N, (51, 51, 25)).astype(np.float64) * 1.5
    path = write_variable(tmp_path / "v.h5", chunks=4, override={"ECAL": ecal64})
    info = h5layout.inspect_file(path)
    assert info.layout == "variable_angle"
    assert (info.n_events, info.image_shape, info.chunk_events) == (N, (51, 51, 25), 4)
    assert info.size_bytes == os.path.getsize(path)
    block = h5layout.read_events(path, 2, 5)
    assert block.ecal.dtype == np.float32 and block.ecal.shape == (3, 51, 51, 25)
    np.testing.assert_allclose(block.ecal, ecal64[2:5].astype(np.float32))
    np.testing.assert_allclose(block.energy, np.linspace(20.0, 120.0, N)[2:5], rtol=1e-6)
    assert block.mtheta.dtype == np.float32
    np.testing.assert_allclose(block.mtheta, np.deg2rad(81.0), rtol=1e-6)
    np.testing.assert_array_equal(block.event_index, [2, 3, 4])
    assert h5layout.find_bad_events(block, path, energy_range=(2.0, 500.0)) == []


def test_contiguous_dataset_gets_a_default_chunk_and_ranges_align(tmp_path):
    path = write_variable(tmp_path / "c.h5", n=10)
    info = h5layout.inspect_file(path)
    per_event = 51 * 51 * 25 * 4
    assert info.chunk_events == min(10, h5layout.DEFAULT_RANGE_BYTES // per_event)
    chunked = h5layout.FileInfo(**{**info.__dict__, "chunk_events": 4})
    assert h5layout.plan_ranges(chunked, 5) == [(0, 8), (8, 10)]
    assert h5layout.plan_ranges(chunked) == [(0, 4), (4, 8), (8, 10)]


def test_file_object_source_uses_given_name(tmp_path):
    path = write_variable(tmp_path / "v.h5")
    with open(path, "rb") as fh:
        data = fh.read()
    info = h5layout.inspect_file(io.BytesIO(data), name="gs://bucket/v.h5")
    assert info.uri == "gs://bucket/v.h5" and info.n_events == N
    block = h5layout.read_events(io.BytesIO(data), 0, 2, name="gs://bucket/v.h5")
    assert block.uri == "gs://bucket/v.h5" and len(block) == 2


def test_missing_mtheta_is_computed_from_the_shower(tmp_path):
    path = write_variable(tmp_path / "nomt.h5", drop=("mtheta",))
    info = h5layout.inspect_file(path)
    assert not info.has_mtheta
    block = h5layout.read_events(path, 0, N)
    np.testing.assert_allclose(block.mtheta, measured_angle(block.ecal), rtol=1e-6)


@pytest.mark.parametrize("kind", ["target2d", "target3d", "energy3d"])
def test_fixed_angle_layouts(tmp_path, kind):
    path = write_fixed(tmp_path / f"EleEscan_{kind}.h5", energy_kind=kind, ecal_dtype=np.float64)
    info = h5layout.inspect_file(path)
    assert info.layout == "fixed_angle" and info.image_shape == (25, 25, 25)
    assert info.energy_key == ("energy" if kind == "energy3d" else "target")
    block = h5layout.read_events(path, 0, N)
    np.testing.assert_allclose(block.energy, np.linspace(10.0, 60.0, N), rtol=1e-6)
    np.testing.assert_allclose(block.theta, np.pi / 2, rtol=1e-7)
    np.testing.assert_allclose(block.mtheta, np.pi / 2, rtol=1e-7)
    assert block.ecal.dtype == np.float32 and block.energy.shape == (N,)


def test_variable_angle_energy_as_column_vector(tmp_path):
    """`energy` (N, 1) is read as the primary energy itself."""
    energy = np.linspace(20.0, 120.0, N).astype(np.float32)
    path = write_variable(tmp_path / "col.h5", override={"energy": energy[:, None]})
    info = h5layout.inspect_file(path)
    assert (info.energy_key, info.energy_column) == ("energy", "[0]")
    np.testing.assert_allclose(h5layout.read_events(path, 0, N).energy, energy, rtol=1e-6)


# ----------------------------------------------------------------------- structural rejection


def _energy_rows(shape: tuple, energies: np.ndarray) -> np.ndarray:
    """An energy dataset of `shape` whose first value per event is the energy and the rest 1.0:
    the (N, 2) file that once came out as 1.0 GeV for every event."""
    rows = np.ones(shape, np.float32)
    rows.reshape(shape[0], -1)[:, 0] = energies
    return rows


@pytest.mark.parametrize("shape", [(N, 2), (N, 3), (N, 5), (N, 1, 5), (N, 2, 1)])
def test_variable_angle_energy_with_columns_is_rejected(tmp_path, shape):
    energy = _energy_rows(shape, np.linspace(20.0, 120.0, N))
    path = write_variable(tmp_path / "cols.h5", override={"energy": energy})
    for func in ("inspect", "read"):
        err = expect_error(path, match_dataset="energy", func=func)
        assert str(shape) in err.reason
        assert "accepted: 'energy' (N,); 'energy' (N, 1)" in err.reason, err.reason


@pytest.mark.parametrize(
    "key,shape",
    [("target", (N, 3)), ("target", (N, 6)), ("target", (N,)), ("target", (N, 2, 5)),
     ("energy", (N,)), ("energy", (N, 5))],
)
def test_fixed_angle_undocumented_energy_shapes_are_rejected(tmp_path, key, shape):
    path = write_fixed(tmp_path / "EleEscan_shape.h5", energy_kind="none")
    with h5py.File(path, "a") as h5:
        h5[key] = _energy_rows(shape, np.linspace(10.0, 60.0, N))
    err = expect_error(path, match_dataset=key)
    assert str(shape) in err.reason
    assert ("accepted: 'target' (N, 5), primary energy at [:, 1]; 'target' (N, 1, 5), primary energy "
            "at [:, 0, 1]; 'energy' (N, 1, 5), primary energy at [:, 0, 1]") in err.reason, err.reason



@pytest.mark.parametrize("key", ["ECAL", "energy", "theta"])
def test_missing_key_names_file_and_dataset(tmp_path, key):
    path = write_variable(tmp_path / f"no_{key}.h5", drop=(key,))
    err = expect_error(path, match_dataset=key)
    assert "missing" in err.reason


def test_fixed_angle_without_energy_names_target(tmp_path):
    path = write_fixed(tmp_path / "EleEscan_noenergy.h5", energy_kind="none")
    expect_error(path, match_dataset="target")


@pytest.mark.parametrize(
    "key,value",
    [
        ("ECAL", np.zeros((N, 51, 51, 24), np.float32)),
        ("ECAL", np.zeros((N, 51, 51, 25, 2), np.float32)),
        ("theta", np.zeros((N - 1,), np.float32)),
        ("energy", np.zeros((N, 3, 3), np.float32)),
        ("energy", np.zeros((N + 2,), np.float32)),
        ("sum", np.zeros((N, 2), np.float32)),
    ],
)
def test_wrong_shape_names_dataset_and_shape(tmp_path, key, value):
    path = write_variable(tmp_path / f"shape_{key}.h5", override={key: value})
    err = expect_error(path, match_dataset=key)
    assert str(tuple(value.shape)) in str(err)


def test_wrong_hcal_shape_in_fixed_layout(tmp_path):
    path = write_fixed(tmp_path / "EleEscan_hcal.h5")
    with h5py.File(path, "a") as h5:
        del h5["HCAL"]
        h5["HCAL"] = np.zeros((N, 5, 5, 59), np.float32)
    expect_error(path, match_dataset="HCAL")


@pytest.mark.parametrize(
    "key,value",
    [
        ("ECAL", np.zeros((N, 51, 51, 25), np.int32)),
        ("energy", np.arange(N, dtype=np.int64)),
        ("energy", np.array([b"100"] * N)),
        ("mtheta", np.zeros(N, np.int16)),
    ],
)
def test_wrong_dtype_names_dataset_and_dtype(tmp_path, key, value):
    path = write_variable(tmp_path / f"dtype_{key}.h5", override={key: value})
    err = expect_error(path, match_dataset=key)
    assert "dtype" in err.reason and str(value.dtype) in err.reason


def test_empty_file_with_zero_events(tmp_path):
    path = write_variable(
        tmp_path / "empty.h5",
        override={
            "ECAL": np.zeros((0, 51, 51, 25), np.float32),
            **{k: np.zeros((0,), np.float32) for k in ("energy", "theta", "mtheta", "eta", "sum")},
        },
    )
    err = expect_error(path, match_dataset="ECAL")
    assert "0 events" in err.reason


def test_truncated_file_is_rejected_by_inspect_and_read(tmp_path):
    good = write_variable(tmp_path / "good.h5", chunks=2)
    data = open(good, "rb").read()
    for cut in (len(data) // 2, len(data) - 100, 4000):
        bad = tmp_path / f"trunc_{cut}.h5"
        bad.write_bytes(data[:cut])
        err = expect_error(bad)
        assert "truncated" in err.reason
        expect_error(bad, func="read")
        # The same bytes as a file object, named like a bucket object.
        expect_error(io.BytesIO(data[:cut]), name=f"gs://b/trunc_{cut}.h5")


def test_non_hdf5_and_zero_byte_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("energy,theta\n1,2\n" * 100)
    err = expect_error(text)
    assert "not an HDF5 file" in err.reason
    zero = tmp_path / "zero.h5"
    zero.write_bytes(b"")
    err = expect_error(zero)
    assert "empty" in err.reason
    npy = tmp_path / "array.h5"
    np.save(npy.with_suffix(".npy"), np.zeros(10))
    os.replace(npy.with_suffix(".npy"), npy)
    expect_error(npy, func="read")


def test_range_outside_file(tmp_path):
    path = write_variable(tmp_path / "v.h5")
    with pytest.raises(InputValidationError, match=r"event range \[4, 9\)") as info:
        h5layout.read_events(path, 4, 9)
    assert info.value.uri == path


# ------------------------------------------------------------------------------- bad events


def _bad_event_file(tmp_path) -> str:
    ecal = _shower_like(10, (51, 51, 25))
    energy = np.linspace(20.0, 110.0, 10).astype(np.float32)
    ecal[1, 25, 25, 3] = np.nan
    energy[3] = np.inf
    energy[4] = 0.0
    energy[5] = -7.0
    energy[6] = 900.0
    ecal[8, 20, 20, 20] = -0.5
    theta = np.full(10, np.deg2rad(70.0), np.float32)
    theta[9] = 4.0
    return write_variable(
        tmp_path / "bad.h5", n=10, override={"ECAL": ecal, "energy": energy, "theta": theta}
    )


def test_find_bad_events_reasons_and_indices(tmp_path):
    path = _bad_event_file(tmp_path)
    block = h5layout.read_events(path, 0, 10)
    bad = h5layout.find_bad_events(block, path, energy_range=(2.0, 500.0))
    assert bad == [
        (1, "non_finite"),
        (3, "non_finite"),
        (4, "nonpositive_energy"),
        (5, "nonpositive_energy"),
        (6, "energy_out_of_range"),
        (8, "negative_cells"),
        (9, "angle_out_of_range"),
    ]
    # Without a declared range, 900 GeV is acceptable.
    no_range = h5layout.find_bad_events(block, path)
    assert 6 not in [i for i, _ in no_range]
    # Indices are file indices, not block positions.
    tail = h5layout.read_events(path, 5, 10)
    assert [i for i, _ in h5layout.find_bad_events(tail, path, (2.0, 500.0))] == [5, 6, 8, 9]


@pytest.mark.parametrize(
    "start,dataset,event,reason",
    [
        (0, "ECAL", 1, "non_finite"),
        (2, "energy", 3, "non_finite"),
        (4, "energy", 4, "nonpositive_energy"),
        (6, "energy", 6, "energy_out_of_range"),
        (7, "ECAL", 8, "negative_cells"),
        (9, "theta", 9, "angle_out_of_range"),
    ],
)
def test_check_events_error_names_file_dataset_event(tmp_path, start, dataset, event, reason):
    path = _bad_event_file(tmp_path)
    block = h5layout.read_events(path, start, 10)
    with pytest.raises(InputValidationError) as info:
        h5layout.check_events(block, path, energy_range=(2.0, 500.0))
    err = info.value
    assert (err.uri, err.dataset, err.event_index) == (path, dataset, event)
    assert reason in str(err) and path in str(err) and f"event {event}" in str(err)


def test_error_survives_pickling():
    err = InputValidationError("gs://b/f.h5", "non_finite: x", dataset="ECAL", event_index=7)
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, InputValidationError) and isinstance(copy, ValueError)
    assert (copy.uri, copy.dataset, copy.event_index, copy.reason) == (
        "gs://b/f.h5", "ECAL", 7, "non_finite: x"
    )
    assert str(copy) == str(err) == "file gs://b/f.h5, dataset 'ECAL', event 7: non_finite: x"


def test_corrupt_chunk_is_reported_with_dataset_and_range(tmp_path):
    path = write_variable(tmp_path / "corrupt.h5", chunks=2)
    with h5py.File(path, "r") as h5:
        chunk = h5["ECAL"].id.get_chunk_info(1)  # events 2 and 3
    data = bytearray(open(path, "rb").read())
    middle = chunk.byte_offset + chunk.size // 2
    data[middle : middle + 64] = bytes(range(64))
    open(path, "wb").write(bytes(data))
    assert h5layout.inspect_file(path).n_events == N  # metadata intact
    assert len(h5layout.read_events(path, 0, 2)) == 2  # the first chunk still reads
    with pytest.raises(InputValidationError) as info:
        h5layout.read_events(path, 2, 4)
    err = info.value
    assert (err.uri, err.dataset, err.event_index) == (path, "ECAL", 2)
    assert "events 2..3" in str(err)


def test_missing_path_and_directory_are_clear_errors(tmp_path):
    err = expect_error(tmp_path / "nowhere.h5")
    assert "cannot open file" in err.reason
    err = expect_error(tmp_path)
    assert "cannot open file" in err.reason
