"""bench/entry.py: a failing benchmark reports its error and still exits 0 (conventions.md)."""

import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def test_a_failing_benchmark_reports_and_exits_zero():
    code = ("from entry import run_benchmark\n"
            "def main():\n    print('RESULT partial 1 x target >= 1')\n    raise ValueError('no data')\n"
            "run_benchmark(main)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert "RESULT partial 1 x" in done.stdout
    assert "benchmark failed: ValueError('no data')" in done.stdout
    assert "Traceback" in done.stderr
