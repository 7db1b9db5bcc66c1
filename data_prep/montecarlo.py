"""Embedded data: write parametric Monte Carlo showers as 3DGAN HDF5 files (both layouts).

Each file i is simulated from its own seed, derived from the master seed and i alone
(`SeedSequence(seed, spawn_key=(i,))`), so files can be produced in any order, in parallel, or
one at a time, and the bytes of the cell data are the same. Files are written to a temporary
name and renamed; `montecarlo.json` (config, seeds, versions, file sizes and sha256) is written
last, so a folder with that sidecar is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import h5py
import numpy as np

from data_prep.config_cli import (
    ConfigArgumentParser,
    add_verbose_flag,
    build_config_parser,
    check_path,
    choices_field,
    parse_config,
)
from data_prep.console import configure_console
from data_prep.h5layout import (
    HCAL_SHAPE,
    IMAGE_SHAPES,
    LAYOUT_FIXED_ANGLE,
    LAYOUT_VARIABLE_ANGLE,
    LAYOUTS,
)
from data_prep.h5writer import COMPRESSIONS, compression_filters, dataset_specs, derived_datasets, write_blocks
from data_prep.mc_shower import ShowerParams, simulate_showers
from data_prep.strict_fields import reject_unknown_keys

_LOG = logging.getLogger(__name__)

#: Version of the shower model; bump when the physics changes so outputs say which model made them.
MODEL_VERSION = "2.0"
SIDECAR_NAME = "montecarlo.json"
#: The `generator` attribute of every file this module writes.
GENERATOR_ATTR = "caloforge.data_prep.montecarlo"
#: The `ecal_units` attribute: what a cell value means.
ECAL_UNITS = "raw: deposit x 50, sum ~ primary energy in GeV"
#: Events simulated and written per block (rounded to whole chunks); bounds memory per file.
BLOCK_EVENTS = 256
#: Seconds between progress lines inside one file (large files take minutes).
PROGRESS_EVERY_S = 10.0


@dataclass
class MonteCarloConfig:
    """Everything that determines a Monte Carlo sample (stored in every file and the sidecar).

    Attributes:
        n_events: Total events over all files.
        events_per_file: Events per file (the last file may hold fewer).
        energy_min: Lowest primary energy, GeV (energies are uniform in [min, max]).
        energy_max: Highest primary energy, GeV.
        theta_min_deg: Lowest polar angle, degrees (variable-angle layout; uniform).
        theta_max_deg: Highest polar angle, degrees.
        layout: "variable_angle" (51x51x25 + energy/theta/mtheta/eta/sum) or "fixed_angle"
            (25x25x25 + HCAL + target, theta = 90 degrees).
        seed: Master seed; file i uses SeedSequence(seed, spawn_key=(i,)).
        compression: HDF5 filter for the cell datasets: "gzip" (readable everywhere), "lzf"
            (h5py only, faster) or "none".
        compression_level: gzip level 0-9.
        chunk_events: HDF5 chunk length along the event axis (converters align reads to it).
        batch_size: Events simulated per vectorised call (memory ~ batch x 0.5 MB).
        workers: Processes generating files in parallel (files are independent, so the output
            does not depend on it); 0 means one per CPU core.
        file_prefix: File name prefix; empty means "mc_variable_angle" or "EleEscan_mc".
        overwrite: Replace existing files of the same names instead of refusing.
        sampling_fraction .. max_spots: Shower model parameters (see mc_shower.ShowerParams).
    """

    n_events: int = 1000
    events_per_file: int = 500
    energy_min: float = 2.0
    energy_max: float = 500.0
    theta_min_deg: float = 60.0
    theta_max_deg: float = 120.0
    layout: str = choices_field(LAYOUT_VARIABLE_ANGLE, LAYOUTS)
    seed: int = 0
    compression: str = choices_field("gzip", COMPRESSIONS)
    compression_level: int = 1
    chunk_events: int = 32
    batch_size: int = 16
    workers: int = 0
    file_prefix: str = ""
    overwrite: bool = False
    # Shower model parameters (flat, so that CLI flags map one to one onto fields).
    sampling_fraction: float = ShowerParams.sampling_fraction
    stochastic_term: float = ShowerParams.stochastic_term
    constant_term: float = ShowerParams.constant_term
    critical_energy_gev: float = ShowerParams.critical_energy_gev
    tmax_offset: float = ShowerParams.tmax_offset
    gamma_rate: float = ShowerParams.gamma_rate
    tmax_spread: float = ShowerParams.tmax_spread
    layer_x0: float = ShowerParams.layer_x0
    moliere_radius_cells: float = ShowerParams.moliere_radius_cells
    core_radius: float = ShowerParams.core_radius
    core_growth: float = ShowerParams.core_growth
    tail_radius: float = ShowerParams.tail_radius
    tail_growth: float = ShowerParams.tail_growth
    core_fraction: float = ShowerParams.core_fraction
    core_fraction_slope: float = ShowerParams.core_fraction_slope
    noise_sigma: float = ShowerParams.noise_sigma
    threshold: float = ShowerParams.threshold
    max_spots: int = ShowerParams.max_spots

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its value."""
        for name in ("n_events", "events_per_file", "chunk_events", "batch_size", "workers"):
            value = getattr(self, name)
            lowest = 0 if name == "workers" else 1
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"MonteCarloConfig.{name} must be an integer >= {lowest}, got {value!r}")
        if not (math.isfinite(self.energy_min) and 0 < self.energy_min <= self.energy_max < math.inf):
            raise ValueError(
                f"MonteCarloConfig energy range must satisfy 0 < energy_min <= energy_max, got "
                f"energy_min={self.energy_min!r}, energy_max={self.energy_max!r}"
            )
        if not (0 < self.theta_min_deg <= self.theta_max_deg < 180):
            raise ValueError(
                f"MonteCarloConfig theta range must satisfy 0 < theta_min_deg <= theta_max_deg < 180, "
                f"got theta_min_deg={self.theta_min_deg!r}, theta_max_deg={self.theta_max_deg!r}"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"MonteCarloConfig.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"MonteCarloConfig.compression must be one of {COMPRESSIONS}, got {self.compression!r}"
            )
        if not 0 <= int(self.compression_level) <= 9:
            raise ValueError(
                f"MonteCarloConfig.compression_level must be in 0..9, got {self.compression_level!r}"
            )
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"MonteCarloConfig.seed must be an integer >= 0, got {self.seed!r}")
        self.shower_params().validate()

    def shower_params(self) -> ShowerParams:
        """The physics parameters as a ShowerParams."""
        names = {f.name for f in dataclasses.fields(ShowerParams)}
        return ShowerParams(**{k: getattr(self, k) for k in names})

    @property
    def n_files(self) -> int:
        """Number of files the config produces."""
        return -(-self.n_events // self.events_per_file)

    def file_name(self, index: int) -> str:
        """File name of file `index` (EleEscan_* for the fixed-angle layout, as published)."""
        prefix = self.file_prefix or (
            "mc_variable_angle" if self.layout == LAYOUT_VARIABLE_ANGLE else "EleEscan_mc"
        )
        return f"{prefix}_{index:05d}.h5"

    def to_dict(self) -> dict:
        """JSON-safe dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MonteCarloConfig":
        """Inverse of to_dict; unknown keys are an error so typos do not pass silently."""
        reject_unknown_keys(cls, data, "MonteCarloConfig")
        return cls(**data)


def versions() -> dict:
    """Software versions recorded with every output."""
    return {
        "caloforge_montecarlo_model": MODEL_VERSION,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }


def file_seed_sequence(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of file `index`: independent of every other file and of the order of work."""
    return np.random.SeedSequence(int(seed), spawn_key=(int(index),))


def _draw_primaries(config: MonteCarloConfig, rng: np.random.Generator, n_events: int):
    energy = rng.uniform(config.energy_min, config.energy_max, size=n_events)
    if config.layout == LAYOUT_VARIABLE_ANGLE:
        theta = np.deg2rad(rng.uniform(config.theta_min_deg, config.theta_max_deg, size=n_events))
    else:
        theta = np.full(n_events, np.pi / 2.0)
    return energy, theta


def _block_datasets(
    config: MonteCarloConfig, energy: np.ndarray, theta: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Simulate one block of events (in batches of config.batch_size) into its datasets."""
    n = energy.shape[0]
    params = config.shower_params()
    grid = IMAGE_SHAPES[config.layout]
    fixed = config.layout == LAYOUT_FIXED_ANGLE
    ecal = np.empty((n, *grid), dtype=np.float32)
    hcal = np.empty((n, *HCAL_SHAPE), dtype=np.float32) if fixed else None
    for start in range(0, n, config.batch_size):
        stop = min(start + config.batch_size, n)
        _, h = simulate_showers(
            energy[start:stop], theta[start:stop], rng, params, grid=grid,
            hcal_grid=HCAL_SHAPE if fixed else None, out=ecal[start:stop],
        )
        if hcal is not None:
            hcal[start:stop] = h
    out: dict[str, np.ndarray] = {"ECAL": ecal}
    if hcal is not None:
        out["HCAL"] = hcal
    out.update(derived_datasets(config.layout, ecal, energy, theta))
    return out


def iter_file_blocks(config: MonteCarloConfig, index: int, n_events: int):
    """Yield (start, stop, datasets) blocks of file `index`, each a whole number of chunks.

    Primary energies and angles for the whole file are drawn first from the file's generator,
    then the showers block by block from the same stream, so the result depends only on
    (config, index, n_events) and memory stays at one block, whatever the file size.
    """
    rng = np.random.Generator(np.random.PCG64(file_seed_sequence(config.seed, index)))
    energy, theta = _draw_primaries(config, rng, n_events)
    # Whole chunks per write: a partial write to a compressed chunk larger than the HDF5 chunk
    # cache would be read back, decompressed and rewritten.
    # About BLOCK_EVENTS events (~65 MB of variable-angle cells) per block.
    block = config.chunk_events * max(1, BLOCK_EVENTS // config.chunk_events)
    for start in range(0, n_events, block):
        stop = min(start + block, n_events)
        yield start, stop, _block_datasets(config, energy[start:stop], theta[start:stop], rng)


def simulate_file_events(config: MonteCarloConfig, index: int, n_events: int) -> dict[str, np.ndarray]:
    """All datasets of file `index` in memory (small samples and tests; files stream instead)."""
    parts = [d for _, _, d in iter_file_blocks(config, index, n_events)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _write_h5(path: str, config: MonteCarloConfig, index: int, n_events: int) -> None:
    """Simulate and write one file under a temporary name in its folder, then rename it."""
    began = last_log = time.perf_counter()

    def progress(stop: int) -> None:
        nonlocal last_log
        now = time.perf_counter()
        if now - last_log >= PROGRESS_EVERY_S and stop < n_events:
            last_log = now
            rate = stop / (now - began)
            _LOG.info("Monte Carlo: %s %d/%d events (%.0f showers/s, ETA %.0f s)",
                      os.path.basename(path), stop, n_events, rate, (n_events - stop) / rate)

    def attrs() -> dict:
        seed_seq = file_seed_sequence(config.seed, index)
        return {
            "generator": GENERATOR_ATTR,
            "config_json": json.dumps(config.to_dict(), sort_keys=True),
            "seed": int(config.seed),
            "file_index": int(index),
            "seed_spawn_key": json.dumps(list(seed_seq.spawn_key)),
            "versions_json": json.dumps(versions(), sort_keys=True),
            "layout": config.layout,
            "ecal_units": ECAL_UNITS,
            "angle_units": "radians",
        }

    write_blocks(path, dataset_specs(config.layout, n_events), iter_file_blocks(config, index, n_events), attrs,
                 config.chunk_events, compression_filters(config.compression, config.compression_level),
                 on_block=progress)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def generate_file(config: MonteCarloConfig, output_dir: str, index: int) -> dict:
    """Simulate and write file `index` of the sample; returns its sidecar entry.

    Args:
        config: The sample's configuration.
        output_dir: Existing local folder.
        index: File number, 0 <= index < config.n_files.

    Returns:
        {"path", "file_index", "n_events", "size_bytes", "sha256", "seconds"}.
    """
    if not 0 <= index < config.n_files:
        raise ValueError(f"file index {index} outside 0..{config.n_files - 1}")
    n = min(config.events_per_file, config.n_events - index * config.events_per_file)
    began = time.perf_counter()
    path = os.path.join(output_dir, config.file_name(index))
    _write_h5(path, config, index, n)
    return {
        "path": path,
        "file_index": index,
        "n_events": n,
        "size_bytes": os.path.getsize(path),
        "sha256": _sha256(path),
        "seconds": round(time.perf_counter() - began, 3),
    }


def _generate_file_from_dict(args: tuple[dict, str, int]) -> dict:
    config_dict, output_dir, index = args
    return generate_file(MonteCarloConfig.from_dict(config_dict), output_dir, index)


def generate_files(config: MonteCarloConfig, output_dir: str) -> list[str]:
    """Write the whole sample to `output_dir` and return the file paths, in file order.

    Logs one line per file with events/s and the ETA. Writes `montecarlo.json` last.

    Args:
        config: The sample's configuration.
        output_dir: Local folder (created if missing).

    Returns:
        Paths of the HDF5 files.

    Raises:
        FileExistsError: a target file or the sidecar exists and config.overwrite is False.
    """
    config.validate()
    os.makedirs(output_dir, exist_ok=True)
    names = [config.file_name(i) for i in range(config.n_files)] + [SIDECAR_NAME]
    if not config.overwrite:
        existing = [n for n in names if os.path.exists(os.path.join(output_dir, n))]
        if existing:
            raise FileExistsError(
                f"Monte Carlo output {output_dir!r} already holds {existing[:3]}"
                f"{' ...' if len(existing) > 3 else ''}; set overwrite=True (--overwrite) to replace"
            )
    workers = min(config.workers or (os.cpu_count() or 1), config.n_files)
    _LOG.info(
        "Monte Carlo: %d events in %d files (%s, %g-%g GeV, seed %d, %d workers) -> %s",
        config.n_events, config.n_files, config.layout, config.energy_min, config.energy_max,
        config.seed, workers, output_dir,
    )
    began = time.perf_counter()
    entries: list[dict] = []
    done_events = 0

    def record(entry: dict) -> None:
        nonlocal done_events
        entries.append(entry)
        done_events += entry["n_events"]
        elapsed = time.perf_counter() - began
        rate = done_events / elapsed if elapsed > 0 else float("inf")
        eta = (config.n_events - done_events) / rate if rate > 0 else float("nan")
        _LOG.info(
            "Monte Carlo: file %d/%d done (%d/%d events, %.0f showers/s, ETA %.0f s)",
            len(entries), config.n_files, done_events, config.n_events, rate, eta,
        )

    if workers > 1:
        jobs = [(config.to_dict(), output_dir, i) for i in range(config.n_files)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for entry in pool.map(_generate_file_from_dict, jobs):
                record(entry)
    else:
        for i in range(config.n_files):
            record(generate_file(config, output_dir, i))
    entries.sort(key=lambda e: e["file_index"])
    elapsed = time.perf_counter() - began
    sidecar = {
        "config": config.to_dict(),
        "seed": config.seed,
        "seed_derivation": "numpy SeedSequence(seed, spawn_key=(file_index,)) -> PCG64",
        "versions": versions(),
        "n_events": config.n_events,
        "files": [{k: v for k, v in e.items() if k != "path"} | {"name": os.path.basename(e["path"])}
                  for e in entries],
        "seconds": round(elapsed, 3),
        "showers_per_s": round(config.n_events / elapsed, 1) if elapsed > 0 else None,
    }
    sidecar_path = os.path.join(output_dir, SIDECAR_NAME)
    tmp = sidecar_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(sidecar, fh, indent=2, sort_keys=True)
    os.replace(tmp, sidecar_path)
    _LOG.info("Monte Carlo: %d events in %.1f s (%.0f showers/s)", config.n_events, elapsed,
              config.n_events / max(elapsed, 1e-9))
    return [e["path"] for e in entries]


# --------------------------------------------------------------------------------------------
# Command line: one flag per MonteCarloConfig field (data_prep.config_cli)


def build_parser() -> ConfigArgumentParser:
    """An argparse parser with one --flag per MonteCarloConfig field plus --output-dir."""
    parser = build_config_parser(
        MonteCarloConfig,
        prog="caloforge generate",
        description="Write parametric electromagnetic-shower Monte Carlo as 3DGAN HDF5 files.",
        help_sources=(ShowerParams,),
    )
    parser.add_argument("--output-dir", required=True,
                        help="local folder for the HDF5 files (gs:// is not supported: write locally, then copy)")
    return parser


def main(argv: Sequence[str] | None = None) -> list[str]:
    """CLI entry point: parse flags into a MonteCarloConfig and write the files.

    Returns:
        The written file paths (also printed, one per line).
    """
    parser = build_parser()
    add_verbose_flag(parser)
    config, args = parse_config(parser, MonteCarloConfig, argv, help_sources=(ShowerParams,))
    # h5py writes local files: a gs:// "folder" would become a local folder named gs:.
    problem = check_path("local_output", args.output_dir, "--output-dir")
    if problem:
        parser.error(problem)
    configure_console(args.verbose)
    paths = generate_files(config, args.output_dir)
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
