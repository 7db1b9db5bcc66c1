"""Tests of eval.report and the evaluator's output writing: figures, self-contained HTML, strict JSON."""

import base64
import json
import re

import numpy as np
import pytest

from data_prep.mc_shower import ShowerParams, simulate_showers
from eval.evaluate import EvalConfig, assemble_metrics, evaluate_arrays, write_outputs
from eval.report import build_figures, render_html
from tests.gcs_emulator import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

GRID = (15, 15, 12)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def monte_carlo(energy, theta, seed, scale=1.0):
    return simulate_showers(energy, theta, np.random.default_rng(seed), ShowerParams(), grid=GRID)[0] * scale


@pytest.fixture(scope="module")
def evaluation():
    rng = np.random.default_rng(5)
    n = 200
    energy = rng.uniform(20.0, 150.0, n).astype(np.float32)
    theta = np.radians(rng.choice([62.0, 90.0, 118.0], n)).astype(np.float32)
    ecal = monte_carlo(energy, theta, 1)
    config = EvalConfig(data="mem://", generator_dir="mem://", output_dir="unused", seed=2)
    results, feats = evaluate_arrays(ecal, energy, theta, lambda e, a: monte_carlo(e, a, 2, scale=1.5), config)
    figures = build_figures(feats["reference"], feats["generated"], feats["independent"], results)
    return config, results, figures


def test_figures_are_png_with_noise_floor_rows(evaluation):
    _, results, figures = evaluation
    names = [f.name for f in figures]
    assert names == sorted(set(names), key=names.index)  # unique
    assert {"sampling_fraction", "shapes", "moments", "measured_angle", "cell_spectrum"} <= set(names)
    for fig in figures:
        assert fig.png.startswith(PNG_SIGNATURE), fig.name
        assert fig.rows, fig.name
        for metric, noise, generated in fig.rows:
            assert len(generated) == 1
            assert generated[0] == results["generated"]["flat"].get(metric, generated[0])
            assert noise == results["noise_floor"]["flat"].get(metric, noise)
    sf = next(f for f in figures if f.name == "sampling_fraction")
    # The generator is scaled by 1.5: its sampling-fraction error is 0.5, far above the noise floor.
    assert sf.rows[0].generated[0] == pytest.approx(0.5, abs=0.05) and sf.rows[0].floor < 0.05


def test_html_is_self_contained_with_verdict_table(evaluation):
    config, results, figures = evaluation
    metrics = assemble_metrics(results, config)
    page = render_html(figures, metrics)
    assert "Verdict: FAILED" in page
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(figures)
    assert all(base64.b64decode(img).startswith(PNG_SIGNATURE) for img in images)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for check in results["verdict"]["checks"]:
        assert f"<td>{check['name']}</td>" in page
    assert page.count("MC vs MC") >= len(figures)


def test_write_outputs_strict_json_and_no_leftovers(evaluation, tmp_path):
    config, results, figures = evaluation
    metrics = assemble_metrics(results, config, {"power": 0.85})
    out = tmp_path / "eval"
    paths = write_outputs(str(out), metrics, figures)
    assert set(paths) == {f"plots/{f.name}.png" for f in figures} | {"report.html", "metrics.json"}
    text = (out / "metrics.json").read_text()
    loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert loaded["verdict"]["passed"] is False
    assert loaded["config"]["seed"] == 2 and loaded["seed"] == 2
    assert loaded["versions"]["numpy"] == np.__version__
    assert loaded["summary"]["generated"]["sampling_fraction_mre"] > 0.4
    assert loaded["counts"]["generated_events"] == 100
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
    assert (out / "plots" / "shapes.png").read_bytes().startswith(PNG_SIGNATURE)


def test_evaluate_end_to_end_with_converted_dataset_and_exported_generator(tmp_path, capsys):
    """Real chain: Monte Carlo HDF5 -> Beam conversion -> untrained tiny generator export -> evaluate CLI."""
    from data_prep.convert import ConvertConfig, convert
    from data_prep.montecarlo import MonteCarloConfig, generate_files
    from eval.evaluate import main
    from trainer.export import export_generator
    from trainer.models import build_generator
    from trainer.presets import get_preset

    files = generate_files(
        MonteCarloConfig(n_events=120, events_per_file=120, energy_min=20.0, energy_max=200.0, seed=4),
        str(tmp_path / "h5"),
    )
    manifest = convert(
        ConvertConfig(inputs=files, output=str(tmp_path / "data"), test_fraction=0.6, min_shards=1)
    )
    assert manifest["counts"]["test"] >= 50
    generator = build_generator(get_preset("tiny"), "float32")
    export_generator(generator, "tiny", str(tmp_path / "generator"), {"seed": 0})

    out = tmp_path / "eval"
    args = ["--data", str(tmp_path / "data" / "manifest.json"), "--generator-dir", str(tmp_path / "generator"),
            "--max-events", "60", "--seed", "5", "--batch-size", "16"]
    # A FAILED verdict is exit status 1, and the failed checks are printed.
    assert main([*args, "--output-dir", str(out)]) == 1
    printed = capsys.readouterr()
    assert "FAILED sampling_fraction_mre" in printed.err
    assert json.loads(printed.out.strip().splitlines()[-1])["passed"] is False
    # --no-fail keeps the report and exits 0.
    assert main([*args, "--output-dir", str(tmp_path / "eval2"), "--no-fail"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["mc_events"] == 60
    assert metrics["counts"]["generated_events"] == 30
    assert metrics["config"]["max_events"] == 60 and metrics["seed"] == 5
    assert metrics["generator_angle_key"] == "mtheta" and metrics["power"] == pytest.approx(0.85)
    # An untrained generator is far from the Monte Carlo: the verdict must say so.
    assert metrics["verdict"]["passed"] is False
    names = {c["name"] for c in metrics["verdict"]["checks"]}
    assert {"sampling_fraction_mre", "shape_mre", "moment_mre", "empty_fraction"} <= names
    for check in metrics["verdict"]["checks"]:
        assert set(check) == {"name", "value", "noise_floor", "null_mean", "null_sd", "threshold", "passed", "rule"}
    assert metrics["verdict"]["thresholds"]["source"] == "package:eval/thresholds/default.yaml"
    assert set(metrics["verdict"]["failed"]) == {c["name"] for c in metrics["verdict"]["checks"] if not c["passed"]}
    # The Monte Carlo halves agree with each other far better than the untrained generator does.
    assert metrics["summary"]["noise_floor"]["sampling_fraction_mre"] < 0.1
    page = (out / "report.html").read_text()
    assert "Verdict: FAILED" in page
    assert {p.name for p in (out / "plots").iterdir()} >= {"shapes.png", "sampling_fraction.png"}
    # An exported generator alone has no discriminator and no training log: the page says which
    # figures are missing and why, instead of leaving them out silently.
    missing = page.split("id='missing-figures'>", 1)[1].split("</div>", 1)[0]
    assert "discriminator: no discriminator (Generator: no trainer config.json beside the generator" in missing
    assert "training_curves: no training log" in missing
    assert not (out / "plots" / "discriminator.png").exists()


def test_write_outputs_to_gcs(evaluation, gcs_bucket):
    from data_prep import uri

    config, results, figures = evaluation
    base = f"gs://{gcs_bucket}/eval"
    paths = write_outputs(base, assemble_metrics(results, config), figures)
    assert paths["metrics.json"] == f"{base}/metrics.json"
    assert json.loads(uri.read_text(paths["metrics.json"]))["verdict"]["passed"] is False
    assert uri.read_bytes(f"{base}/plots/shapes.png").startswith(PNG_SIGNATURE)
    assert sorted(uri.list_files(base)) == sorted(paths.values())
