"""Scaling arithmetic of benchmarks: speedup, parallel efficiency (time and throughput forms),
cost per epoch from a price table. Pure functions, so their answers are checked on numbers.

Time form: with T(N) the time per epoch on N replicas and a baseline run on N0 replicas,
    speedup = T(N0) / T(N),  efficiency = T(N0) x N0 / (N x T(N))   (T(1) / (N x T(N)) for N0 = 1).
Throughput form: with X(N) the showers/s,
    efficiency = (X(N) / N) / (X(N0) / N0).
The two agree when an epoch is the same number of showers in both runs; they differ where the
epoch's step count is rounded (full batches only) or the dataset differs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

DEFAULT_PRICES = os.path.join(os.path.dirname(__file__), "reference_data", "device_prices.yaml")


def speedup(baseline_seconds: float, seconds: float) -> float:
    """T(N0) / T(N): how many times faster than the baseline an epoch (or a step) runs."""
    _positive(baseline_seconds=baseline_seconds, seconds=seconds)
    return baseline_seconds / seconds


def efficiency_time(baseline_seconds: float, baseline_replicas: int, seconds: float, replicas: int) -> float:
    """T(N0) x N0 / (N x T(N)): 1.0 is perfectly linear scaling."""
    _positive(baseline_seconds=baseline_seconds, seconds=seconds, baseline_replicas=baseline_replicas,
              replicas=replicas)
    return baseline_seconds * baseline_replicas / (replicas * seconds)


def efficiency_throughput(baseline_rate: float, baseline_replicas: int, rate: float, replicas: int) -> float:
    """(X(N) / N) / (X(N0) / N0): showers/s per replica against the baseline's."""
    _positive(baseline_rate=baseline_rate, rate=rate, baseline_replicas=baseline_replicas, replicas=replicas)
    return (rate / replicas) / (baseline_rate / baseline_replicas)


def cost_per_epoch(seconds_per_epoch: float, devices: int, usd_per_device_hour: float) -> float:
    """Dollars one epoch costs: hours x devices x price per device-hour."""
    _positive(seconds_per_epoch=seconds_per_epoch, devices=devices)
    if usd_per_device_hour < 0:
        raise ValueError(f"usd_per_device_hour={usd_per_device_hour!r} must be >= 0")
    return seconds_per_epoch / 3600.0 * devices * usd_per_device_hour


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name}={value!r} must be > 0")


@dataclass(frozen=True)
class Price:
    """What one device-hour of a hardware profile costs, and how many devices it bills.

    Attributes:
        usd_per_device_hour: Dollars per device-hour (a GPU, a TPU chip, or for a cpu profile one
            whole machine).
        devices: Devices the profile bills while it trains.
        source: Where the price comes from (the file and its `source:` line).
    """

    usd_per_device_hour: float
    devices: int
    source: str


def load_prices(path: str = "") -> dict[str, Price]:
    """A price table: YAML `{source: TEXT, profiles: {NAME: {usd_per_device_hour: X, devices: N}}}`.

    Args:
        path: The user's file; "" reads the packaged defaults (eval/reference_data/device_prices.yaml).
            A user's file is laid over the defaults (its profiles win).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, or an entry without a non-negative price and a positive device count.
    """
    table = _read_price_file(DEFAULT_PRICES)
    if path:
        table.update(_read_price_file(path))
    return table


def _read_price_file(path: str) -> dict[str, Price]:
    import yaml

    if not os.path.exists(path):
        raise FileNotFoundError(f"price table {path}: no such file")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ValueError(f"price table {path}: not valid YAML ({err})") from None
    profiles = data.get("profiles") if isinstance(data, Mapping) else None
    if not isinstance(profiles, Mapping):
        raise ValueError(f"price table {path}: expected `profiles: {{NAME: {{usd_per_device_hour: X, devices: N}}}}`")
    source = f"{os.path.basename(path)}: {data.get('source', 'no source given')}"
    out = {}
    for name, entry in profiles.items():
        price = entry.get("usd_per_device_hour") if isinstance(entry, Mapping) else None
        devices = entry.get("devices", 1) if isinstance(entry, Mapping) else None
        if not isinstance(price, (int, float)) or isinstance(price, bool) or price < 0:
            raise ValueError(f"price table {path}: profile {name!r}: usd_per_device_hour={price!r} must be a number >= 0")
        if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
            raise ValueError(f"price table {path}: profile {name!r}: devices={devices!r} must be an integer >= 1")
        out[str(name)] = Price(float(price), devices, source)
    return out


#: The scaling sweep's name for the cpu profile split into N logical devices (pipelines.sweep).
SPLIT_CPU = re.compile(r"^cpu-x(\d+)$")


def price_of(profile: str, prices: Mapping[str, Price]) -> Price | None:
    """The profile's price; `cpu-xN` (the sweep's cpu machine split into N logical CPU devices)
    bills as `cpu`: the same machine for the same hours."""
    if profile in prices:
        return prices[profile]
    return prices.get("cpu") if SPLIT_CPU.match(profile) else None


def run_cost(seconds_per_epoch: float | None, profile: str | None, prices: Mapping[str, Price]) -> dict[str, Any]:
    """Cost per epoch of a run on a named profile, or why there is none."""
    if seconds_per_epoch is None:
        return {"usd_per_epoch": None, "why": "no epoch time"}
    if not profile:
        return {"usd_per_epoch": None, "why": "the run records no hardware profile"}
    price = price_of(profile, prices)
    if price is None:
        return {"usd_per_epoch": None, "why": f"profile {profile!r} is not in the price table (give --prices F.yaml)"}
    return {"usd_per_epoch": cost_per_epoch(seconds_per_epoch, price.devices, price.usd_per_device_hour),
            "devices": price.devices, "usd_per_device_hour": price.usd_per_device_hour, "price_source": price.source}
