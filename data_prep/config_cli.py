"""Config dataclass <-> command-line flags: each stage's dataclass is the one source of its settings.

A stage's config dataclass already holds every setting's name, type and default, and its
`Attributes:` docstring the help. `describe()` reads them (plus choices and path rules from field
metadata or a `typing.Literal` annotation) into FieldInfo records; `build_config_parser()` turns
them into argparse flags (--kebab-case, choices, defaults shown, booleans as --x/--no-x) and
`parse_config()` turns the flags back into the config, so `caloforge train --help`, the DAG's
parameters, `caloforge params` and the generated CLI docs all read the same descriptions.

Field metadata read here (`dataclasses.field(default=..., metadata={...})`):
    choices: the valid values (a `Literal[...]` annotation gives them too).
    path: "input" (must exist when local; gs:// is accepted), "output" (a local path or gs://),
        or "local_output" (a local folder only: the stage cannot write a URI).
    required: the flag must be given on the command line although the dataclass has a default
        (an empty path the library or the DAG fills in).
    help: help text, for classes built without a docstring (pipelines.config).
    repeat: a tuple or list field given one value per flag, the flag repeated for more
        (`--generator A --generator B`): each value is taken whole, never split at commas or spaces.

The module imports only the standard library, so a --help built with it answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import os
import re
import traceback
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
PATH_RULES = ("input", "output", "local_output")


# ---------------------------------------------------------------------------------------------
# Reading a config class


def field_help(cls: type, *sources: type) -> dict[str, str]:
    """Field descriptions from the `Attributes:` sections of `cls` and `sources` (cls wins).

    Google-style entries `name: text` (or `name (type): text`) at the section's indentation;
    deeper-indented lines continue the previous entry. `sources` lets a class that flattens
    another one's fields (MonteCarloConfig holds ShowerParams') reuse that class's help.
    """
    helps: dict[str, str] = {}
    for klass in (*reversed(sources), cls):
        helps.update(_attributes_section(klass.__doc__ or ""))
    return helps


def _attributes_section(doc: str) -> dict[str, str]:
    helps: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    current = None
    entry_indent = None
    inside = False
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped == "Attributes:" and indent == 0:
            inside = True
            continue
        if not inside or not stripped:
            continue
        if indent == 0:  # the next section (or prose) ends the list
            break
        if entry_indent is None:
            entry_indent = indent
        match = re.match(r"^([A-Za-z_]\w*)(?:\s*\([^)]*\))?:\s*(.*)$", stripped)
        if indent == entry_indent and match:
            current = match.group(1)
            helps[current] = match.group(2)
        elif current is not None and indent > entry_indent:
            helps[current] = f"{helps[current]} {stripped}".strip()
    return helps


@dataclass(frozen=True)
class FieldInfo:
    """Everything the command line, the DAG and the docs need to know about one config field.

    Attributes:
        name: Field name (snake_case).
        kind: "bool", "int", "float", "str", "tuple" or "list".
        type: The resolved annotation.
        item: Element type of a tuple or list field (None otherwise).
        length: Fixed length of a tuple field (None: any length).
        optional: None is a valid value.
        default: The default value, or dataclasses.MISSING.
        choices: The valid values (None: any value of the type).
        help: The description from the docstring or metadata.
        path: "input", "output", "local_output" or None.
        required: The flag must be given on the command line.
        repeat: A tuple/list field whose flag takes one value and is repeated for more.
    """

    name: str
    kind: str
    type: Any
    item: Any
    length: int | None
    optional: bool
    default: Any
    choices: tuple | None
    help: str
    path: str | None
    required: bool
    repeat: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def has_default(self) -> bool:
        return self.default is not dataclasses.MISSING

    @property
    def type_name(self) -> str:
        """Short type for tables: int, float, str, bool, 4 x float, list of str, str (repeatable) ..."""
        if self.repeat:
            return f"{getattr(self.item, '__name__', str(self.item))} (repeatable)"
        if self.kind == "tuple":
            item = getattr(self.item, "__name__", str(self.item))
            return f"{self.length} x {item}" if self.length else f"{item} list"
        if self.kind == "list":
            return f"{getattr(self.item, '__name__', str(self.item))} list"
        return self.kind

    def parse(self, raw: str) -> Any:
        """A string (`--param name=value`, a flag's value) as this field's type.

        Raises:
            ValueError: naming the field, the value and the type or valid values.
        """
        if self.optional and raw.strip().lower() in ("none", "null"):
            return None
        try:
            if self.kind in ("tuple", "list"):
                items = [_scalar(self.item, t) for t in re.split(r"[,\s]+", raw.strip()) if t]
                if self.length is not None and len(items) != self.length:
                    raise ValueError(raw)
                value = tuple(items) if self.kind == "tuple" else items
            else:
                value = _scalar(self.type, raw)
        except ValueError:
            what = f"{self.length} comma-separated {self.item.__name__} values" if self.length else self.type_name
            raise ValueError(f"{self.name}={raw!r} is not a valid {what}") from None
        self.check_choice(value)
        return value

    def check_choice(self, value: Any) -> None:
        """Raises ValueError naming the field and the valid values when `value` is not one."""
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name}={value!r} is not one of {', '.join(map(str, self.choices))}")

    def check_type(self, value: Any) -> None:
        """Raises ValueError when `value` (e.g. from a JSON file) does not have the field's type."""
        if value is None and self.optional:
            return
        expected = {"bool": bool, "int": int, "float": (int, float), "str": str,
                    "tuple": (tuple, list), "list": (tuple, list)}[self.kind]
        if not isinstance(value, expected) or (self.kind in ("int", "float") and isinstance(value, bool)):
            raise ValueError(f"{self.name}={value!r} is not a valid {self.type_name}")

    def default_text(self) -> str:
        """The default as a user would type it."""
        if not self.has_default:
            return "required"
        return format_value(self.default)


def format_value(value: Any) -> str:
    """A value as typed on the command line: booleans lower case, sequences space separated."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (tuple, list)):
        return " ".join(format_value(v) for v in value) if value else "(empty)"
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


def parse_bool(raw: str) -> bool:
    """One boolean syntax for every text value (`--param jit_compile=true`)."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(raw)


def _scalar(kind: Any, raw: str) -> Any:
    if kind is bool:
        return parse_bool(raw)
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return str(raw)


def describe(cls: type, help_sources: Iterable[type] = ()) -> list[FieldInfo]:
    """FieldInfo of every field of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    helps = field_help(cls, *help_sources)
    out = []
    for f in dataclasses.fields(cls):
        out.append(_field_info(f, hints[f.name], helps.get(f.name, "")))
    return out


def _field_info(f: dataclasses.Field, annotation: Any, doc_help: str) -> FieldInfo:
    meta = f.metadata
    optional = False
    base = annotation
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(base) if a is not type(None)]
        optional = len(args) < len(typing.get_args(base))
        if len(args) != 1:
            raise TypeError(f"{f.name}: unions other than X | None are not supported on the command line")
        base = args[0]
    choices = meta.get("choices")
    item, length = None, None
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        choices = choices or typing.get_args(base)
        base = type(typing.get_args(base)[0])
        origin = None
    if origin is tuple:
        kind = "tuple"
        args = typing.get_args(base)
        item = args[0]
        length = None if len(args) == 2 and args[1] is Ellipsis else len(args)
    elif origin is list:
        kind, item = "list", typing.get_args(base)[0]
    elif base in (bool, int, float, str):
        kind = base.__name__
    else:
        raise TypeError(f"{f.name}: type {annotation!r} has no command-line form")
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    else:
        default = dataclasses.MISSING
    path = meta.get("path")
    if path is not None and path not in PATH_RULES:
        raise ValueError(f"{f.name}: metadata path={path!r} is not one of {PATH_RULES}")
    repeat = bool(meta.get("repeat", False))
    if repeat and kind not in ("tuple", "list"):
        raise ValueError(f"{f.name}: metadata repeat=True needs a tuple or list field, not {kind}")
    return FieldInfo(
        name=f.name, kind=kind, type=base, item=item, length=length, optional=optional, default=default,
        choices=tuple(choices) if choices is not None else None, help=meta.get("help", doc_help),
        path=path, required=bool(meta.get("required", False)) or default is dataclasses.MISSING,
        repeat=repeat,
    )


def choices_field(default: Any, choices: Sequence[Any], **metadata: Any) -> Any:
    """`dataclasses.field` of a setting with a fixed set of valid values (shown in --help)."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices), **metadata})


def check_choices(config: Any) -> None:
    """Raises ValueError `Class.name='x' is not one of a, b` for the first field off its choices."""
    for info in describe(type(config)):
        if info.choices is not None and getattr(config, info.name) not in info.choices:
            value = getattr(config, info.name)
            raise ValueError(f"{type(config).__name__}.{info.name}={value!r} is not one of "
                             f"{', '.join(map(str, info.choices))}")


# ---------------------------------------------------------------------------------------------
# Paths


def uri_scheme(value: str) -> str:
    """`gs` for gs://bucket/x, `` for a local path."""
    match = _URI_SCHEME.match(value)
    return match.group(1).lower() if match else ""


def check_path(rule: str, value: str, name: str) -> str | None:
    """What is wrong with `value` under a path rule, as one sentence naming `name`; None if fine.

    Args:
        rule: "input" (a local path must exist), "output" (local or gs://) or "local_output".
        value: The path or URI ("" passes: emptiness is the required flag's business).
        name: How the user gave it, e.g. `--data` or `input_uri`.
    """
    if not value:
        return None
    scheme = uri_scheme(value)
    if scheme and scheme != "gs":
        return f"{name} {value}: only local paths and gs:// URIs are supported"
    if rule == "local_output" and scheme:
        return (f"{name} {value}: this stage writes local files only; write to a local folder "
                f"and copy it (e.g. gcloud storage cp -r)")
    if rule == "input" and not scheme and not os.path.exists(value):
        return f"{name} {value}: no such file or folder"
    return None


# ---------------------------------------------------------------------------------------------
# argparse


class ConfigArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), no abbreviated flags, and near-miss suggestions.

    Abbreviations are off: a script using `--max-step` must not change meaning when a flag
    `--max-step-time` is added later.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(self.unknown_message(extras))
        return ns

    def unknown_message(self, extras: Sequence[str]) -> str:
        known = [s for a in self._actions for s in a.option_strings]
        hints = []
        for token in extras:
            flag = token.split("=", 1)[0]
            close = difflib.get_close_matches(flag, known, n=1) if flag.startswith("-") else []
            hints.append(f"{token} (did you mean {close[0]}?)" if close else token)
        return "unrecognized arguments: " + " ".join(hints)

    def error(self, message: str) -> typing.NoReturn:
        text = " ".join(message.split())  # one line, whatever the message held
        self.exit(2, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


class _SequenceAction(argparse.Action):
    """Collects `--x 1 2 3` and `--x 1,2,3` alike into one tuple or list."""

    def __init__(self, option_strings, dest, info: FieldInfo, **kwargs):
        self.info = info
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            value = self.info.parse(" ".join(values))
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        setattr(namespace, self.dest, value)


class _RepeatAction(argparse.Action):
    """Appends one whole value per occurrence of a repeatable flag (`--x A --x B`)."""

    def __init__(self, option_strings, dest, info: FieldInfo, **kwargs):
        self.info = info
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            item = _scalar(self.info.item, values)
        except ValueError:
            raise argparse.ArgumentError(self, f"invalid {self.info.item.__name__} value: {values!r}") from None
        current = [] if getattr(namespace, self.dest, None) is None else list(getattr(namespace, self.dest))
        current.append(item)
        setattr(namespace, self.dest, tuple(current) if self.info.kind == "tuple" else current)


def help_text(info: FieldInfo) -> str:
    """Help of one flag: the description, then the default (argparse expands %, so it is escaped)."""
    text = info.help or ""
    suffix = "required" if info.required else f"default: {info.default_text()}"
    return f"{text} ({suffix})".strip().replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, help_sources: Iterable[type] = (),
                     exclude: Iterable[str] = ()) -> list[FieldInfo]:
    """Adds one flag per field of `cls` (dest = the field name); returns the fields' FieldInfo."""
    skip = set(exclude)
    infos = [i for i in describe(cls, help_sources) if i.name not in skip]
    for info in infos:
        kwargs: dict[str, Any] = {"dest": info.name, "help": help_text(info)}
        if info.required:
            kwargs["required"] = True
        else:
            kwargs["default"] = info.default
        if info.kind == "bool":
            parser.add_argument(info.flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif info.repeat:
            metavar = getattr(info.item, "__name__", "X").upper()
            parser.add_argument(info.flag, action=_RepeatAction, info=info, metavar=metavar, **kwargs)
        elif info.kind in ("tuple", "list"):
            nargs = "+" if info.required or info.kind == "list" else "*"
            metavar = getattr(info.item, "__name__", "X").upper()
            parser.add_argument(info.flag, action=_SequenceAction, info=info, nargs=nargs, metavar=metavar,
                                **kwargs)
        else:
            parser.add_argument(info.flag, type=_argparse_type(info), choices=info.choices, **kwargs)
    return infos


def _argparse_type(info: FieldInfo):
    def convert(raw: str) -> Any:
        try:
            return _scalar(info.type, raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {info.kind} value: {raw!r}") from None

    convert.__name__ = info.kind
    return convert


def build_config_parser(cls: type, prog: str, description: str = "", help_sources: Iterable[type] = (),
                        exclude: Iterable[str] = ()) -> ConfigArgumentParser:
    """A parser with one flag per field of `cls` (see add_config_flags)."""
    parser = ConfigArgumentParser(prog=prog, description=description)
    add_config_flags(parser, cls, help_sources, exclude)
    return parser


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """The common `-v/--verbose` of every command: library chatter and tracebacks come back."""
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, TensorFlow/Beam messages and tracebacks")


def values_from_args(cls: type, namespace: argparse.Namespace) -> dict[str, Any]:
    """The config fields' values from parsed flags (other attributes of the namespace ignored)."""
    return {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if hasattr(namespace, f.name)}


def config_to_argv(config: Any, help_sources: Iterable[type] = ()) -> list[str]:
    """The flags that parse back into `config` (the inverse of parse_config)."""
    argv: list[str] = []
    for info in describe(type(config), help_sources):
        value = getattr(config, info.name)
        if info.kind == "bool":
            argv.append(info.flag if value else "--no-" + info.flag[2:])
        elif value is None:
            continue
        elif info.repeat:
            for v in value:
                argv += [info.flag, repr(v) if isinstance(v, float) else str(v)]
        elif info.kind in ("tuple", "list"):
            argv += [info.flag, *(repr(v) if isinstance(v, float) else str(v) for v in value)]
        else:
            argv += [info.flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def named_fields(message: str, infos: Iterable[FieldInfo]) -> list[FieldInfo]:
    """The fields whose names appear as words in an error message (to name their flags)."""
    return [i for i in infos if re.search(rf"(?<![\w-]){re.escape(i.name)}(?![\w-])", message)]


def path_problem(infos: Iterable[FieldInfo], values: dict[str, Any], name_of=lambda i: i.flag) -> str | None:
    """The first path rule a value breaks, as one sentence (see check_path); None if all pass."""
    for info in infos:
        value = values.get(info.name)
        items = [value] if isinstance(value, str) else list(value) if isinstance(value, (tuple, list)) else []
        for item in items:
            if info.path and isinstance(item, str):
                problem = check_path(info.path, item, name_of(info))
                if problem:
                    return problem
    return None


def parse_config(parser: ConfigArgumentParser, cls: type, argv: Sequence[str] | None,
                 help_sources: Iterable[type] = ()) -> tuple[Any, argparse.Namespace]:
    """Parses flags into a checked config before anything runs.

    Paths that must exist, URIs a stage cannot write and the config's own checks
    (`__post_init__`/`validate`) become one-line errors naming the flag, exit code 2.

    Returns:
        (config, namespace): the namespace also holds flags that are not config fields.
    """
    ns = parser.parse_args(argv)
    return check_config(parser, cls, ns, help_sources), ns


def check_config(parser: ConfigArgumentParser, cls: type, ns: argparse.Namespace,
                 help_sources: Iterable[type] = ()) -> Any:
    """The config from parsed flags, after the path rules and the config's own checks.

    A stage whose parser leaves some flags to another program (convert: Beam's) parses with
    parse_known_args and calls this directly; every other stage goes through parse_config.
    """
    infos = describe(cls, help_sources)
    values = values_from_args(cls, ns)
    problem = path_problem(infos, values)
    if problem:
        parser.error(problem)
    try:
        config = cls(**values)
        validate = getattr(config, "validate", None)
        if callable(validate):
            validate()
    except (ValueError, TypeError) as err:
        from data_prep.console import is_verbose

        if is_verbose():  # --verbose: the traceback before the one-line error
            traceback.print_exc()
        flags = ", ".join(i.flag for i in named_fields(str(err), infos))
        parser.error(f"{flags}: {err}" if flags else str(err))
    return config
