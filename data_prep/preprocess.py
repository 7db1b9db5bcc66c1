"""The 3DGAN training preprocessing: threshold cells, drop low-sum events, power-transform."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from data_prep.h5layout import EventBlock
from data_prep.strict_fields import reject_unknown_keys

ANGLE_KEYS = ("mtheta", "theta")


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw ECAL images become training images (recorded in the dataset manifest).

    Attributes:
        threshold: Cells below this raw energy are set to 0 (kills numerical noise; the raw sum
            and the image both see the thresholded cells).
        power: Exponent applied to the image after thresholding (3DGAN uses 0.85); it
            compresses the dynamic range so the generator's ReLU output can reach the core.
        min_raw_sum: Events whose thresholded raw ECAL sum is <= this are dropped (3DGAN: 10,
            i.e. showers below roughly 10 GeV in raw units).
        angle_key: Which angle is the training label: "mtheta" (measured, the 3DGAN default)
            or "theta" (generated). Both are always kept; this is recorded for the trainer.
    """

    threshold: float = 1e-6
    power: float = 0.85
    min_raw_sum: float = 10.0
    angle_key: str = "mtheta"

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"PreprocessConfig.threshold must be >= 0, got {self.threshold!r}")
        if not np.isfinite(self.power) or self.power <= 0:
            raise ValueError(f"PreprocessConfig.power must be > 0, got {self.power!r}")
        if not np.isfinite(self.min_raw_sum):
            raise ValueError(f"PreprocessConfig.min_raw_sum must be finite, got {self.min_raw_sum!r}")
        if self.angle_key not in ANGLE_KEYS:
            raise ValueError(
                f"PreprocessConfig.angle_key must be one of {ANGLE_KEYS}, got {self.angle_key!r}"
            )

    def to_dict(self) -> dict:
        """JSON-safe dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        """Inverse of to_dict; unknown keys are an error so typos do not pass silently."""
        reject_unknown_keys(cls, data, "PreprocessConfig")
        return cls(**data)


@dataclass
class ProcessedBlock:
    """Events ready to encode for training.

    Attributes:
        ecal: float32 (n, X, Y, Z): thresholded, then raised to `power`.
        energy: float32 (n,) primary energy, GeV.
        theta: float32 (n,) generated angle, radians.
        mtheta: float32 (n,) measured angle, radians.
        ecal_sum: float32 (n,) thresholded raw ECAL sum, before the power transform.
        event_index: int64 (n,) index of each kept event in its file.
    """

    ecal: np.ndarray
    energy: np.ndarray
    theta: np.ndarray
    mtheta: np.ndarray
    ecal_sum: np.ndarray
    event_index: np.ndarray

    def __len__(self) -> int:
        return int(self.energy.shape[0])


def preprocess_block(block: EventBlock, cfg: PreprocessConfig) -> tuple[ProcessedBlock, int]:
    """Apply the 3DGAN preprocessing to a block of raw events.

    Args:
        block: Raw events from h5layout.read_events (bad events already removed or rejected).
        cfg: The preprocessing settings.

    Returns:
        (ProcessedBlock of the kept events, number of events dropped for raw sum <= min_raw_sum).
    """
    ecal = np.array(block.ecal, dtype=np.float32, copy=True)
    ecal[ecal < cfg.threshold] = 0.0
    n = ecal.shape[0]
    # reshape(n, -1) cannot infer the cell count of zero events: name it.
    raw_sum = ecal.reshape(n, int(np.prod(ecal.shape[1:]))).sum(axis=1, dtype=np.float64)
    keep = raw_sum > cfg.min_raw_sum
    kept = ecal[keep]
    # Showers fill about 1 % of the cells: raising only the non-zero ones to the power is
    # ~10x cheaper than the whole grid and gives the same array (0 ** p == 0).
    nonzero = kept > 0
    kept[nonzero] = np.power(kept[nonzero], np.float32(cfg.power))
    processed = ProcessedBlock(
        ecal=kept,
        energy=np.asarray(block.energy, dtype=np.float32)[keep],
        theta=np.asarray(block.theta, dtype=np.float32)[keep],
        mtheta=np.asarray(block.mtheta, dtype=np.float32)[keep],
        ecal_sum=raw_sum[keep].astype(np.float32),
        event_index=np.asarray(block.event_index, dtype=np.int64)[keep],
    )
    return processed, int(n - keep.sum())


def invert_power(ecal: np.ndarray, power: float = 0.85) -> np.ndarray:
    """Undo the power transform: raw = image ** (1 / power), negative values clipped to 0.

    Args:
        ecal: Power-transformed images (e.g. generator output).
        power: The exponent used in preprocessing.

    Returns:
        float32 array in raw ECAL units.
    """
    if not np.isfinite(power) or power <= 0:
        raise ValueError(f"invert_power: power must be > 0, got {power!r}")
    x = np.clip(np.asarray(ecal, dtype=np.float32), 0.0, None)
    return np.power(x, np.float32(1.0 / power))
