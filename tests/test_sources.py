"""Finding and describing input HDF5 files before a conversion starts."""

import h5py
import numpy as np
import pytest

from data_prep.errors import InputValidationError
from data_prep.sources import describe_sources, list_hdf5


def _write(path, n, shape=(51, 51, 25)):
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.zeros((n, *shape), np.float32)
        if shape == (51, 51, 25):
            f["energy"] = np.full(n, 50.0, np.float32)
            f["theta"] = np.full(n, 1.5, np.float32)
        else:
            f["target"] = np.tile(np.array([0, 50.0, 0, 0, 0], np.float32), (n, 1))
    return str(path)


def test_lists_folder_pattern_and_single_file(tmp_path):
    a = _write(tmp_path / "a.h5", 3)
    (tmp_path / "sub").mkdir()
    b = _write(tmp_path / "sub" / "b.hdf5", 2)
    (tmp_path / "notes.txt").write_text("not data")
    assert list_hdf5(str(tmp_path)) == [a, b]
    assert list_hdf5(str(tmp_path / "*.h5")) == [a]
    assert list_hdf5(a) == [a]


def test_nothing_found_names_the_location(tmp_path):
    with pytest.raises(FileNotFoundError, match="empty-folder"):
        list_hdf5(str(tmp_path / "empty-folder"))


def test_describes_counts_and_layouts(tmp_path):
    files = [_write(tmp_path / "a.h5", 3), _write(tmp_path / "b.h5", 4)]
    description = describe_sources(files)
    assert description["events"] == 7
    assert description["layouts"] == ["variable_angle"]
    assert [f["n_events"] for f in description["files"]] == [3, 4]


def test_mixed_shapes_are_refused_naming_files(tmp_path):
    files = [_write(tmp_path / "a.h5", 2), _write(tmp_path / "fixed.h5", 2, shape=(25, 25, 25))]
    with pytest.raises(InputValidationError, match="fixed.h5"):
        describe_sources(files)


def test_bad_file_is_named_before_conversion(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(InputValidationError, match="broken.h5"):
        describe_sources([_write(tmp_path / "a.h5", 2), str(bad)])
