"""The scaling sweep's fan-in component: every point's benchmark and evaluation -> the sweep table.

A thin wrapper of eval.sweep.summarize: the lists come from `dsl.Collected` over the sweep's
ParallelFor, in whatever order the backend gathered them (eval.sweep matches them by their
records). `sweep_points` is the loop's own list, so each row carries its point's settings.
"""

from typing import List

from kfp.dsl import HTML, Artifact, Input, Output


def summarize_sweep(
    benchmarks: Input[List[Artifact]],
    evaluations: Input[List[Artifact]],
    sweep_points: list,
    prices_yaml: str,
    sweep: Output[Artifact],
    report: Output[HTML],
):
    """Writes the sweep folder (table as JSON, CSV, Markdown and HTML, the scaling plot, each point's
    benchmark and physics records); `report` is its index.html alone, which the UIs render inline."""
    import os
    import shutil

    from components.artifacts import local_dir, location
    from data_prep.console import configure_console
    from eval.sweep import SWEEP_HTML, summarize

    configure_console()
    out_dir = local_dir(sweep)
    result = summarize(sweep_points, [location(a) for a in benchmarks], [location(a) for a in evaluations],
                       out_dir, prices_yaml=prices_yaml)
    shutil.copyfile(os.path.join(out_dir, SWEEP_HTML), report.path)
    sweep.metadata["points"] = [p["point"] for p in sweep_points]
    for row in result["rows"]:
        for key in ("showers_per_second", "speedup", "efficiency_time", "usd_per_epoch", "sampling_fraction_mre"):
            if isinstance(row.get(key), (int, float)):
                sweep.metadata[f"{row['point']}.{key}"] = row[key]
