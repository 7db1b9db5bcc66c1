"""data_prep.config_cli: a config dataclass becomes flags and the flags become the same config again."""

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from data_prep.config_cli import (
    build_config_parser,
    check_choices,
    choices_field,
    config_to_argv,
    describe,
    field_help,
    parse_config,
    values_from_args,
)
from data_prep.mc_shower import ShowerParams
from data_prep.montecarlo import MonteCarloConfig
from eval.benchmark import BenchmarkConfig
from eval.evaluate import EvalConfig
from trainer.config import TrainConfig


@dataclass
class Example:
    """A config written the way the stage configs are.

    Attributes:
        source: Input file; must exist.
        mode: How to run: fast or exact.
        level (int): Effort, 0-9; a description that
            continues on a second line.
        ratio: A fraction.
        enabled: Switch it on.
        weights: Four weights.
        centres: Any number of centres.
        destination: Local output folder.

    Returns:
        nothing (a later section must not be read as fields).
    """

    source: str = field(metadata={"path": "input"})
    mode: Literal["fast", "exact"] = "fast"
    level: int = 3
    ratio: float = 0.5
    enabled: bool = True
    weights: tuple[float, float, float, float] = (1.0, 2.0, 3.0, 4.0)
    centres: tuple[float, ...] = ()
    destination: str = field(default="out", metadata={"path": "local_output"})
    kind: str = choices_field("a", ("a", "b"))

    def __post_init__(self):
        if not 0 <= self.level <= 9:
            raise ValueError(f"Example.level must be in 0..9, got {self.level}")


def _parse(argv, cls=Example):
    parser = build_config_parser(cls, prog="caloforge example")
    return parse_config(parser, cls, argv)[0]


def _fails(argv, capsys, cls=Example):
    with pytest.raises(SystemExit) as info:
        _parse(argv, cls)
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1, err  # one line
    return err


def test_help_comes_from_the_attributes_section():
    helps = field_help(Example)
    assert helps["mode"] == "How to run: fast or exact."
    assert helps["level"] == "Effort, 0-9; a description that continues on a second line."
    assert "nothing" not in " ".join(helps.values()) and "kind" not in helps
    # A class that flattens another one's fields takes their help from it.
    merged = field_help(MonteCarloConfig, ShowerParams)
    assert merged["stochastic_term"].startswith("a in sigma_E / E") and merged["n_events"] == "Total events over all files."


def test_round_trip_config_to_flags_and_back(tmp_path):
    src = tmp_path / "in.h5"
    src.write_text("x")
    config = Example(source=str(src), mode="exact", level=7, ratio=0.125, enabled=False,
                     weights=(0.5, 0.25, 2.0, 1e-3), centres=(110.0, 150.0), destination=str(tmp_path / "o"), kind="b")
    argv = config_to_argv(config)
    assert "--no-enabled" in argv and "--mode" in argv and "--weights" in argv
    assert _parse(argv) == config


@pytest.mark.parametrize("config", [
    MonteCarloConfig(n_events=10, events_per_file=5, energy_min=3.5, layout="fixed_angle", compression="lzf",
                     overwrite=True, stochastic_term=0.2, max_spots=7),
    TrainConfig(data="m.json", output_dir="gs://b/o", preset="tiny", loop="builtin", jit_compile=True, shuffle=False,
                loss_weights=(1.0, 2.0, 3.0, 4.5), learning_rate=2.5e-4, lr_scaling="sqrt"),
    EvalConfig(data="m.json", generator_dir="g", output_dir="o", energy_centres=(110.0, 150.0), kpd_batch_size=2000,
               generator=("g 2", "g,3"), discriminator_events=7,
               split="train"),
    BenchmarkConfig(train_dir="t", output_dir="o", include_tf_devices=False, warmup_records=5),
], ids=lambda c: type(c).__name__)
def test_every_stage_config_round_trips_through_its_flags(config):
    parser = build_config_parser(type(config), prog="x", help_sources=(ShowerParams,))
    args = parser.parse_args(config_to_argv(config, help_sources=(ShowerParams,)))
    assert type(config)(**values_from_args(type(config), args)) == config


def test_booleans_are_flag_pairs(tmp_path):
    src = tmp_path / "in"
    src.write_text("")
    assert _parse(["--source", str(src), "--no-enabled"]).enabled is False
    assert _parse(["--source", str(src), "--enabled"]).enabled is True
    assert _parse(["--source", str(src)]).enabled is True


def test_sequences_take_spaces_or_commas(tmp_path):
    src = tmp_path / "in"
    src.write_text("")
    assert _parse(["--source", str(src), "--centres", "110,150", "190"]).centres == (110.0, 150.0, 190.0)
    assert _parse(["--source", str(src), "--weights", "1", "2", "3", "4"]).weights == (1.0, 2.0, 3.0, 4.0)


def test_choices_from_literal_and_metadata_are_enforced(tmp_path, capsys):
    src = tmp_path / "in"
    src.write_text("")
    infos = {i.name: i for i in describe(Example)}
    assert infos["mode"].choices == ("fast", "exact") and infos["kind"].choices == ("a", "b")
    err = _fails(["--source", str(src), "--mode", "quick"], capsys)
    assert "--mode" in err and "'quick'" in err and "'fast', 'exact'" in err
    with pytest.raises(ValueError, match="Example.kind='c' is not one of a, b"):
        check_choices(Example(source="s", kind="c"))


def test_unknown_flag_is_one_line_with_a_suggestion(tmp_path, capsys):
    src = tmp_path / "in"
    src.write_text("")
    err = _fails(["--source", str(src), "--levle", "3"], capsys)
    assert "unrecognized arguments: --levle" in err and "did you mean --level?" in err
    # No abbreviations: a prefix of a flag is not that flag.
    err = _fails(["--source", str(src), "--lev", "3"], capsys)
    assert "--lev" in err


def test_config_checks_and_paths_name_the_flag(tmp_path, capsys):
    src = tmp_path / "in"
    src.write_text("")
    err = _fails(["--source", str(src), "--level", "12"], capsys)
    assert err.startswith("caloforge example: error: --level: Example.level must be in 0..9, got 12")
    err = _fails(["--source", str(tmp_path / "missing.h5")], capsys)
    assert "--source" in err and "missing.h5: no such file or folder" in err
    err = _fails(["--source", str(src), "--destination", "gs://bucket/out"], capsys)
    assert "--destination gs://bucket/out: this stage writes local files only" in err
    err = _fails(["--source", "s3://bucket/in.h5"], capsys)
    assert "only local paths and gs:// URIs are supported" in err
    err = _fails(["--level", "3"], capsys)  # a field without default is a required flag
    assert "--source" in err and "required" in err
    assert _parse(["--source", "gs://bucket/in.h5"]).source == "gs://bucket/in.h5"  # remote: checked by the stage


def test_help_shows_every_field_its_default_and_choices():
    text = build_config_parser(Example, prog="x").format_help()
    for f in dataclasses.fields(Example):
        assert "--" + f.name.replace("_", "-") in text
    assert "{fast,exact}" in text and "(default: 3)" in text and "--no-enabled" in text
