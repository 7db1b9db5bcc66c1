"""Strict pass-through of Beam pipeline flags: a mistyped flag is an error, not a Beam warning.

A stage that runs Beam parses its own flags and hands the rest to PipelineOptions, which only
logs a warning for flags it does not know and runs with the defaults. So `--test-fractoin 0.5`
used to convert with test_fraction 0.1. Here every leftover flag must be one Beam knows;
anything else is a UsageError naming it and the closest valid flag among the stage's and
Beam's.

Kept apart from any one parser so that any stage (whatever builds its argparse parser) can use
`parse_app_and_pipeline_args` or, given its leftovers, `split_pipeline_args`.
"""

from __future__ import annotations

import argparse
import difflib
import functools
from typing import Iterable, Sequence

from data_prep.errors import UsageError


@functools.lru_cache(maxsize=1)
def beam_flags() -> dict[str, object]:
    """Every flag Beam's PipelineOptions subclasses register, mapped to its argparse nargs.

    Collected the way Beam itself does in PipelineOptions.get_all_options (every registered
    subclass adds its arguments to one parser), by asking it for that parser through the
    `add_extra_args_fn` hook. nargs 0 marks a switch; None a flag with one value.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    try:  # runner option classes defined outside pipeline_options register on import
        import apache_beam.runners.dask.dask_runner  # noqa: F401
    except Exception:  # Dask is optional; without it its flags are simply unknown
        pass
    parsers: list[argparse.ArgumentParser] = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    flags: dict[str, object] = {}
    for action in parsers[0]._actions:  # pylint: disable=protected-access
        if isinstance(action, argparse._HelpAction):  # pylint: disable=protected-access
            continue
        for option in action.option_strings:
            flags[option] = action.nargs
    return flags


def _closest(flag: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(flag, sorted(set(candidates)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def split_pipeline_args(leftover: Sequence[str], app_flags: Iterable[str] = ()) -> list[str]:
    """Check that the arguments a stage's parser did not take are Beam flags; return them.

    Args:
        leftover: What `parse_known_args` left over, in command-line order.
        app_flags: The stage's own flags, offered as suggestions for a typo.

    Returns:
        `leftover` unchanged, every element accounted for as a Beam flag or its value.

    Raises:
        UsageError: naming each unknown flag (with the closest valid one) or stray argument.
    """
    known = beam_flags()
    app_flags = list(app_flags)
    problems: list[str] = []
    i = 0
    while i < len(leftover):
        arg = leftover[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            problems.append(f"unexpected argument {arg!r}")
            continue
        name, has_value, _ = arg.partition("=")
        if name not in known:
            guess = _closest(name, [*app_flags, *known])
            problems.append(f"unknown flag {name}" + (f" (did you mean {guess}?)" if guess else ""))
            while i < len(leftover) and not leftover[i].startswith("-"):
                i += 1  # its values belong to the unknown flag: one message is enough
            continue
        nargs = known[name]
        if has_value or nargs == 0:
            continue
        if nargs == "?":
            if i < len(leftover) and not leftover[i].startswith("-"):
                i += 1
        elif nargs in ("*", "+"):
            while i < len(leftover) and not leftover[i].startswith("-"):
                i += 1
        elif i < len(leftover):
            i += 1 if nargs is None else int(nargs)
        else:
            problems.append(f"Beam flag {name} needs a value")
    if problems:
        raise UsageError("; ".join(problems) + " (flags not listed in --help go to Beam and must be Beam "
                         "pipeline options)")
    return list(leftover)


def parse_app_and_pipeline_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                                ) -> tuple[argparse.Namespace, list[str]]:
    """Parse a stage's flags strictly; the rest must be Beam flags (see split_pipeline_args).

    The parser should be built with allow_abbrev=False: otherwise argparse silently accepts a
    prefix of one of its flags (`--test-frac`), and a prefix of a Beam flag would be swallowed.
    """
    namespace, leftover = parser.parse_known_args(argv)
    app_flags = [s for action in parser._actions for s in action.option_strings]  # pylint: disable=protected-access
    return namespace, split_pipeline_args(leftover, app_flags)
