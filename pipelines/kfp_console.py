"""kfp.local's console output without its executor boilerplate (unless --verbose).

For every task kfp.local prints the executor's whole input as JSON, its loading steps, the
task's output artifacts and two warnings that do not apply to a local run: about a hundred
lines around the few progress lines of the stage itself. Without --verbose, `quiet_kfp_local()`
keeps the stages' own lines, each task's start and status, and every line it does not
recognise, so an error message or a traceback always gets through.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import warnings
from typing import Iterator, TextIO

from data_prep.console import is_verbose

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KFP_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d+ - [A-Z]+ - ")
#: Lines that are kfp.local's own bookkeeping, dropped outright.
_BOILERPLATE = ("Looking for component `", "Loading KFP component", "Wrote executor output file",
                "Streamed logs:", "Cleaned up workspace")


class KfpLocalFilter(io.TextIOBase):
    """A text stream passing lines on to `target`, minus kfp.local's boilerplate."""

    def __init__(self, target: TextIO):
        self.target = target
        self._pending = ""
        self._json_indent: int | None = None  # inside the executor input JSON
        self._json_started = False
        self._in_outputs = False  # inside a task's outputs listing

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._line(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def close_pending(self) -> None:
        if self._pending:
            self._line(self._pending)
            self._pending = ""

    def _line(self, line: str) -> None:
        plain = _ANSI.sub("", line).rstrip()
        stripped = plain.strip()
        indent = len(plain) - len(plain.lstrip())
        if self._json_indent is not None:
            if not self._json_started:
                self._json_started = stripped == "{"
                self._json_indent = indent
                if self._json_started:
                    return
                self._json_indent = None  # not the JSON we expected: show the line
            else:
                if stripped == "}" and indent == self._json_indent:
                    self._json_indent = None
                return
        if self._in_outputs:
            if stripped.startswith("---") or _KFP_LOG_LINE.match(stripped):
                self._in_outputs = False
                if stripped.startswith("---"):
                    return
            else:
                return
        if not stripped or any(marker in stripped for marker in _BOILERPLATE):
            return
        if stripped.endswith("Got executor_input:"):
            self._json_indent, self._json_started = 0, False
            return
        if _KFP_LOG_LINE.match(stripped) and stripped.endswith(" outputs:"):
            self._in_outputs = True
            return
        self.target.write(line)


@contextlib.contextmanager
def quiet_kfp_local() -> Iterator[None]:
    """Filters kfp.local's console output for the duration (a no-op with --verbose)."""
    if is_verbose():
        yield
        return
    stream = KfpLocalFilter(sys.stdout)
    with warnings.catch_warnings():
        # Both are about container settings a local subprocess run cannot honour.
        warnings.filterwarnings("ignore", message=r"Task .* settings \['display_name'\] have no effect")
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom or non-Python base image")
        try:
            with contextlib.redirect_stdout(stream):
                yield
        finally:
            stream.close_pending()
            stream.flush()
