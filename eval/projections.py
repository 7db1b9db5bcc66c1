"""Average shower images: the x-y and y-z projections summed over events, filled batch by batch.

The report draws the mean shower of each sample seen from the front (x-y, summed over depth z)
and from the side (y-z, summed over x; y is the axis the incident angle tilts the shower along),
as 3DGAN's analysis shows average images of Geant4 and GAN showers. Only the sums and the event
count are kept, so memory does not grow with the number of events and two partial sums add.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ProjectionSums:
    """Sums of the x-y and y-z projections of n showers in raw units.

    Attributes:
        xy: Sum over events of each shower summed over z, (X, Y).
        yz: Sum over events of each shower summed over x, (Y, Z).
        n_events: Showers added.
    """

    xy: np.ndarray
    yz: np.ndarray
    n_events: int = 0

    @classmethod
    def empty(cls, image_shape: tuple[int, int, int]) -> "ProjectionSums":
        nx, ny, nz = (int(d) for d in image_shape)
        return cls(np.zeros((nx, ny)), np.zeros((ny, nz)), 0)

    def add(self, block: np.ndarray) -> "ProjectionSums":
        """Add a batch of showers (c, X, Y, Z) (a trailing channel of 1 is accepted); returns self."""
        block = np.asarray(block)
        if block.ndim == 5 and block.shape[-1] == 1:
            block = block[..., 0]
        if block.ndim != 4 or block.shape[1:3] != self.xy.shape or block.shape[2:] != self.yz.shape:
            raise ValueError(f"showers of shape {block.shape[1:]} do not fit projections {self.xy.shape} / {self.yz.shape}")
        self.xy += block.sum(axis=(0, 3), dtype=np.float64)
        self.yz += block.sum(axis=(0, 1), dtype=np.float64)
        self.n_events += int(block.shape[0])
        return self

    def merge(self, other: "ProjectionSums") -> "ProjectionSums":
        """The sums of both samples (e.g. two streamed parts)."""
        return ProjectionSums(self.xy + other.xy, self.yz + other.yz, self.n_events + other.n_events)

    def mean_xy(self) -> np.ndarray:
        """Mean x-y image per shower (NaN when no shower was added)."""
        return self.xy / self.n_events if self.n_events else np.full_like(self.xy, np.nan)

    def mean_yz(self) -> np.ndarray:
        """Mean y-z image per shower (NaN when no shower was added)."""
        return self.yz / self.n_events if self.n_events else np.full_like(self.yz, np.nan)


def project(showers: np.ndarray, index: np.ndarray | None = None, chunk_size: int = 256) -> ProjectionSums:
    """Projection sums of ``showers[index]`` (all when None), chunk by chunk (no full copy).

    Args:
        showers: Raw-unit showers, (n, X, Y, Z) (or with a trailing channel of 1).
        index: Event indices to include, or None for every event.
        chunk_size: Events summed at once.
    """
    showers = np.asarray(showers)
    if showers.ndim == 5 and showers.shape[-1] == 1:
        showers = showers[..., 0]
    sums = ProjectionSums.empty(showers.shape[1:4])
    idx = np.arange(showers.shape[0]) if index is None else np.asarray(index)
    for start in range(0, idx.size, chunk_size):
        sums.add(showers[idx[start : start + chunk_size]])
    return sums
