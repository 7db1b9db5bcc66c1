"""Tables of the `caloforge` command and its parameters, generated from the parsers and configs.

`caloforge params` prints `params_text_table`; README.md's command and parameter tables and
docs/cli.md's per-stage flag tables are the markdown forms, written between marker comments by
`python -m pipelines.cli_docs` (a test fails when they are stale).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import sys
import textwrap
from typing import Any, Sequence

from data_prep.config_cli import format_value

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Generated blocks: (file relative to the repo root, block name) -> renderer name.
BLOCKS = {
    ("README.md", "commands"): "commands_markdown",
    ("README.md", "params"): "params_markdown",
    ("docs/cli.md", "stage-flags"): "stage_flags_markdown",
}
REGENERATE = "python -m pipelines.cli_docs"


# ---------------------------------------------------------------------------------------------
# Plain-text table (the terminal)


def render_text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], max_widths: Sequence[int]) -> str:
    """Columns padded to their widest cell (at most max_widths[i], wrapping longer cells)."""
    widths = [min(max([len(h), *(len(r[i]) for r in rows)]), max_widths[i]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [textwrap.wrap(cell, width) or [""] for cell, width in zip(row, widths)]
        for k in range(max(len(c) for c in cells)):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(cells, widths)]
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def params_text_table(rows: list[dict[str, Any]], width: int | None = None) -> str:
    """`caloforge params`: name, type, default, choices, stage field and help, wrapped to the terminal."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    table = []
    for r in rows:
        mark = " *" if r["demo_reason"] else ""
        table.append([r["name"], r["type"], format_value(r["default"]) + mark,
                      ", ".join(map(str, r["choices"])) if r["choices"] else "", r["sets"], r["help"]])
    fixed = [24, 6, 10, 24, 28]
    help_width = max(30, width - sum(min(w, max(len(t[i]) for t in table)) + 2 for i, w in enumerate(fixed)))
    text = render_text_table(["NAME", "TYPE", "DEFAULT", "CHOICES", "SETS", "HELP"], table, [*fixed, help_width])
    notes = [f"  {r['name']}: stage default {format_value(r['stage_default'])} ({r['demo_reason']})"
             for r in rows if r["demo_reason"]]
    if notes:
        text += "\n\n* the embedded demo's value (`make run`); run alone, the stage uses its own default:\n"
        text += "\n".join(notes)
    return text


# ---------------------------------------------------------------------------------------------
# Markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def params_markdown() -> str:
    """README's table of pipeline parameters."""
    from pipelines.config import describe_params

    lines = ["| parameter | type | default | choices | sets | what |", "|---|---|---|---|---|---|"]
    for r in describe_params():
        default = f"`{format_value(r['default'])}`"
        if r["demo_reason"]:
            default += f" (demo; stage: `{format_value(r['stage_default'])}`)"
        choices = ", ".join(f"`{c}`" for c in r["choices"]) if r["choices"] else ""
        lines.append(f"| `{r['name']}` | {r['type']} | {_md(default)} | {_md(choices)} | "
                     f"`{r['sets']}` | {_md(r['help'])} |")
    return "\n".join(lines)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help or "" for a in action._choices_actions}
    return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}


def _synopsis_part(action: argparse.Action) -> str:
    if not action.option_strings:
        return "|".join(action.choices) if action.choices else (action.metavar or action.dest)
    flag = max(action.option_strings, key=len)
    if isinstance(action, argparse.BooleanOptionalAction):
        part = f"--[no-]{flag[2:]}"
    elif action.nargs == 0:
        part = flag
    else:
        value = "|".join(map(str, action.choices)) if action.choices else (action.metavar or action.dest.upper())
        part = f"{flag} {value}"
        if isinstance(action, argparse._AppendAction):
            part += " ..."
    return part if action.required else f"[{part}]"


def _synopsis(prog: str, parser: argparse.ArgumentParser, all_flags: bool) -> str:
    parts = [prog]
    optional = False
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if all_flags or action.required or not action.option_strings:
            parts.append(_synopsis_part(action))
        else:
            optional = True
    if optional and not all_flags:
        parts.append("[flags]")
    return " ".join(parts)


def stage_parsers() -> dict[str, argparse.ArgumentParser | None]:
    """Each stage command's parser (its module's `build_parser`), None where it has none."""
    from pipelines.cli import STAGE_COMMANDS

    out: dict[str, argparse.ArgumentParser | None] = {}
    for name, (module, _, _) in STAGE_COMMANDS.items():
        build = getattr(importlib.import_module(module), "build_parser", None)
        out[name] = build() if build else None
    return out


def commands_markdown() -> str:
    """README's table of `caloforge` commands: a synopsis from each parser and its help line."""
    from pipelines.cli import STAGE_COMMANDS, build_parser

    stages = stage_parsers()
    lines = ["| command | what it does |", "|---|---|", "| `caloforge --version` | version, git commit, key library versions |"]
    for name, (sub, help_text) in _subparsers(build_parser()).items():
        if name in STAGE_COMMANDS:
            module = STAGE_COMMANDS[name][0]
            parser = stages[name]
            synopsis = _synopsis(f"caloforge {name}", parser, all_flags=False) if parser else f"caloforge {name} ..."
            where = f"[flags](docs/cli.md#caloforge-{name})" if parser else f"`caloforge {name} --help`"
            lines.append(f"| `{_md(synopsis)}` | {_md(help_text)} (`{module}`; {where}) |")
        else:
            lines.append(f"| `{_md(_synopsis(f'caloforge {name}', sub, all_flags=True))}` | {_md(help_text)} |")
    return "\n".join(lines)


_HELP_SUFFIX = re.compile(r"\s*\((default: .*|required)\)$")


def _flag_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flags = ", ".join(f"`{s}`" for s in action.option_strings)
        if isinstance(action, argparse.BooleanOptionalAction):
            flags = f"`{action.option_strings[0]}`, `{action.option_strings[1]}`"
        info = getattr(action, "info", None)
        if action.choices:
            values = ", ".join(f"`{c}`" for c in action.choices)
        elif info is not None:
            values = info.type_name
        elif action.nargs == 0:
            values = "flag"
        else:
            values = getattr(action.type, "__name__", "str") if action.type else "str"
        help_text = (action.help or "").replace("%%", "%")
        default = "required" if action.required else f"`{format_value(action.default)}`"
        rows.append(f"| {flags} | {_md(values)} | {_md(default)} | {_md(_HELP_SUFFIX.sub('', help_text))} |")
    return rows


def stage_flags_markdown() -> str:
    """docs/cli.md: every stage command's flags, one table per stage."""
    out = []
    for name, parser in stage_parsers().items():
        out.append(f"### caloforge {name}\n")
        if parser is None:
            out.append(f"See `caloforge {name} --help`.\n")
            continue
        if parser.description:
            out.append(parser.description.strip() + "\n")
        out += ["| flag | values | default | what |", "|---|---|---|---|", *_flag_rows(parser), ""]
    return "\n".join(out).rstrip()


# ---------------------------------------------------------------------------------------------
# Keeping the files current


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- generated: {name} ({REGENERATE}); do not edit by hand -->", f"<!-- end generated: {name} -->")


def render_block(path: str, name: str) -> str:
    return globals()[BLOCKS[(path, name)]]()


def refreshed(text: str, name: str, content: str, path: str) -> str:
    """`text` with the block `name` replaced by `content`.

    Raises:
        ValueError: the file lacks the block's markers.
    """
    start, end = _markers(name)
    if start not in text or end not in text:
        raise ValueError(f"{path}: no generated block {name!r} (add the lines {start!r} and {end!r})")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{content}\n{end}{tail}"


def stale_files(root: str = REPO_ROOT, write: bool = False) -> list[str]:
    """Files whose generated blocks differ from what the code generates now (rewritten if `write`)."""
    stale = []
    for path in sorted({p for p, _ in BLOCKS}):
        full = os.path.join(root, path)
        with open(full, encoding="utf-8") as f:
            text = f.read()
        new = text
        for (p, name) in BLOCKS:
            if p == path:
                new = refreshed(new, name, render_block(p, name), path)
        if new != text:
            stale.append(path)
            if write:
                with open(full, "w", encoding="utf-8") as f:
                    f.write(new)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrites the generated blocks; `--check` only reports stale files (exit 1)."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    stale = stale_files(write=not check)
    for path in stale:
        print(f"{path}: {'stale' if check else 'updated'}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
