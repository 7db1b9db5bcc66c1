"""The `caloforge` command as a user meets it: help, version, imports, one-line errors, generated docs."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from data_prep.config_cli import describe
from data_prep.mc_shower import ShowerParams
from data_prep.montecarlo import MonteCarloConfig
from eval.benchmark import BenchmarkConfig
from eval.evaluate import EvalConfig
from eval.simulate import SimulateConfig
from pipelines.cli import main
from pipelines.cli_docs import stale_files
from trainer.config import TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "apache_beam", "kfp")

# Runs caloforge commands one after another in a fresh interpreter and reports, after each, its
# exit code, its stderr and which heavy modules had been imported so far.
PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from pipelines.cli import main
    out = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as exit:
                rc = exit.code
        out.append({"argv": argv, "rc": rc, "stderr": err.getvalue(),
                    "heavy": sorted(m for m in %r if m in sys.modules)})
    print(json.dumps(out))
""" % (HEAVY,))


def _probe(commands, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(commands)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


STAGE_CONFIGS = {
    "generate": (MonteCarloConfig, (ShowerParams,)),
    "train": (TrainConfig, ()),
    "evaluate": (EvalConfig, ()),
    "benchmark": (BenchmarkConfig, ()),
    "simulate": (SimulateConfig, ()),
}


@pytest.mark.parametrize("stage", sorted(STAGE_CONFIGS))
def test_stage_help_lists_every_config_field_with_its_help(stage, capsys):
    with pytest.raises(SystemExit) as info:
        main([stage, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert text.startswith(f"usage: caloforge {stage} ")
    cls, sources = STAGE_CONFIGS[stage]
    for field in describe(cls, sources):
        assert field.help, f"{cls.__name__}.{field.name} has no line in its Attributes: docstring"
        assert field.flag in text, field.flag
        assert " ".join(field.help.split()[:6]) in text, field.name
    assert "-v, --verbose" in text


def test_help_and_params_import_no_heavy_library():
    commands = [["--help"], ["run", "--help"], ["compile", "--help"], ["submit", "--help"], ["params"],
                ["params", "--json"], ["generate", "--help"], ["convert", "--help"], ["train", "--help"],
                ["evaluate", "--help"], ["benchmark", "--help"], ["simulate", "--help"],
                ["train", "--data", "missing/manifest.json", "--output-dir", "out"]]
    results = _probe(commands)
    for result in results:
        assert result["rc"] in (0, 2), result
        assert result["heavy"] == [], result
    assert "missing/manifest.json: no such file or folder" in results[-1]["stderr"]


def test_invalid_values_fail_before_anything_runs(tmp_path):
    run_dir = tmp_path / "run"
    yaml_path = tmp_path / "p.yaml"
    (tmp_path / "p.yaml.ok").write_text("")  # an existing YAML for submit
    cases = [
        (["run", "--local", "--output-dir", str(run_dir), "--param", "preset=ful"],
         "pipeline parameter preset='ful' is not one of full, small, tiny, fixed_angle"),
        (["run", "--local", "--output-dir", str(run_dir), "--param", "mc_events=0"],
         "pipeline parameter mc_events=0: MonteCarloConfig.n_events must be an integer >= 1"),
        (["run", "--local", "--output-dir", str(run_dir), "--param", f"input_uri={tmp_path / 'none'}"],
         "input_uri"),
        (["compile", "--output", str(yaml_path), "--param", "training_loop=fit"],
         "pipeline parameter training_loop='fit' is not one of custom, builtin"),
        (["compile", "--output", str(yaml_path), "--param", "input_uri=/data/3dgan"],
         "input_uri='/data/3dgan': a cluster cannot read this machine's files; give a gs:// folder"),
        (["submit", "vertex", "--pipeline", str(tmp_path / "p.yaml.ok"), "--param", "test_fraction=1.5",
          "--dry-run"], "pipeline parameter test_fraction=1.5: ConvertConfig.test_fraction must be in [0, 1)"),
        (["submit", "kubeflow", "--pipeline", str(tmp_path / "p.yaml.ok"), "--param", "mc_energy_min=300",
          "--dry-run"], "pipeline parameters mc_energy_min=300.0, mc_energy_max=200.0"),
    ]
    results = _probe([argv for argv, _ in cases], cwd=str(tmp_path))
    for (argv, message), result in zip(cases, results):
        assert result["rc"] == 2, result
        assert result["stderr"].count("\n") == 1 and message in result["stderr"], result
        assert "kfp" not in result["heavy"] and "tensorflow" not in result["heavy"], result
    assert not run_dir.exists() and not yaml_path.exists()


def test_generate_refuses_a_uri_it_cannot_write(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["generate", "--output-dir", "gs://bucket/mc", "--n-events", "2"])
    assert info.value.code == 2
    assert "--output-dir gs://bucket/mc: this stage writes local files only" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # no ./gs:/bucket/mc


def test_version_names_release_commit_and_libraries(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert re.match(r"caloforge \d+\.\d+\.\d+", out)
    for library in ("python", "kfp", "apache-beam", "numpy"):
        assert re.search(rf"^  {library} \d", out, re.M), library
    assert re.search(r"^  (tensorflow|tensorflow-cpu) \d", out, re.M)
    if os.path.exists(os.path.join(REPO, ".git")):
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert f"(git {head}" in out.splitlines()[0]


def test_params_table_shows_type_default_choices_and_help(capsys):
    assert main(["params"]) == 0
    out = capsys.readouterr().out
    assert out.split()[:6] == ["NAME", "TYPE", "DEFAULT", "CHOICES", "SETS", "HELP"]
    preset = next(line for line in out.splitlines() if line.startswith("preset "))
    assert preset.split()[:4] == ["preset", "str", "small", "full,"] and "Model preset name" in preset
    assert re.search(r"^batch_size_per_replica\s+int\s+16 \*", out, re.M)
    assert re.search(r"^  batch_size_per_replica: stage default 64 \(", out, re.M)


def test_readme_and_docs_tables_are_generated_from_the_parsers():
    assert stale_files() == [], "regenerate with: python -m pipelines.cli_docs"
