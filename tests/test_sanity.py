"""The per-file sampling-fraction check that catches wrong energy units, columns or ECAL scales."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from data_prep import h5layout, sanity, uri
from data_prep.errors import InputValidationError
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)
from tests.test_h5layout import N, SAMPLING_FRACTION, write_fixed, write_variable

BAND = sanity.DEFAULT_SAMPLING_FRACTION_RANGE


def _info(n_events: int, chunk_events: int) -> h5layout.FileInfo:
    return h5layout.FileInfo(uri="f.h5", layout="variable_angle", n_events=n_events, image_shape=(51, 51, 25),
                             chunk_events=chunk_events, size_bytes=1)


def _scaled_copy(path: str, target: str, key: str, factor: float) -> str:
    """A copy of a file with one dataset multiplied by `factor` (a unit or scale mistake)."""
    with h5py.File(path, "r") as src, h5py.File(target, "w") as dst:
        for name, ds in src.items():
            dst[name] = ds[()] * factor if name == key else ds[()]
    return target


def test_sample_ranges_take_whole_chunks_spread_over_the_file():
    ranges = sanity.sample_ranges(_info(10_000, 32))
    assert len(ranges) == 8 and all(start % 32 == 0 for start, _ in ranges)
    assert all(stop - start == 32 for start, stop in ranges[:-1])
    assert ranges[0][0] == 0 and ranges[-1] == (9984, 10_000)  # first and last (short) chunk both sampled
    assert sanity.sample_ranges(_info(100, 32)) == [(0, 32), (32, 64), (64, 96), (96, 100)]  # small file: all of it
    assert sanity.sample_ranges(_info(5000, 1000)) == [(0, 256)]  # one chunk, read once
    assert sum(b - a for a, b in sanity.sample_ranges(_info(10_000, 64), max_events=100)) <= 100


def test_median_leaves_out_zero_and_non_finite_events():
    energy = np.array([0.0, 50.0, 100.0, np.nan, 80.0, 60.0, -5.0])
    ecal_sum = np.array([10.0, 50.0, 200.0, 5.0, 0.0, 90.0, 5.0])  # fractions 0.02, 0.04, 0.03 usable
    median, used = sanity.median_sampling_fraction(energy, ecal_sum)
    assert used == 3 and median == pytest.approx(0.03, rel=1e-12)
    assert sanity.median_sampling_fraction(np.zeros(4), np.ones(4)) == (None, 0)


@pytest.mark.parametrize("kind", ["energy1d", "energy2d", "target2d", "target3d", "energy3d"])
def test_documented_energy_shapes_pass_with_the_right_column(tmp_path, kind):
    """Each documented shape gives the crafted files' 0.02: a wrong column (zeros) or none would not."""
    if kind == "energy1d":
        path = write_variable(tmp_path / "v.h5")
    elif kind == "energy2d":
        path = write_variable(tmp_path / "v.h5", override={"energy": np.linspace(20.0, 120.0, N, dtype=np.float32)[:, None]})
    else:
        path = write_fixed(tmp_path / "EleEscan_f.h5", energy_kind=kind)
    info = h5layout.inspect_file(path)
    median = sanity.check_sampling_fraction(path, info, BAND)
    assert median == pytest.approx(SAMPLING_FRACTION, rel=1e-3)


@pytest.mark.parametrize(
    "key,factor,median",
    [("energy", 1000.0, SAMPLING_FRACTION / 1000),  # energies in MeV
     ("ECAL", 1 / 50.0, SAMPLING_FRACTION / 50)],  # cells in deposited GeV, not the 3DGAN raw x 50
)
def test_wrong_unit_or_scale_fails_with_a_clear_message(tmp_path, key, factor, median):
    good = write_variable(tmp_path / "good.h5")
    bad = _scaled_copy(good, str(tmp_path / "wrong_unit.h5"), key, factor)
    files = [(p, h5layout.inspect_file(p)) for p in (good, bad)]
    with pytest.raises(InputValidationError) as info:
        sanity.check_sampling_fractions(files, BAND)
    err = info.value
    assert (err.uri, err.dataset) == (bad, "energy")
    text = str(err)
    assert f"is {median:.4g} over {N} sampled events" in text, text
    for needed in ("median sampling fraction", "[0.005, 0.08]", "MeV", "column", "ECAL cells on another scale",
                   "--sampling-fraction-range MIN MAX"):
        assert needed in text, (needed, text)
    # The band is configurable: the same file passes a band around its own median.
    assert sanity.check_sampling_fractions(files[1:], (median / 2, median * 2))[bad] == pytest.approx(median, rel=1e-3)


def test_no_band_reads_nothing_and_empty_events_are_not_judged(tmp_path):
    assert sanity.check_sampling_fractions([(str(tmp_path / "absent.h5"), _info(10, 2))], None) == {}
    path = write_variable(tmp_path / "empty_showers.h5", override={"ECAL": np.zeros((N, 51, 51, 25), np.float32)})
    assert sanity.check_sampling_fractions([(path, h5layout.inspect_file(path))], BAND) == {path: None}


def test_gcs_files_are_sampled_through_the_uri_layer(tmp_path, gcs_bucket):  # noqa: F811
    good = write_variable(tmp_path / "good.h5", n=40, chunks=8)
    bad = _scaled_copy(good, str(tmp_path / "mev.h5"), "energy", 1000.0)
    remote = {}
    for local in (good, bad):
        remote[local] = f"gs://{gcs_bucket}/{uri.basename(local)}"
        uri.upload_file(local, remote[local])
        with uri.open_read(remote[local]) as fh:
            remote[local] = (remote[local], h5layout.inspect_file(fh, name=remote[local]))
    medians = sanity.check_sampling_fractions([remote[good]], BAND)
    assert medians[remote[good][0]] == pytest.approx(SAMPLING_FRACTION, rel=1e-3)
    with pytest.raises(InputValidationError, match="sampling fraction") as info:
        sanity.check_sampling_fractions([remote[good], remote[bad]], BAND)
    assert info.value.uri == remote[bad][0]
