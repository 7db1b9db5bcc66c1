"""The 3DGAN preprocessing: threshold, low-sum drop, raw-sum label, power transform and its inverse."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.h5layout import EventBlock
from data_prep.preprocess import PreprocessConfig, invert_power, preprocess_block


def make_block() -> EventBlock:
    ecal = np.zeros((4, 5, 5, 5), np.float32)
    ecal[0, 2, 2, :] = 4.0  # raw sum 20: kept
    ecal[0, 0, 0, 0] = 1e-5  # below the threshold: zeroed, not counted
    ecal[1, 2, 2, :2] = 5.0  # raw sum exactly 10: dropped (<= min_raw_sum)
    ecal[2, :, :, 0] = 0.5  # raw sum 12.5: kept
    ecal[3, 1, 1, 1] = 3.0  # raw sum 3: dropped
    return EventBlock(
        ecal=ecal,
        energy=np.array([20.0, 10.0, 12.5, 3.0], np.float32),
        theta=np.full(4, 1.5, np.float32),
        mtheta=np.array([1.4, 1.5, 1.6, 1.7], np.float32),
        event_index=np.arange(100, 104, dtype=np.int64),
        uri="x.h5",
    )


def test_preprocess_block_threshold_drop_and_power():
    cfg = PreprocessConfig(threshold=1e-4, power=0.85, min_raw_sum=10.0)
    out, dropped = preprocess_block(make_block(), cfg)
    assert dropped == 2
    np.testing.assert_array_equal(out.event_index, [100, 102])
    np.testing.assert_allclose(out.ecal_sum, [20.0, 12.5], rtol=1e-6)
    assert out.ecal[0, 0, 0, 0] == 0.0
    np.testing.assert_allclose(out.ecal[0, 2, 2, :], 4.0**0.85, rtol=1e-6)
    np.testing.assert_allclose(out.mtheta, [1.4, 1.6])
    assert out.ecal.dtype == np.float32 and out.ecal_sum.dtype == np.float32
    # The raw sum is the label before the power transform, not the sum of the image.
    assert out.ecal[0].sum() < out.ecal_sum[0]


def test_input_block_is_not_modified():
    block = make_block()
    before = block.ecal.copy()
    preprocess_block(block, PreprocessConfig(threshold=1e-4))
    np.testing.assert_array_equal(block.ecal, before)


def test_invert_power_round_trip_and_clips_negatives():
    raw = np.array([0.0, 1e-3, 0.5, 7.0, 300.0], np.float32)
    image = raw**0.85
    np.testing.assert_allclose(invert_power(image, 0.85), raw, rtol=1e-5)
    assert invert_power(np.array([-0.2], np.float32))[0] == 0.0
    with pytest.raises(ValueError, match="power"):
        invert_power(image, 0.0)


def test_config_validation_and_dict_round_trip():
    cfg = PreprocessConfig(threshold=2e-4, power=0.8, min_raw_sum=5.0, angle_key="theta")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="power"):
        PreprocessConfig(power=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        PreprocessConfig(threshold=-1.0)
    with pytest.raises(ValueError, match="angle_key.*'phi'"):
        PreprocessConfig(angle_key="phi")
    with pytest.raises(ValueError, match="unknown keys"):
        PreprocessConfig.from_dict({"powr": 0.85})
