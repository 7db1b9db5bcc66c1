"""Fast simulation out: write a trained generator's showers as a 3DGAN HDF5 file.

`caloforge simulate --model DIR --energies 10:200 --angles 1.0472:2.0944 --events N --output F.h5`
generates N showers and writes them in the published 3DGAN layout through the same writer as
the embedded Monte Carlo (data_prep.h5writer), so analysis code written for Monte Carlo files,
and `caloforge convert`, read them unchanged. It reports the generator's showers/s beside the
embedded Monte Carlo's, measured in the same run on the same conditions.

Conditions. `--energies` (GeV) and `--angles` (theta, radians) each take one value (`100`), a
comma-separated list (`10,50,100`) or a range `LO:HI` (uniform in [LO, HI], LO < HI). Listed
values are dealt in turn: with two lists, event i gets combination i mod (n_E x n_A) of the grid
ordered energy-major, ((E1, A1), (E1, A2), ..., (E2, A1), ...), so N a multiple of the grid size
gives every combination the same number of events. A range is drawn per event from its own
stream of the seed. `theta` is the polar angle 3DGAN varies, 60-120 degrees (1.0472-2.0944 rad)
in its data; an empty `--angles` means that range (pi/2 for a fixed-angle model).

What the file holds. `theta` is the requested angle, handed to the generator as its angle
condition (the one it was trained on, generator_config.json's angle_key: by default the measured
angle). `mtheta` is measured on each generated shower with the published definition
(data_prep.angle), as Monte Carlo files' mtheta is, so `mtheta - theta` shows how well the
generator follows its condition. A shower with no energy gets the published sentinel mtheta 100,
which `caloforge convert` counts as a bad event (`--on-bad-event skip` drops it).

Streaming. Showers are generated, measured and written one batch at a time into datasets
allocated at their final size: memory holds one batch of showers (~0.26 MB per shower of the
51x51x25 grid, a few copies) plus 8 bytes of conditions per event, whatever N is.

Safety. The file is written under a hidden temporary name beside the output and appears at
`--output` only when complete. An existing output is refused unless `--overwrite`, and even then
replaced only when caloforge wrote it (its `generator` attribute says so): nothing else is ever
deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from data_prep.config_cli import (
    ConfigArgumentParser,
    add_verbose_flag,
    build_config_parser,
    choices_field,
    parse_config,
)
from data_prep.console import ProgressLog, configure_console, import_quietly
from data_prep.h5layout import IMAGE_SHAPES, LAYOUT_FIXED_ANGLE, LAYOUT_VARIABLE_ANGLE
from data_prep.h5writer import COMPRESSIONS
from data_prep.strict_fields import reject_unknown_keys

LOG = logging.getLogger(__name__)

#: The `generator` attribute of the files written here.
GENERATOR_ATTR = "caloforge.eval.simulate"
#: Files an --overwrite may replace: those whose `generator` attribute is one of these.
CALOFORGE_WRITERS = (GENERATOR_ATTR, "caloforge.data_prep.montecarlo")
#: The exported generator's files (trainer.export's names; importing it would load Keras
#: before the flags are checked).
MODEL_FILE = "generator.keras"
CONFIG_FILE = "generator_config.json"
#: 3DGAN's angle range, 60-120 degrees, in radians: the default of --angles.
THETA_RANGE_3DGAN = (math.pi / 3.0, 2.0 * math.pi / 3.0)
#: Longest HDF5 chunk, in events (8.3 MB of 51x51x25 float32 cells).
MAX_CHUNK_EVENTS = 32
#: Events of the Monte Carlo reference simulated per call (the Monte Carlo's own default batch).
MC_BATCH = 16


@dataclass
class SimulateConfig:
    """What `caloforge simulate` generates and where it writes it; CLI flags map one to one.

    Attributes:
        model: Exported generator folder (the trainer's `generator/`, holding generator.keras and
            generator_config.json), or a training output folder holding one; local or gs://.
        energies: Primary energies in GeV: one value (`100`), a comma-separated list (`10,50,100`;
            events take the listed values in turn) or a range `LO:HI` (uniform in [LO, HI], LO < HI).
        angles: Polar angles theta in radians, same syntax as energies (`1.5708`,
            `1.2217,1.5708,1.9199`, `1.0472:2.0944`); 3DGAN's data spans 60-120 degrees
            (1.0472-2.0944 rad). Empty: that range (pi/2 for a fixed-angle model). With two
            lists, events cycle through every (energy, angle) combination, energy-major.
        events: Number of showers to write (>= 1).
        output: HDF5 file to write (local path; folders are created). It appears only when
            complete.
        batch_size: Showers per generator call and per HDF5 write (memory grows with it).
        seed: Seed of the generator noise (as GeneratorBundle.generate) and of the values drawn
            from ranges; the same seed, conditions and batch size give the same file content.
        overwrite: Replace an existing output file, but only one caloforge wrote (simulate or
            generate); any other file is never replaced.
        compression: HDF5 filter of ECAL: gzip (level 1, readable everywhere), lzf (h5py only,
            faster) or none.
        mc_reference_events: Showers the embedded Monte Carlo simulates (not written), on the
            first requested conditions, to report its showers/s beside the generator's; 0 skips.
    """

    model: str = field(default="", metadata={"path": "input", "required": True})
    energies: str = field(default="", metadata={"required": True})
    angles: str = ""
    events: int = field(default=0, metadata={"required": True})
    output: str = field(default="", metadata={"path": "local_output", "required": True})
    batch_size: int = 64
    seed: int = 0
    overwrite: bool = False
    compression: str = choices_field("gzip", COMPRESSIONS)
    mc_reference_events: int = 64

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field and its value (what the flags can check
        without the model; the model's layout is checked by `conditions`)."""
        for name, lowest in (("events", 1), ("batch_size", 1), ("seed", 0), ("mc_reference_events", 0)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
        if not self.model:
            raise ValueError("model is empty: give the exported generator's folder")
        if not self.output:
            raise ValueError("output is empty: give the HDF5 file to write")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression {self.compression!r} is not one of {', '.join(COMPRESSIONS)}")
        parse_values("energies", self.energies)
        if self.angles.strip():
            parse_values("angles", self.angles)

    def conditions(self, layout: str) -> tuple["ValueSpec", "ValueSpec"]:
        """(energies, angles) for a generator of `layout`; empty angles take the layout's default.

        Raises:
            ValueError: angles other than pi/2 for a fixed-angle generator.
        """
        energies = parse_values("energies", self.energies)
        if not self.angles.strip():
            if layout == LAYOUT_FIXED_ANGLE:
                return energies, ValueSpec(text=repr(math.pi / 2), values=(math.pi / 2,))
            low, high = THETA_RANGE_3DGAN
            return energies, ValueSpec(text=f"{low!r}:{high!r}", low=low, high=high)
        angles = parse_values("angles", self.angles)
        if layout == LAYOUT_FIXED_ANGLE and not (
                not angles.is_range and all(abs(a - math.pi / 2) < 1e-6 for a in angles.values)):
            raise ValueError(f"angles={self.angles!r}: a fixed-angle generator makes showers at theta = pi/2 "
                             f"(1.5708 rad) only; leave --angles out")
        return energies, angles

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SimulateConfig":
        reject_unknown_keys(cls, data, "SimulateConfig")
        return cls(**data)


# --------------------------------------------------------------------------------------------
# Conditions


@dataclass(frozen=True)
class ValueSpec:
    """Values of one condition: listed values dealt in turn, or a uniform range [low, high].

    Attributes:
        text: As the user wrote it.
        values: The listed values (empty for a range).
        low: Lower end of a range (None for a list).
        high: Upper end of a range (None for a list).
    """

    text: str
    values: tuple[float, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high) if self.is_range else (min(self.values), max(self.values))

    def to_dict(self) -> dict:
        if self.is_range:
            return {"text": self.text, "uniform": [self.low, self.high]}
        return {"text": self.text, "values": list(self.values)}


_NUMBER_LISTS = re.compile(r"[,\s]+")
_LIMITS = {"energies": ("GeV", 0.0, math.inf), "angles": ("rad", 0.0, math.pi)}


def parse_values(name: str, text: str) -> ValueSpec:
    """`100`, `10,50,100` or `10:200` as a ValueSpec of condition `name` ("energies" or "angles").

    Raises:
        ValueError: naming `name`, the value and the expected syntax or range.
    """
    unit, lowest, highest = _LIMITS[name]
    raw = text.strip()
    syntax = "one value, a comma-separated list (10,50,100) or a range LO:HI (10:200)"
    try:
        if ":" in raw:
            parts = raw.split(":")
            if len(parts) != 2:
                raise ValueError
            low, high = float(parts[0]), float(parts[1])
            numbers = [low, high]
        else:
            numbers = [float(t) for t in _NUMBER_LISTS.split(raw) if t]
            if not numbers:
                raise ValueError
    except ValueError:
        raise ValueError(f"{name}={text!r} is not {syntax}") from None
    for value in numbers:
        if not (math.isfinite(value) and lowest < value < highest):
            where = "> 0 GeV" if name == "energies" else "in (0, pi) radians"
            hint = ""
            if name == "angles" and all(math.pi <= v <= 180.0 for v in numbers):
                sep = ":" if ":" in raw else ","
                hint = (f"; degrees? theta is in radians: {raw} degrees is "
                        f"{sep.join(f'{math.radians(v):.4f}' for v in numbers)}")
            raise ValueError(f"{name}={text!r}: {value:g} {unit} is not {where}{hint}")
    if ":" in raw:
        if not low < high:
            detail = f"did you mean {parts[1].strip()}:{parts[0].strip()}?" if low > high else f"write the single value {parts[0].strip()}"
            raise ValueError(f"{name}={text!r}: a range LO:HI needs LO < HI ({detail})")
        return ValueSpec(text=raw, low=low, high=high)
    return ValueSpec(text=raw, values=tuple(numbers))


def draw_conditions(energies: ValueSpec, angles: ValueSpec, n_events: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(energy GeV, theta rad) float64 arrays of n_events, as the module docstring describes.

    Lists are dealt by event index (two lists: the energy-major grid, cycled); each range is
    drawn from its own stream, SeedSequence(seed, spawn_key=(1,)) for energies and (2,) for
    angles, apart from the generator noise's (default_rng(seed)).
    """
    index = np.arange(n_events)
    n_e = 1 if energies.is_range else len(energies.values)
    n_a = 1 if angles.is_range else len(angles.values)
    # Energy-major grid of the listed values: combination c -> energy c // n_a, angle c % n_a.
    combination = index % (n_e * n_a)
    out = []
    for key, spec, pick in ((1, energies, combination // n_a), (2, angles, combination % n_a)):
        if spec.is_range:
            rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(key,)))
            out.append(rng.uniform(spec.low, spec.high, size=n_events))
        else:
            out.append(np.asarray(spec.values, dtype=np.float64)[pick])
    return out[0], out[1]


def chunk_events_for(batch_size: int, at_most: int = MAX_CHUNK_EVENTS) -> int:
    """The HDF5 chunk length: the largest divisor of batch_size not above `at_most`, so every
    batch is written as whole chunks (a partial write to a compressed chunk is read back,
    decompressed and rewritten)."""
    return max(d for d in range(1, min(batch_size, at_most) + 1) if batch_size % d == 0)


# --------------------------------------------------------------------------------------------
# The model and the output


def resolve_model_dir(model: str) -> str:
    """The exported generator folder: `model` itself, or `model`/generator (a training output).

    Raises:
        FileNotFoundError: neither holds generator_config.json and generator.keras.
    """
    from data_prep import uri

    for folder in (model, uri.join(model, "generator")):
        if uri.exists(uri.join(folder, CONFIG_FILE)):
            if not uri.exists(uri.join(folder, MODEL_FILE)):
                raise FileNotFoundError(f"--model {model}: {uri.join(folder, MODEL_FILE)} is missing (an "
                                        f"incomplete export?)")
            return folder
    raise FileNotFoundError(f"--model {model}: no exported generator there ({CONFIG_FILE} and {MODEL_FILE}, "
                            f"or a training output folder with generator/ holding them)")


def read_generator_config(model_dir: str) -> tuple[dict, str]:
    """(generator_config.json, layout of the images it makes).

    Raises:
        ValueError: an unreadable config, or images of neither 3DGAN layout.
    """
    from data_prep import uri

    path = uri.join(model_dir, CONFIG_FILE)
    try:
        config = json.loads(uri.read_text(path))
        shape = tuple(int(d) for d in config["image_shape"])
        for key in ("latent_dim", "power", "energy_scale"):
            float(config[key])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--model: {path} is not a generator config ({type(exc).__name__}: {exc})") from None
    for layout, grid in IMAGE_SHAPES.items():
        if shape == grid:
            return config, layout
    raise ValueError(f"--model: {path} makes images of shape {shape}, neither 3DGAN layout "
                     f"({', '.join(f'{k} {v}' for k, v in IMAGE_SHAPES.items())})")


def written_by_caloforge(path: str) -> str | None:
    """The `generator` attribute of an HDF5 file caloforge wrote; None for any other file."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            writer = h5.attrs.get("generator")
    except (OSError, ValueError):
        return None
    if isinstance(writer, bytes):
        writer = writer.decode("utf-8", "replace")
    return writer if writer in CALOFORGE_WRITERS else None


def check_output(path: str, overwrite: bool) -> None:
    """Refuse an output we may not write: a folder, an existing file without overwrite, or a
    file caloforge did not write (even with overwrite).

    Raises:
        FileExistsError: naming the output and what to do.
    """
    if os.path.isdir(path) or os.path.basename(path) in ("", ".", ".."):
        raise FileExistsError(f"--output {path} is a folder; give a file name, e.g. {os.path.join(path, 'showers.h5')}")
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise FileExistsError(f"--output {path} exists; pass --overwrite to replace it (only a file caloforge wrote)")
    if os.path.islink(path) or written_by_caloforge(path) is None:
        raise FileExistsError(f"--output {path} exists and is not a file caloforge wrote; not even --overwrite "
                              f"replaces it: choose another --output or move it away")


def _publisher(overwrite: bool):
    """(temporary file, output) -> None: the last step, checked again at that moment."""

    def publish(tmp: str, path: str) -> None:
        if overwrite:
            check_output(path, overwrite=True)  # what is there now may not be what was checked
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # fails if the output appeared meanwhile: nothing is replaced
        except FileExistsError:
            raise FileExistsError(f"--output {path} appeared while the showers were generated; they are not "
                                  f"published (pass --overwrite to replace a file caloforge wrote)") from None
        except OSError:  # a file system without hard links
            check_output(path, overwrite=False)
            os.replace(tmp, path)
            return
        os.unlink(tmp)

    return publish


def _make_parents(path: str) -> list[str]:
    """Create the output's missing folders; returns them, outermost first."""
    missing = []
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for made in reversed(missing):
        os.mkdir(made)
    return list(reversed(missing))


def _remove_empty(folders: list[str]) -> None:
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:  # not empty: someone else's now
            return


def _sha256(model_dir: str) -> str:
    from data_prep import uri

    return hashlib.sha256(uri.read_bytes(uri.join(model_dir, MODEL_FILE))).hexdigest()


def software_versions() -> dict[str, str]:
    """caloforge, its commit, the key libraries and HDF5."""
    import h5py

    from data_prep.provenance import git_commit, library_versions
    from pipelines.version import VERSION

    return {"caloforge": VERSION, "git_commit": git_commit() or "unknown", **library_versions(),
            "hdf5": h5py.version.hdf5_version}


# --------------------------------------------------------------------------------------------
# Throughput


def montecarlo_reference(energy: np.ndarray, theta: np.ndarray, layout: str, seed: int) -> dict[str, Any]:
    """Showers/s of the embedded Monte Carlo on these conditions (one process, no writing).

    It simulates what `caloforge generate` simulates (data_prep.mc_shower, default parameters,
    batches of MC_BATCH), with HCAL for a fixed-angle grid, as the Monte Carlo files have.
    """
    from data_prep.h5layout import HCAL_SHAPE
    from data_prep.mc_shower import ShowerParams, simulate_showers

    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(3,)))
    params = ShowerParams()
    grid = IMAGE_SHAPES[layout]
    hcal = HCAL_SHAPE if layout == LAYOUT_FIXED_ANGLE else None
    began = time.perf_counter()
    for start in range(0, energy.size, MC_BATCH):
        simulate_showers(energy[start:start + MC_BATCH], theta[start:start + MC_BATCH], rng, params, grid=grid,
                         hcal_grid=hcal)
    seconds = time.perf_counter() - began
    return {"showers_per_s": energy.size / seconds, "events": int(energy.size), "seconds": seconds,
            "what": f"data_prep.mc_shower.simulate_showers (the Monte Carlo of `caloforge generate`, default "
                    f"parameters) on the first {energy.size} requested conditions, one process, no HDF5 writing"}


def generator_rate(batch_events: list[int], batch_seconds: list[float]) -> dict[str, Any]:
    """Showers/s of the generator calls alone (forward pass and inverse power transform).

    The first call pays one-off costs (kernel selection, memory allocation; on a GPU, start-up),
    so with more than one batch the rate is over the others and the first is reported apart.
    """
    if len(batch_seconds) > 1:
        events, seconds = sum(batch_events[1:]), sum(batch_seconds[1:])
        note = f"batches 2-{len(batch_seconds)}; the first ({batch_events[0]} showers, warm-up) took {batch_seconds[0]:.3f} s"
    else:
        events, seconds = sum(batch_events), sum(batch_seconds)
        note = "one batch, warm-up included"
    return {"showers_per_s": events / seconds if seconds > 0 else float("inf"), "events": events,
            "seconds": seconds, "what": note}


# --------------------------------------------------------------------------------------------
# The run


def simulate(config: SimulateConfig) -> dict[str, Any]:
    """Generate config.events showers and write them to config.output (see the module docstring).

    Everything a user can get wrong (model folder, conditions, output) is checked before the
    model loads.

    Returns:
        The summary printed by the CLI: output, events, layout, empty showers, and
        `throughput` (generator, end to end, Monte Carlo, speedup, device); the same is stored in
        the file's `throughput_json` attribute.

    Raises:
        FileNotFoundError: no exported generator at config.model.
        FileExistsError: an output that may not be written (check_output).
        ValueError: bad conditions for the model, or a model config of neither layout.
    """
    config.validate()
    model_dir = resolve_model_dir(config.model)
    gen_config, layout = read_generator_config(model_dir)
    energies, angles = config.conditions(layout)
    check_output(config.output, config.overwrite)
    energy, theta = draw_conditions(energies, angles, config.events, config.seed)

    created = _make_parents(config.output)
    try:
        return _simulate(config, model_dir, gen_config, layout, energies, angles, energy, theta)
    except BaseException:
        _remove_empty(created)
        raise


def _simulate(config: SimulateConfig, model_dir: str, gen_config: dict, layout: str, energies: ValueSpec,
              angles: ValueSpec, energy: np.ndarray, theta: np.ndarray) -> dict[str, Any]:
    from data_prep.h5writer import compression_filters, dataset_specs, derived_datasets, write_blocks
    from data_prep.montecarlo import ECAL_UNITS
    from eval.bench_measure import collector_device
    from trainer.export import load_generator

    n = config.events
    mc = None
    if config.mc_reference_events:
        k = min(n, config.mc_reference_events)
        mc = montecarlo_reference(energy[:k], theta[:k], layout, config.seed)
        LOG.info("embedded Monte Carlo: %d showers in %.2f s (%.1f showers/s)", k, mc["seconds"], mc["showers_per_s"])
    bundle = load_generator(model_dir)
    model_sha256 = _sha256(model_dir)
    angle_key = str(gen_config.get("angle_key", "mtheta"))
    LOG.info("simulating %d showers (%s, energies %s GeV, angles %s rad, seed %d) with %s -> %s", n,
             layout, energies.text, angles.text, config.seed, model_dir, config.output)

    batch_events: list[int] = []
    batch_seconds: list[float] = []
    empty = 0
    progress = ProgressLog(LOG, "simulate", n, "showers")
    began = time.perf_counter()
    finished: list[float] = []

    def blocks():
        nonlocal empty
        batches = bundle.iter_generate(energy, theta, config.seed, config.batch_size)
        while True:
            t0 = time.perf_counter()
            try:
                start, stop, showers = next(batches)
            except StopIteration:
                return
            batch_seconds.append(time.perf_counter() - t0)
            batch_events.append(stop - start)
            data = {"ECAL": showers, **derived_datasets(layout, showers, energy[start:stop], theta[start:stop])}
            empty += int(np.count_nonzero(showers.reshape(stop - start, -1).max(axis=1) <= 0))
            yield start, stop, data

    def on_block(stop: int) -> None:
        progress.update(stop)
        if stop == n:
            finished.append(time.perf_counter())

    summary: dict[str, Any] = {}

    def attrs() -> dict[str, Any]:
        wall = finished[0] - began
        gen = generator_rate(batch_events, batch_seconds)
        throughput = {
            "generator": gen,
            "end_to_end": {"showers_per_s": n / wall, "events": n, "seconds": wall,
                           "what": "generation, mtheta, compression and HDF5 writing, from the first batch to "
                                   "the last write (model loading not counted)"},
            "montecarlo": mc,
            "speedup_vs_montecarlo": gen["showers_per_s"] / mc["showers_per_s"] if mc else None,
            "device": collector_device(),
            "batch_size": config.batch_size,
        }
        summary.update({"output": config.output, "events": n, "layout": layout, "empty_showers": empty,
                        "throughput": throughput})
        return {
            "generator": GENERATOR_ATTR,
            "layout": layout,
            "ecal_units": ECAL_UNITS,
            "angle_units": "radians",
            "theta_meaning": f"the requested angle, given to the generator as its {angle_key!r} condition; "
                             "mtheta is measured on the generated shower",
            "seed": int(config.seed),
            "model": config.model,
            "model_dir": model_dir if "://" in model_dir else os.path.abspath(model_dir),
            "model_sha256": model_sha256,
            "generator_config_json": json.dumps(gen_config, sort_keys=True),
            "config_json": json.dumps(config.to_dict(), sort_keys=True),
            "conditions_json": json.dumps({"energies_gev": energies.to_dict(), "angles_rad": angles.to_dict(),
                                           "assignment": "listed values dealt by event index (two lists: "
                                                         "energy-major grid, cycled); ranges uniform"},
                                          sort_keys=True),
            "versions_json": json.dumps(software_versions(), sort_keys=True),
            "throughput_json": json.dumps(throughput, sort_keys=True),
        }

    write_blocks(config.output, dataset_specs(layout, n, hcal=False), blocks(), attrs,
                 chunk_events_for(config.batch_size), compression_filters(config.compression),
                 on_block=on_block, publish=_publisher(config.overwrite))
    t = summary["throughput"]
    mc_text = (f"; embedded Monte Carlo {mc['showers_per_s']:.1f} showers/s on the first {mc['events']} conditions "
               f"(1 process): generator x{t['speedup_vs_montecarlo']:.1f}") if mc else ""
    LOG.info("wrote %s: %d showers; generator %.1f showers/s (%s, %s), end to end %.1f showers/s%s", config.output,
             n, t["generator"]["showers_per_s"], t["device"], t["generator"]["what"], t["end_to_end"]["showers_per_s"],
             mc_text)
    if empty:
        LOG.warning("%d of %d generated showers have no energy (mtheta = 100, the published sentinel); "
                    "`caloforge convert` counts them as bad events (--on-bad-event skip drops them)", empty, n)
    return summary


# --------------------------------------------------------------------------- CLI
def build_parser() -> ConfigArgumentParser:
    """One flag per SimulateConfig field."""
    return build_config_parser(SimulateConfig, prog="caloforge simulate",
                               description="Write a trained generator's showers as a 3DGAN HDF5 file (the Monte "
                                           "Carlo layout), with its showers/s beside the embedded Monte Carlo's.")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: parse flags, simulate, print the summary as one JSON line."""
    parser = build_parser()
    add_verbose_flag(parser)
    config, args = parse_config(parser, SimulateConfig, argv)
    configure_console(args.verbose)
    # The quick checks first: a wrong folder or output answers before TensorFlow loads.
    model_dir = resolve_model_dir(config.model)
    _, layout = read_generator_config(model_dir)
    config.conditions(layout)
    check_output(config.output, config.overwrite)
    import_quietly("tensorflow", args.verbose)
    summary = simulate(config)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    from pipelines.cli import main as cli_main  # one line and exit code 2 for user errors

    sys.exit(cli_main(["simulate", *sys.argv[1:]]))
