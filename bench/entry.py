"""The one way a bench script ends: a benchmark measures, it does not fail its caller.

Each script's `main()` prints its figures and RESULT lines; an exception is reported (message
and traceback) and the process still exits 0, as conventions.md asks of bench/.
"""

from __future__ import annotations

import sys
import traceback
from typing import Callable


def run_benchmark(main: Callable[[], object]) -> None:
    """Run `main`, report any exception, exit 0."""
    try:
        main()
    except Exception as exc:
        traceback.print_exc()
        print(f"benchmark failed: {exc!r}")
    sys.exit(0)
