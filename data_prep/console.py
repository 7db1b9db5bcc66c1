"""What a command shows on the console: our own progress at INFO; library chatter only with --verbose.

TensorFlow, Beam, kfp and the Google clients log start-up banners, deprecation notes and
per-bundle INFO lines that bury the one progress line a user watches. They are set to WARNING
unless the user asks for --verbose. The choice travels to child processes (kfp.local runs every
component in a subprocess) through the CALOFORGE_VERBOSE environment variable.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import sys
import tempfile
import time
import warnings
from types import ModuleType

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
VERBOSE_ENV = "CALOFORGE_VERBOSE"
#: Loggers of libraries whose INFO lines are not ours, and the level they keep without --verbose.
#: Beam's local workers relay routine start-up warnings (no semi_persistent_directory ...) on
#: every run, so Beam keeps only its errors; the others keep their warnings.
CHATTY_LOGGERS = {
    "apache_beam": logging.ERROR,
    **dict.fromkeys(("tensorflow", "absl", "keras", "kfp", "google", "urllib3", "h5py", "matplotlib", "docker"),
                    logging.WARNING),
}
_CHATTY_MODULES = r"(apache_beam|tensorflow|keras|kfp|google|absl|proto)(\.|$)"
#: Lines TensorFlow's C++ runtime writes straight to stderr while it loads, whatever
#: TF_CPP_MIN_LOG_LEVEL says (absl logs them before its own initialisation).
START_UP_BANNERS = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"^I\d{4} [\d:.]+\s+\d+ port\.cc:\d+\] oneDNN custom operations are on"),
)


def configure_console(verbose: bool = False) -> bool:
    """Sets up logging for a command; returns whether it is verbose.

    Args:
        verbose: True shows everything (DEBUG, library INFO, TensorFlow's C++ log); False keeps
            our INFO lines and the libraries' warnings, unless $CALOFORGE_VERBOSE is 1 (set by a
            parent `caloforge -v` process, e.g. for the kfp.local components it starts).
    """
    verbose = verbose or is_verbose()
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # child processes (kfp.local components) follow
    # TensorFlow reads this once, when it loads: it must be set before the first import.
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name, quiet_level in CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else quiet_level)
    if not verbose:
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=_CHATTY_MODULES)
    return verbose


def is_verbose() -> bool:
    """Whether this process (or the caloforge process that started it) runs with --verbose."""
    return os.environ.get(VERBOSE_ENV) == "1"


def import_quietly(module: str = "tensorflow", verbose: bool = False) -> ModuleType:
    """Imports `module` with TensorFlow's C++ start-up banners filtered out of stderr.

    The banners bypass Python's logging (the C++ runtime writes to file descriptor 2), so the
    descriptor is pointed at a temporary file during the import; every other line written
    meanwhile (a real error, a Python warning) is passed on to stderr afterwards.
    """
    if verbose or is_verbose() or module in sys.modules:
        return importlib.import_module(module)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(module)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not any(p.match(line) for p in START_UP_BANNERS):
                    sys.stderr.write(line)
            sys.stderr.flush()


def format_duration(seconds: float) -> str:
    """`1h02m03s`, `4m05s`; `?` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class ProgressLog:
    """One log line every `every_s` seconds with done/total, rate and ETA.

    Work shorter than `every_s` logs nothing; the caller logs its own summary at the end.

    Args:
        logger: Where the lines go (INFO).
        what: What is being counted, e.g. "generating showers".
        total: Units of work in all.
        unit: Name of a unit, e.g. "showers".
        every_s: Seconds between lines.
    """

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str, every_s: float = 10.0):
        self.logger = logger
        self.what = what
        self.total = int(total)
        self.unit = unit
        self.every_s = every_s
        self.started = self.last = time.monotonic()

    def line(self, done: int) -> str:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        return (f"{self.what}: {done}/{self.total} {self.unit} ({rate:.1f} {self.unit}/s, "
                f"ETA {format_duration(eta)})")

    def update(self, done: int) -> None:
        """Logs a line if `every_s` passed since the last one and work remains."""
        now = time.monotonic()
        if done < self.total and now - self.last >= self.every_s:
            self.last = now
            self.logger.info(self.line(done))
