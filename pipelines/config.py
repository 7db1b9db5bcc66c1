"""The DAG's run-time parameters, with the embedded-demo defaults that `make run` uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from data_prep.strict_fields import reject_unknown_keys


@dataclass
class PipelineParams:
    """Every run-time parameter of the DAG; each field is one KFP pipeline parameter of the same name.

    The defaults are the embedded demo: a few thousand Monte Carlo showers, the `small` model
    preset and a short training, sized so the whole DAG finishes in minutes on 2 CPU cores.

    Attributes:
        mc_events: showers the Monte Carlo generates (ignored when `input_uri` is set).
        mc_events_per_file: showers per HDF5 file, so the converter has several files to split.
        mc_energy_min: lowest primary energy, GeV.
        mc_energy_max: highest primary energy, GeV.
        mc_seed: Monte Carlo seed.
        input_uri: optional folder or gs:// prefix of real 3DGAN HDF5 files; replaces the Monte Carlo.
        test_fraction: share of events routed to the test split.
        encoding: TFRecord encoding, `dense` or `sparse`.
        compression: `gzip` or `none`.
        on_bad_event: `fail` or `skip` for events that fail validation.
        beam_args: extra Beam pipeline flags, space separated (e.g. `--runner=DataflowRunner ...`).
        preset: model preset (`small`, `full`, `fixed_angle`, `tiny`).
        training_loop: `custom` (strategy.run loop) or `builtin` (keras compile/fit).
        epochs: passes over the training split.
        max_steps: stop after this many steps (0 = no limit; the demo caps its training this way).
        batch_size_per_replica: events per replica and step.
        learning_rate: base learning rate before scaling.
        lr_scaling: `none`, `linear` or `sqrt` in the number of replicas.
        strategy: tf.distribute strategy name (`auto`, `default`, `one_device`, `mirrored`,
            `multi_worker`, `tpu`).
        precision: `float32`, `mixed_float16` or `mixed_bfloat16`.
        jit_compile: XLA-compile the training step.
        train_seed: training seed.
        eval_events: test events compared with generated showers (0 = the whole test split).
        eval_seed: seed of the generator's noise during evaluation.
        warmup_steps: leading steps the benchmark leaves out of throughput.
    """

    mc_events: int = 3000
    mc_events_per_file: int = 750
    mc_energy_min: float = 10.0
    mc_energy_max: float = 200.0
    mc_seed: int = 1
    input_uri: str = ""
    test_fraction: float = 0.2
    encoding: str = "sparse"
    compression: str = "none"
    on_bad_event: str = "fail"
    beam_args: str = ""
    preset: str = "small"
    training_loop: str = "custom"
    epochs: int = 1
    max_steps: int = 120
    batch_size_per_replica: int = 16
    learning_rate: float = 1e-3
    lr_scaling: str = "linear"
    strategy: str = "auto"
    precision: str = "float32"
    jit_compile: bool = False
    train_seed: int = 42
    eval_events: int = 0
    eval_seed: int = 7
    warmup_steps: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PipelineParams":
        reject_unknown_keys(cls, values, "pipeline parameters")
        return cls(**values)

    def with_overrides(self, overrides: dict[str, str]) -> "PipelineParams":
        """Applies `name=value` strings from the command line, converted to each field's type."""
        values = self.to_dict()
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for name, raw in overrides.items():
            if name not in types:
                raise ValueError(f"unknown pipeline parameter {name!r}; valid: {sorted(types)}")
            values[name] = _convert(name, raw, str(types[name]))
        return PipelineParams(**values)


def _convert(name: str, raw: str, type_name: str) -> Any:
    try:
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes"):
                return True
            if raw.lower() in ("0", "false", "no"):
                return False
            raise ValueError(raw)
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        return raw
    except ValueError:
        raise ValueError(f"pipeline parameter {name}={raw!r} is not a valid {type_name}") from None


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Turns ['a=1', 'b=x'] into {'a': '1', 'b': 'x'}, naming any malformed pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"parameter {pair!r} is not of the form name=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = value
    return out
