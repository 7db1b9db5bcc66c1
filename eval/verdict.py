"""The verdict: every check against what a perfect generator would score with as many events.

Each check compares one metric of generated-vs-Monte-Carlo with the distribution of the same
metric between independent Monte Carlo samples of the same size (the *null*): its mean and
standard deviation come from Monte Carlo replicas (eval/null_model.py) or, for the classifier
AUC, from the Mann-Whitney formula. A check passes when

    value <= floor_factor * null_mean + k_sigma * null_sd + margin

so every threshold shrinks as the sample grows (floor_factor is 1 unless a file asks for a multiple
of the floor, as a looser "within N times the noise floor" recipe check does). The rules live in a versioned YAML file shipped
with the package (eval/thresholds/default.yaml); ``EvalConfig.thresholds`` names another file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import numpy as np
import yaml

from eval.classifier import auc_null_sd

PACKAGED_THRESHOLDS = "thresholds/default.yaml"
#: A thresholds path starting with this names a file shipped in the eval package.
PACKAGE_PREFIX = "package:eval/"
NULL_KINDS = ("replicas", "auc", "none")
THRESHOLDS_VERSION = 1
_TOP_KEYS = {"version", "replicas", "k_sigma", "checks"}
_CHECK_KEYS = {"null_model", "k_sigma", "margin", "floor_factor"}


@dataclass(frozen=True)
class CheckRule:
    """How one metric is judged.

    Attributes:
        metric: Key of the metric in the flat metric dicts (e.g. ``fpd_x1e3``).
        null: Where the null mean and spread come from: "replicas", "auc" or "none".
        k_sigma: Multiple of the null standard deviation allowed above the null mean.
        margin: Absolute allowance added to the threshold (0: purely statistical).
        floor_factor: Multiple of the null mean in the threshold (1: as good as Monte Carlo; 3:
            "within three times the noise floor").
    """

    metric: str
    null: str
    k_sigma: float
    margin: float = 0.0
    floor_factor: float = 1.0


@dataclass(frozen=True)
class Thresholds:
    """The verdict rules read from a thresholds file.

    Attributes:
        source: The file they came from (``package:eval/thresholds/default.yaml`` for the default).
        version: Format version of the file.
        replicas: Monte Carlo re-drawings used to estimate the null spread.
        checks: One rule per judged metric, in file order.
    """

    source: str
    version: int
    replicas: int
    checks: tuple[CheckRule, ...]

    def to_dict(self) -> dict:
        return {"source": self.source, "version": self.version, "replicas": self.replicas,
                "checks": [asdict(c) for c in self.checks]}


def _number(source: str, where: str, value: Any, lowest: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < lowest:
        raise ValueError(f"{source}: {where} must be a finite number >= {lowest:g}, got {value!r}")
    return float(value)


def parse_thresholds(text: str, source: str) -> Thresholds:
    """Validate a thresholds file's text; every mistake is a ValueError naming the file and the key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with keys {sorted(_TOP_KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; known {sorted(_TOP_KEYS)}")
    if data.get("version") != THRESHOLDS_VERSION:
        raise ValueError(f"{source}: version must be {THRESHOLDS_VERSION}, got {data.get('version')!r}")
    replicas = data.get("replicas", 20)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 2:
        raise ValueError(f"{source}: replicas must be an integer >= 2, got {replicas!r}")
    k_default = _number(source, "k_sigma", data.get("k_sigma", 4.0))
    checks = data.get("checks")
    if not isinstance(checks, dict) or not checks:
        raise ValueError(f"{source}: checks must be a non-empty mapping metric -> rule")
    rules = []
    for metric, rule in checks.items():
        rule = {} if rule is None else rule
        if not isinstance(rule, dict):
            raise ValueError(f"{source}: checks.{metric} must be a mapping with keys among {sorted(_CHECK_KEYS)}")
        unknown = sorted(set(rule) - _CHECK_KEYS)
        if unknown:
            raise ValueError(f"{source}: checks.{metric}: unknown keys {unknown}; known {sorted(_CHECK_KEYS)}")
        null = rule.get("null_model", "replicas")
        if null not in NULL_KINDS:
            raise ValueError(f"{source}: checks.{metric}.null_model must be one of {NULL_KINDS}, got {null!r}")
        rules.append(
            CheckRule(
                metric=str(metric),
                null=null,
                k_sigma=_number(source, f"checks.{metric}.k_sigma", rule.get("k_sigma", k_default)),
                margin=_number(source, f"checks.{metric}.margin", rule.get("margin", 0.0)),
                floor_factor=_number(source, f"checks.{metric}.floor_factor", rule.get("floor_factor", 1.0)),
            )
        )
    return Thresholds(source=source, version=THRESHOLDS_VERSION, replicas=replicas, checks=tuple(rules))


def load_thresholds(path: str = "") -> Thresholds:
    """The rules of ``path``: local or gs://, ``package:eval/thresholds/NAME.yaml`` for a file shipped
    with caloforge, or the packaged default when ``path`` is empty.

    Raises:
        ValueError: if the file is missing or invalid (the message names the file).
    """
    if not path:
        path = f"{PACKAGE_PREFIX}{PACKAGED_THRESHOLDS}"
    if path.startswith(PACKAGE_PREFIX):
        # Files shipped with caloforge: usable from any working directory and any container.
        name = path[len(PACKAGE_PREFIX):]
        shipped = resources.files("eval").joinpath(name)
        if not name.startswith("thresholds/") or not name.endswith(".yaml") or not shipped.is_file():
            known = sorted(f"{PACKAGE_PREFIX}thresholds/{f.name}" for f in resources.files("eval").joinpath("thresholds").iterdir()
                           if f.name.endswith(".yaml"))
            raise ValueError(f"thresholds {path} is not shipped with caloforge; known: {', '.join(known)}")
        return parse_thresholds(shipped.read_text(encoding="utf-8"), path)
    from data_prep import uri

    if not uri.exists(path):
        raise ValueError(f"thresholds file {path} does not exist; give a YAML file like eval/{PACKAGED_THRESHOLDS}")
    return parse_thresholds(uri.read_text(path), path)


def null_statistics(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of every metric over null samples (non-finite skipped)."""
    keys = sorted({k for s in samples for k in s})
    out = {}
    for key in keys:
        values = np.array([s.get(key, np.nan) for s in samples], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[key] = {
            "mean": float(values.mean()) if values.size else float("nan"),
            "sd": float(values.std(ddof=1)) if values.size > 1 else float("nan"),
            "n": int(values.size),
        }
    return out


def _null_of(rule: CheckRule, generated: dict, null: dict) -> tuple[float, float, str]:
    if rule.null == "none":
        return 0.0, 0.0, "no statistical allowance"
    if rule.null == "auc":
        n_test = generated.get(rule.metric.replace("_auc", "_n_test"), float("nan"))
        n = int(n_test) if np.isfinite(n_test) else 0
        return 0.5, auc_null_sd(n, n), f"AUC of an uninformative classifier, {n} test events per class"
    stats = null.get(rule.metric, {})
    return (float(stats.get("mean", float("nan"))), float(stats.get("sd", float("nan"))),
            f"Monte Carlo vs Monte Carlo over {int(stats.get('n', 0))} samples")


def _times(factor: float) -> str:
    return "" if factor == 1.0 else f"{factor:g} x "


def verdict(generated: dict, noise_floor: dict, null: dict, thresholds: Thresholds) -> dict:
    """Pass/fail of every check whose metric the evaluation produced.

    Args:
        generated: Flat metrics of Monte Carlo vs generated.
        noise_floor: Flat metrics of Monte Carlo half A vs half B (shown beside each value).
        null: ``null_statistics`` of the Monte Carlo null samples.
        thresholds: The rules.

    Returns:
        ``{"passed", "failed": [names], "checks": [{name, value, noise_floor, null_mean, null_sd,
        threshold, passed, rule}], "thresholds": {source, version, replicas}}``. A metric that
        was computed but is NaN fails (its reason is in the notes); a metric the evaluation does
        not produce at all is not judged.
    """
    checks = []
    for rule in thresholds.checks:
        if rule.metric not in generated:
            continue
        value = float(generated[rule.metric])
        mean, sd, origin = _null_of(rule, generated, null)
        threshold = rule.floor_factor * mean + rule.k_sigma * sd + rule.margin
        passed = bool(np.isfinite(value) and np.isfinite(threshold) and value <= threshold)
        checks.append({
            "name": rule.metric,
            "value": value,
            "noise_floor": float(noise_floor.get(rule.metric, float("nan"))),
            "null_mean": mean,
            "null_sd": sd,
            "threshold": threshold,
            "passed": passed,
            "rule": f"value <= {_times(rule.floor_factor)}null mean + {rule.k_sigma:g} x null sd + {rule.margin:g} ({origin})",
        })
    failed = [c["name"] for c in checks if not c["passed"]]
    return {
        "passed": bool(checks) and not failed,
        "failed": failed,
        "checks": checks,
        "thresholds": {"source": thresholds.source, "version": thresholds.version, "replicas": thresholds.replicas},
    }
