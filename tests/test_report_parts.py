"""The report's building blocks: honest histograms, per-bin errors, ROC points, projections, the
training log and snapshot table readers, generator labels and the repeatable --generator flag."""

import json
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from eval.classifier import classifier_test, roc_auc, roc_curve
from eval.evaluate import EvalConfig, build_parser, generator_labels
from eval.plot_common import bin_resolutions, draw_histograms, float_edges, integer_edges
from eval.projections import ProjectionSums, project
from eval.report_inputs import REFERENCE_STYLE, Sample
from eval.training_log import read_training_log, snapshot_table


def _sample(key="reference", label="MC A"):
    return Sample(key, label, REFERENCE_STYLE, None)


def test_integer_features_are_binned_on_integers():
    hits = [np.array([3, 4, 4, 7, 10]), np.array([5, 5, 6])]
    edges = integer_edges(hits, max_bins=60)
    assert edges[0] == 2.5 and edges[-1] == 10.5 and np.all(np.diff(edges) == 1.0)
    # Wide ranges: each bin holds the same whole number of integers, edges stay at half-integers.
    wide = integer_edges([np.arange(0, 1000)], max_bins=60)
    widths = np.diff(wide)
    assert np.all(widths == widths[0]) and widths[0] == math.ceil(1000 / 60)
    assert np.all((wide + 0.5) % 1 == 0) and wide[0] < 0 < 999 < wide[-1]
    # Every integer falls in exactly one bin, none on an edge.
    assert not np.isin(np.arange(0, 1000), wide).any()


def test_values_outside_the_axis_are_marked_not_folded_into_edge_bins():
    values = np.r_[np.linspace(0.0, 1.0, 96), -5.0, 7.0, 8.0, np.nan]
    edges = np.linspace(0.0, 1.0, 11)
    fig = Figure()
    ax = fig.add_subplot()
    warnings = draw_histograms(ax, [(_sample(), values)], edges, "x")
    # The step histogram holds only the 96 values inside: the 3 outside leave area missing
    # instead of piling up in the first and last bins.
    stairs = [p for p in ax.patches if hasattr(p, "get_data") and p.get_label() == "MC A"][0]
    heights = np.asarray(stairs.get_data().values)
    assert heights.sum() * 0.1 == pytest.approx(96 / 99)
    assert heights[0] == pytest.approx(heights[5], rel=0.25) and heights[-1] == pytest.approx(heights[5], rel=0.25)
    assert any("1 value(s) below and 2 above" in w for w in warnings)
    assert any("no value for 1 of 100" in w for w in warnings)
    markers = [line.get_marker() for line in ax.lines]
    assert "<" in markers and ">" in markers


def test_float_edges_span_the_pooled_percentiles():
    edges = float_edges([np.arange(1000.0), np.arange(1000.0) + 10])
    assert edges[0] == pytest.approx(np.percentile(np.r_[np.arange(1000.0), np.arange(1000.0) + 10], 0.5))
    assert len(edges) == 41


def test_resolution_error_matches_the_spread_of_repeated_samples():
    rng = np.random.default_rng(0)
    n, r_true = 200, 0.1
    stats = [bin_resolutions(np.ones(n), rng.normal(1.0, r_true, n), [(0.5, 1.5)])[0] for _ in range(400)]
    values = np.array([s.mean for s in stats])
    assert values.mean() == pytest.approx(r_true, rel=0.02)
    # The quoted error agrees with the actual spread within 10 %.
    assert np.mean([s.err for s in stats]) == pytest.approx(values.std(ddof=1), rel=0.1)


def test_roc_curve_area_equals_the_auc_and_the_classifier_returns_it():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(300), np.zeros(300)]
    scores = np.r_[rng.normal(1, 1, 300), rng.normal(0, 1, 300)].round(1)  # ties included
    fpr, tpr = roc_curve(labels, scores, max_points=10_000)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(labels, scores), abs=1e-12)
    thin_fpr, thin_tpr = roc_curve(labels, scores, max_points=11)
    assert len(thin_fpr) <= 11 and thin_fpr[0] == 0 and thin_fpr[-1] == 1
    real, fake = rng.normal(0, 1, (300, 2)), rng.normal(0.8, 1, (300, 2))
    result = classifier_test(real, fake, seed=0)
    assert np.trapezoid(result.roc_tpr, result.roc_fpr) == pytest.approx(result.auc, abs=0.02)


def test_projection_sums_add_up_batch_by_batch():
    rng = np.random.default_rng(2)
    showers = rng.random((10, 4, 5, 3)).astype(np.float32)
    whole = project(showers, chunk_size=3)
    assert whole.n_events == 10
    np.testing.assert_allclose(whole.mean_xy(), showers.sum(axis=3).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(whole.mean_yz(), showers.sum(axis=1).mean(axis=0), rtol=1e-6)
    parts = project(showers, np.arange(4)).merge(project(showers, np.arange(4, 10)))
    np.testing.assert_allclose(parts.xy, whole.xy, rtol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        ProjectionSums.empty((4, 5, 3)).add(np.zeros((1, 5, 5, 3)))


def test_training_log_is_read_from_beside_the_generator(tmp_path):
    (tmp_path / "generator").mkdir()
    assert read_training_log(str(tmp_path / "generator"))[0] is None
    lines = [json.dumps({"step": s, "losses": {"d_loss": 1.0 / s, "g_loss": 2.0}, "replicas": 8, "global_batch": 512})
             for s in (2, 4, 6)]
    (tmp_path / "timings.jsonl").write_text("\n".join([lines[0], lines[2], lines[1], '{"step": 6, "losses": {"d_lo', ""]))
    log, reason = read_training_log(str(tmp_path / "generator"))
    assert reason == "" and log.steps.tolist() == [2, 4, 6] and log.replicas == 8
    np.testing.assert_allclose(log.losses["d_loss"], [0.5, 0.25, 1 / 6])


def test_snapshot_table_is_read_tolerantly():
    assert snapshot_table(None) is None and snapshot_table({"chosen": "x"}) is None
    table = snapshot_table({"snapshots": [{"step": 20, "sampling_fraction_mre": 0.1},
                                          {"step": 10, "sampling_fraction_mre": 0.3, "selected": False},
                                          {"step": 30, "sampling_fraction_mre": 0.05, "selected": True}]})
    assert table.x.tolist() == [10, 20, 30] and table.sf_mre.tolist() == [0.3, 0.1, 0.05] and table.selected == 30
    by_epoch = snapshot_table({"best_epoch": 2, "table": [{"epoch": 1, "sf_mre": 0.2}, {"epoch": 2, "sf_mre": 0.1}]})
    assert by_epoch.x_name == "epoch" and by_epoch.selected == 2


def test_generator_labels_keep_the_parts_that_differ():
    assert generator_labels(["runs/gpu1/model/generator", "runs/gpu8/model/generator"]) == ["gpu1", "gpu8"]
    assert generator_labels(["gs://b/a/generator", "gs://b/c/d/generator"]) == ["a", "c/d"]
    assert generator_labels(["x/generator"]) == ["Generator"]
    assert generator_labels(["a/generator", "a/generator/"]) == ["a #1", "a #2"]


def test_generator_flag_repeats_and_keeps_generator_dir(tmp_path):
    a, b = tmp_path / "a b", tmp_path / "c,d"  # whole values: never split at spaces or commas
    a.mkdir()
    b.mkdir()
    args = build_parser().parse_args(["--data", "d", "--output-dir", "o", "--generator", str(a), "--generator", str(b)])
    cfg = EvalConfig(**{k: v for k, v in vars(args).items()})
    assert cfg.generator == (str(a), str(b)) and cfg.generator_dirs() == [str(a), str(b)]
    one = EvalConfig(data="d", output_dir="o", generator_dir=str(a), generator=(str(a), str(b)))
    assert one.generator_dirs() == [str(a), str(b)]
    assert EvalConfig.from_dict(json.loads(json.dumps(one.to_dict()))) == one
    with pytest.raises(ValueError, match="no generator given: set generator_dir or generator"):
        EvalConfig(data="d", output_dir="o")


def test_cli_names_a_missing_generator_folder(tmp_path, capsys):
    from eval.evaluate import main

    with pytest.raises(SystemExit) as info:
        main(["--data", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--generator", str(tmp_path),
              "--generator", str(tmp_path / "nope")])
    assert info.value.code == 2
    assert f"--generator {tmp_path / 'nope'}: no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--data", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "--generator-dir" in capsys.readouterr().err
