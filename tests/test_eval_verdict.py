"""Tests of the verdict: the thresholds file, the rule arithmetic and the Monte Carlo null model."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from data_prep.mc_shower import ShowerParams, simulate_showers
from eval.classifier import auc_null_sd
from eval.evaluate import EvalConfig, monte_carlo_floor
from eval.features import compute_features
from eval.null_model import resplit_replicas
from eval.verdict import load_thresholds, null_statistics, parse_thresholds, verdict

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return str(path)


def test_packaged_default_is_shipped_and_loads():
    rules = load_thresholds()
    assert rules.source == "package:eval/thresholds/default.yaml" and rules.version == 1
    assert rules.replicas == 20
    by_name = {c.metric: c for c in rules.checks}
    assert {"sampling_fraction_mre", "resolution_mre", "moment_mre", "angle_mre", "selection_metric",
            "fpd_x1e3", "kpd_x1e3", "classifier_auc", "classifier_voxel_auc", "empty_fraction"} <= set(by_name)
    assert by_name["fpd_x1e3"].null == "replicas" and by_name["fpd_x1e3"].k_sigma == 4.0
    assert by_name["classifier_auc"].null == "auc"
    assert by_name["empty_fraction"].null == "none" and by_name["empty_fraction"].margin == 0.01
    # The file travels with the package: setup.py lists it as package data of eval.
    tree = ast.parse((REPO / "setup.py").read_text())
    package_data = next(
        ast.literal_eval(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
        for k in node.keywords if k.arg == "package_data"
    )
    patterns = package_data["eval"]
    assert any(Path(REPO / "eval").glob(p) and p.startswith("thresholds/") for p in patterns)
    assert (REPO / "eval" / "thresholds" / "default.yaml").is_file()


def test_a_thresholds_file_overrides_the_default(tmp_path):
    path = write(tmp_path, "version: 1\nreplicas: 5\nk_sigma: 2\nchecks:\n  fpd_x1e3: {margin: 1.5}\n"
                           "  classifier_auc: {null_model: auc, k_sigma: 3}\n")
    config = EvalConfig(data="-", generator_dir="-", output_dir="-", thresholds=path)
    rules = config.verdict_rules()
    assert rules.source == path and rules.replicas == 5
    assert [(c.metric, c.null, c.k_sigma, c.margin) for c in rules.checks] == [
        ("fpd_x1e3", "replicas", 2.0, 1.5), ("classifier_auc", "auc", 3.0, 0.0)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("version: 1\nchecks: {fpd_x1e3: {}}\nextra: 1\n", r"unknown keys \['extra'\]"),
        ("version: 2\nchecks: {fpd_x1e3: {}}\n", "version must be 1"),
        ("version: 1\nchecks: {}\n", "checks must be a non-empty mapping"),
        ("version: 1\nchecks: {fpd_x1e3: {sigma: 3}}\n", r"checks.fpd_x1e3: unknown keys \['sigma'\]"),
        ("version: 1\nchecks: {fpd_x1e3: {null_model: bootstrap}}\n", "checks.fpd_x1e3.null_model must be one of"),
        ("version: 1\nchecks: {fpd_x1e3: {k_sigma: -1}}\n", "checks.fpd_x1e3.k_sigma must be a finite number >= 0"),
        ("version: 1\nreplicas: 1\nchecks: {fpd_x1e3: {}}\n", "replicas must be an integer >= 2"),
        ("version: 1\nchecks: [fpd_x1e3\n", "not valid YAML"),
    ],
)
def test_bad_thresholds_files_are_refused_naming_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as err:
        EvalConfig(data="-", generator_dir="-", output_dir="-", thresholds=path)
    assert str(err.value).startswith(path)


def test_rule_arithmetic_null_kinds_and_nan():
    rules = parse_thresholds(
        "version: 1\nk_sigma: 3\nchecks:\n  moment_mre: {}\n  shape_mre: {margin: 0.01}\n"
        "  classifier_auc: {null_model: auc}\n  empty_fraction: {null_model: none, margin: 0.01}\n"
        "  angle_mre: {}\n  kpd_x1e3: {}\n", "inline")
    null = null_statistics([
        {"moment_mre": 0.010, "shape_mre": 0.02, "kpd_x1e3": 0.1},
        {"moment_mre": 0.014, "shape_mre": 0.02, "kpd_x1e3": float("nan")},
        {"moment_mre": 0.012, "shape_mre": 0.02, "kpd_x1e3": 0.3},
    ])
    assert null["moment_mre"] == pytest.approx({"mean": 0.012, "sd": 0.002, "n": 3})
    assert null["kpd_x1e3"]["n"] == 2  # non-finite replicas are skipped
    generated = {"moment_mre": 0.018, "shape_mre": 0.0301, "classifier_auc": 0.56, "classifier_n_test": 400,
                 "empty_fraction": 0.0, "angle_mre": float("nan")}
    result = verdict(generated, {"moment_mre": 0.011}, null, rules)
    checks = {c["name"]: c for c in result["checks"]}
    # moment: 0.012 + 3 x 0.002 = 0.018, and a value equal to its threshold passes.
    assert checks["moment_mre"]["threshold"] == pytest.approx(0.018) and checks["moment_mre"]["passed"]
    assert checks["moment_mre"]["noise_floor"] == 0.011
    # shape: sd 0 -> only the margin is allowed above the mean.
    assert checks["shape_mre"]["threshold"] == pytest.approx(0.03) and not checks["shape_mre"]["passed"]
    # AUC: 0.5 + 3 x sqrt(801 / (12 x 400^2)).
    assert checks["classifier_auc"]["threshold"] == pytest.approx(0.5 + 3 * auc_null_sd(400, 400))
    assert checks["classifier_auc"]["passed"]  # 0.56 < 0.561
    assert checks["empty_fraction"]["threshold"] == 0.01 and checks["empty_fraction"]["passed"]
    # A computed but undefined metric fails; a metric the evaluation did not produce is not judged.
    assert not checks["angle_mre"]["passed"]
    assert "kpd_x1e3" not in checks
    assert result["failed"] == ["shape_mre", "angle_mre"] and result["passed"] is False
    assert result["thresholds"] == {"source": "inline", "version": 1, "replicas": 20}


def test_a_wild_generator_cannot_buy_a_pass_with_its_own_error():
    rules = parse_thresholds("version: 1\nchecks: {kpd_x1e3: {}}\n", "inline")
    null = null_statistics([{"kpd_x1e3": 0.1}, {"kpd_x1e3": 0.3}])
    wild = verdict({"kpd_x1e3": 1e6, "kpd_err_x1e3": 1e7}, {}, null, rules)["checks"][0]
    assert not wild["passed"] and wild["threshold"] == pytest.approx(0.2 + 4 * math.sqrt(0.02))


GRID = (15, 15, 12)


def mc_features(n: int, seed: int):
    rng = np.random.default_rng(seed)
    energy = rng.uniform(20.0, 150.0, n).astype(np.float32)
    theta = np.radians(rng.choice([62.0, 90.0, 118.0], n)).astype(np.float32)
    ecal = simulate_showers(energy, theta, np.random.default_rng(seed + 1), ShowerParams(max_spots=200), grid=GRID)[0]
    return ecal, energy, theta


def test_replicas_redraw_both_halves_from_their_union():
    ecal, energy, theta = mc_features(90, 3)
    a = compute_features(ecal[:50], energy[:50], theta[:50])
    b = compute_features(ecal[50:], energy[50:], theta[50:])
    seen = []

    def record(x, y):
        seen.append((np.sort(x.energy), np.sort(y.energy)))
        return {"n": float(x.n_events)}

    out = resplit_replicas(a, b, record, replicas=4, seed=0)
    assert out == [{"n": 50.0}] * 4
    pooled = np.sort(np.asarray(energy, dtype=np.float64))
    for x, y in seen:
        assert x.size == 50 and y.size == 40
        np.testing.assert_array_equal(np.sort(np.concatenate([x, y])), pooled)
    assert not np.array_equal(seen[0][0], seen[1][0])  # different draws
    again = []
    resplit_replicas(a, b, lambda x, y: again.append(np.sort(x.energy)) or {}, replicas=4, seed=0)
    np.testing.assert_array_equal(again[0], seen[0][0])  # seeded


def test_thresholds_tighten_as_the_sample_grows(tmp_path):
    rules = write(tmp_path, "version: 1\nreplicas: 8\nchecks: {sampling_fraction_mre: {}, fpd_x1e3: {}}\n")
    sds = {}
    for n in (200, 800):
        ecal, energy, theta = mc_features(2 * n, 5)
        config = EvalConfig(data="-", generator_dir="-", output_dir="-", thresholds=rules,
                            fpd_min_samples=500, fpd_max_samples=2000, kpd_batch_size=500)
        floor = monte_carlo_floor(ecal, energy, theta, config)
        sds[n] = {k: floor.null[k]["sd"] for k in ("sampling_fraction_mre", "fpd_x1e3")}
        assert floor.null["fpd_x1e3"]["n"] == 9
    # Statistical spreads fall like 1/sqrt(n) (0.5 for 4x the events); 8 replicas estimate an sd
    # to ~25 %, so allow up to 0.8.
    for key in sds[200]:
        assert sds[800][key] < 0.8 * sds[200][key], (key, sds)


def test_replicas_keep_each_halfs_conditions():
    """The generator gets B's conditions, so A/B's condition imbalance is in every comparison: replicas must keep it."""
    rng = np.random.default_rng(5)
    n = 80
    # A leans to low energies and small angles, B to high ones; they overlap widely.
    energy = np.concatenate([rng.uniform(20.0, 110.0, n), rng.uniform(50.0, 150.0, n)]).astype(np.float32)
    angles = [62.0, 90.0, 118.0]
    theta = np.radians(np.concatenate(
        [rng.choice(angles, n, p=[0.5, 0.3, 0.2]), rng.choice(angles, n, p=[0.2, 0.3, 0.5])])).astype(np.float32)
    ecal = simulate_showers(energy, theta, np.random.default_rng(6), ShowerParams(max_spots=200), grid=GRID)[0]
    a = compute_features(ecal[:n], energy[:n], theta[:n])
    b = compute_features(ecal[n:], energy[n:], theta[n:])
    seen = []
    resplit_replicas(a, b, lambda x, y: seen.append((x.energy, x.theta, y.energy)) or {}, replicas=6, seed=0)
    gap_e = np.mean(np.log10(b.energy)) - np.mean(np.log10(a.energy))
    gap_t = np.mean(b.theta) - np.mean(a.theta)
    for x_energy, x_theta, y_energy in seen:
        assert x_energy.size == y_energy.size == n
        # events did change halves (showers re-drawn) ...
        assert len(set(x_energy.tolist()) - set(a.energy.tolist())) >= n // 10
        # ... but each half kept its conditions: the A-B gaps stay within 10 % (a random re-split removes them)
        assert abs(np.mean(np.log10(x_energy)) - np.mean(np.log10(a.energy))) < 0.1 * gap_e
        assert abs(np.mean(x_theta) - np.mean(a.theta)) < 0.1 * gap_t


def test_floor_factor_judges_within_a_multiple_of_the_floor():
    """floor_factor 3: "within three times the noise floor"; the default factor 1 is unchanged."""
    rules = parse_thresholds("version: 1\nk_sigma: 0\nchecks:\n  shape_mre: {floor_factor: 3}\n"
                             "  moment_mre: {}\n", "rules.yaml")
    null = {"shape_mre": {"mean": 0.02, "sd": 0.005, "n": 21}, "moment_mre": {"mean": 0.02, "sd": 0.005, "n": 21}}
    out = verdict({"shape_mre": 0.059, "moment_mre": 0.021}, {}, null, rules)
    by = {c["name"]: c for c in out["checks"]}
    assert by["shape_mre"]["passed"] and math.isclose(by["shape_mre"]["threshold"], 0.06)
    assert "3 x null mean" in by["shape_mre"]["rule"]
    assert not by["moment_mre"]["passed"] and math.isclose(by["moment_mre"]["threshold"], 0.02)
    assert verdict({"shape_mre": 0.061}, {}, null, rules)["failed"] == ["shape_mre"]
    with pytest.raises(ValueError, match=r"rules.yaml: checks.shape_mre.floor_factor must be"):
        parse_thresholds("version: 1\nchecks:\n  shape_mre: {floor_factor: -1}\n", "rules.yaml")


def test_shipped_thresholds_are_named_with_the_package_prefix():
    rules = load_thresholds("package:eval/thresholds/cpu-quality.yaml")
    by = {c.metric: c for c in rules.checks}
    assert rules.source == "package:eval/thresholds/cpu-quality.yaml"
    assert by["sampling_fraction_max_rel_err"].null == "none" and by["sampling_fraction_max_rel_err"].margin == 0.10
    assert by["shape_mre"].floor_factor == 3.0 and by["moment_mre"].floor_factor == 3.0
    assert load_thresholds("package:eval/thresholds/default.yaml").checks == load_thresholds().checks
    with pytest.raises(ValueError, match=r"package:eval/thresholds/nope.yaml is not shipped.*cpu-quality.yaml"):
        load_thresholds("package:eval/thresholds/nope.yaml")
