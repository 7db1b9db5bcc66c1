"""The `caloforge` command: compile, run locally, submit the DAG, or run one stage alone."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from typing import Callable, Sequence

from data_prep.errors import UsageError

# Mistakes a user can fix from the message alone: bad values or flags (ValueError, which includes
# InputValidationError and UsageError), missing inputs, an output that is taken. They print one
# line and exit with 2; anything else is a fault and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, UsageError, FileNotFoundError, FileExistsError,
                                                PermissionError)
VERBOSE_FLAGS = ("-v", "--verbose")

# Stage commands hand their remaining arguments to the stage's own parser, so `caloforge train
# --help` documents exactly the flags of TrainConfig (one source of truth per stage). Each entry
# module is light: TensorFlow, Beam and kfp load only once a command has parsed its flags.
STAGE_COMMANDS: dict[str, tuple[str, str, str]] = {
    "generate": ("data_prep.montecarlo", "main", "write Monte Carlo showers as 3DGAN HDF5 files"),
    "convert": ("data_prep.convert", "run", "convert HDF5 files to sharded TFRecords with Apache Beam"),
    "train": ("trainer.cli", "main", "train 3DGAN from a converted dataset"),
    "evaluate": ("eval.evaluate", "main", "validate a trained generator against Monte Carlo"),
    "benchmark": ("eval.benchmark", "main", "collect training throughput into benchmark.json"),
    "simulate": ("eval.simulate", "main",
                 "fast simulation: write a trained generator's showers as a 3DGAN HDF5 file, with showers/s"),
}


def _stage_entry(command: str) -> Callable[[list[str]], object]:
    module_name, func_name, _ = STAGE_COMMANDS[command]
    return getattr(importlib.import_module(module_name), func_name)


#: The flags before hardware profiles: still accepted, mapped onto a profile with a deprecation line.
DEPRECATED_HARDWARE_FLAGS = {"accelerator": "cpu", "accelerator_count": 0, "gpu_type": "", "tpu_version": "",
                             "tpu_topology": ""}


def _add_hardware_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hardware", default=None, metavar="NAME",
                        help="hardware profile of the training step (`caloforge hardware list`; default cpu)")
    parser.add_argument("--hardware-file", default=None, metavar="F.yaml",
                        help="YAML `profiles: {NAME: {accelerator: gpu, gpu_type: ..., count: ...}}` adding profiles")
    parser.add_argument("--target", default="vertex", choices=["vertex", "kubeflow"],
                        help="where the YAML will run: Vertex AI Pipelines or Kubeflow on GKE (recorded in the YAML)")
    parser.add_argument("--image", default=None, metavar="IMG",
                        help="one image for every component (default: $CALOFORGE_IMAGE, else the CPU image for "
                             "each stage and the profile's accelerator image for training)")
    parser.add_argument("--registry", default=None, metavar="REG",
                        help="registry of the per-kind images (default: $CALOFORGE_REGISTRY or ghcr.io/caloforge)")
    # Deprecated: a profile says all of this (hidden from --help; mapped onto a profile).
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu", "tpu"], help=argparse.SUPPRESS)
    parser.add_argument("--accelerator-count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--gpu-type", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tpu-version", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tpu-topology", default="", help=argparse.SUPPRESS)


def _hardware_from_args(args: argparse.Namespace):
    """The hardware profile of `compile`: --hardware [--hardware-file], or the deprecated flags.

    Raises:
        ValueError: an unknown profile, a bad file, or --hardware mixed with the old flags.
    """
    from pipelines.hardware_profiles import get_profile

    old = {k: getattr(args, k) for k, default in DEPRECATED_HARDWARE_FLAGS.items() if getattr(args, k) != default}
    if not old:
        return get_profile(args.hardware, args.hardware_file)
    flags = " ".join(f"--{k.replace('_', '-')}" for k in old)
    if args.hardware or args.hardware_file:
        raise ValueError(f"{flags}: give either --hardware/--hardware-file or these deprecated flags, not both")
    from pipelines.hardware import TPU_TYPES, HardwareProfile

    count = args.accelerator_count
    if args.accelerator == "tpu" and count:
        # These flags counted TPU devices as TensorFlow sees them (cores on v2/v3); profiles count chips.
        tpu = TPU_TYPES.get((args.tpu_version or "v3").lower())
        count = count // tpu.tf_devices_per_chip if tpu else count
    print(f"caloforge compile: {flags} are deprecated: use --hardware NAME (`caloforge hardware list`) or "
          "--hardware-file F.yaml", file=sys.stderr)
    return HardwareProfile(name="custom", accelerator=args.accelerator, count=count, gpu_type=args.gpu_type,
                           tpu_version=args.tpu_version, tpu_topology=args.tpu_topology,
                           retries=0 if args.accelerator == "cpu" else 2)


class _VersionAction(argparse.Action):
    """`--version`: the report is built only when asked (it runs git)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from pipelines.version import version_report

        print(version_report())
        parser.exit()


def _configure_console(verbose: bool) -> None:
    """TensorFlow/Beam/kfp chatter off unless -v/--verbose was given anywhere (any command)."""
    from data_prep.console import configure_console

    configure_console(verbose)


PIPELINES = ("main", "sweep")
DEFAULT_OUTPUTS = {"main": ("caloforge_pipeline.yaml", "runs/latest"), "sweep": ("caloforge_sweep.yaml", "runs/sweep")}


def _add_pipeline_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", default="main", choices=PIPELINES,
                        help="main: the DAG (generate, convert, train, validate, benchmark); sweep: the scaling sweep "
                             "caloforge-3dgan-sweep, one configuration trained on each of --sweep's points")
    parser.add_argument("--sweep", default=None, metavar="LIST",
                        help="the sweep's points, comma separated: hardware profiles (`caloforge hardware list`) "
                             "and replica counts N (the cpu profile split into N logical CPU devices); "
                             "default 1,2 (--pipeline sweep)")
    parser.add_argument("--prices", default=None, metavar="F.yaml",
                        help="price table of the sweep's cost column `profiles: {NAME: {usd_per_device_hour: X, "
                             "devices: N}}` over the packaged defaults (--pipeline sweep)")


def _check_pipeline_flags(args: argparse.Namespace) -> None:
    """--sweep and --prices belong to the sweep; --hardware to the main DAG."""
    if args.pipeline != "sweep":
        given = [f for f, v in (("--sweep", args.sweep), ("--prices", args.prices)) if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)}: only for the sweep; add --pipeline sweep")
    elif getattr(args, "hardware", None) or any(
            getattr(args, k, d) != d for k, d in DEPRECATED_HARDWARE_FLAGS.items()):
        raise ValueError("--hardware: a sweep trains on each of --sweep's points; list the profiles there "
                         "(--sweep gpu-a100-1,gpu-a100-8)")


def _sweep_plan(args: argparse.Namespace, target: str, cluster: bool):
    """The sweep's points (--sweep over --hardware-file's and the built-in profiles), each with its
    profile's training settings under the user's --params-file and --param."""
    from pipelines.hardware_profiles import profile_defaults
    from pipelines.sweep import DEFAULT_SWEEP, parse_sweep, plan_sweep

    profiles = parse_sweep(args.sweep if args.sweep is not None else DEFAULT_SWEEP, getattr(args, "hardware_file", None))
    return plan_sweep(profiles, target, lambda resolved: _params_from_args(args, cluster=cluster,
                                                                           base=profile_defaults(resolved)))


def _add_param_flags(parser: argparse.ArgumentParser, param_help: str) -> None:
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=param_help)
    parser.add_argument("--params-file", default=None, metavar="F.json", help="JSON object of pipeline parameters (--param wins)")


def _params_from_args(args: argparse.Namespace, cluster: bool, base=None):
    """PipelineParams from --params-file and --param, checked before anything runs.

    Args:
        cluster: the values go to a cluster (compile, submit): input_uri must be gs://.
        base: the defaults they override (default: PipelineParams(), the embedded demo; for
            compile, a hardware profile's training settings over it).

    Raises:
        ValueError: one line naming the parameter, its value and what is valid.
    """
    from pipelines.config import PipelineParams, parse_overrides

    params = base if base is not None else PipelineParams()
    if getattr(args, "params_file", None):
        with open(args.params_file, encoding="utf-8") as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError(f"{args.params_file}: expected a JSON object of pipeline parameters")
        params = PipelineParams.from_dict({**params.to_dict(), **values})
    params = params.with_overrides(parse_overrides(args.param))
    params.validate(cluster=cluster)
    return params


def _show_params(as_json: bool) -> int:
    """`caloforge params`: a table for people, `--json` for programs."""
    from pipelines.cli_docs import params_text_table
    from pipelines.config import describe_params

    rows = describe_params()
    if as_json:
        print(json.dumps({r["name"]: {k: v for k, v in r.items() if k != "name"} for r in rows}, indent=2))
    else:
        print(params_text_table(rows))
    return 0


def _show_hardware(hardware_file: str | None, as_json: bool) -> int:
    """`caloforge hardware list`: a table for people, `--json` for programs."""
    from pipelines.hardware_profiles import BUILTIN_PROFILES, load_hardware_file, profile_table, profile_table_text

    profiles = {**BUILTIN_PROFILES, **(load_hardware_file(hardware_file) if hardware_file else {})}
    if as_json:
        print(json.dumps(profile_table(profiles), indent=2))
    else:
        print(profile_table_text(profiles))
    return 0


def _bench_compare(args: argparse.Namespace) -> int:
    """`caloforge bench compare`: our runs' table, then the published reference table; optionally
    compare.json and compare.png."""
    from eval.bench_compare import compare, render_text, write_outputs

    comparison = compare(args.runs, prices_path=args.prices)
    print(json.dumps(comparison.to_dict(), indent=2) if args.json else render_text(comparison))
    if args.output_dir:
        written = write_outputs(comparison, args.output_dir)
        print(f"wrote {written['json']} and {written['plot']}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caloforge",
        description="3DGAN calorimeter fast simulation: a Kubeflow Pipelines DAG and its stages.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and tracebacks with error messages (anywhere on the command line)")
    parser.add_argument("--version", action=_VersionAction, help="print the version, git commit and key library versions")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile the DAG to a KFP v2 YAML for one hardware profile and target "
                                      "(--pipeline sweep: the scaling sweep over --sweep's points)")
    p.add_argument("--output", default=None, metavar="F.yaml",
                   help="YAML file to write (default caloforge_pipeline.yaml, or caloforge_sweep.yaml for the sweep)")
    _add_pipeline_flags(p)
    _add_hardware_flags(p)
    _add_param_flags(p, "default of a pipeline parameter in the YAML, over the profile's (repeatable)")

    p = sub.add_parser("hardware", help="hardware profiles: what each asks of Vertex AI and GKE, and its training settings")
    p.add_argument("action", choices=["list"], help="list: print the profiles")
    p.add_argument("--hardware-file", default=None, metavar="F.yaml", help="also list this file's profiles")
    p.add_argument("--json", action="store_true", help="machine-readable JSON instead of a table")

    p = sub.add_parser("run", help="run the whole DAG (--pipeline sweep: the scaling sweep over --sweep's points)")
    p.add_argument("--local", action="store_true", required=True, help="run with kfp.local in this environment (the only mode; use `submit` for clusters)")
    p.add_argument("--output-dir", default=None, metavar="D",
                   help="run folder collecting every stage's outputs (default runs/latest, or runs/sweep for the sweep)")
    _add_pipeline_flags(p)
    _add_param_flags(p, "override a pipeline parameter (repeatable)")

    p = sub.add_parser("submit", help="submit a compiled YAML to Vertex AI or Kubeflow; print the run's id and link")
    p.add_argument("backend", choices=["vertex", "kubeflow"], help="Vertex AI Pipelines or a Kubeflow Pipelines cluster")
    p.add_argument("--pipeline", default="caloforge_pipeline.yaml", metavar="F.yaml", help="compiled YAML (refused when compiled for the other backend)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="value of a pipeline parameter for this run (repeatable)")
    p.add_argument("--project", default="", metavar="P", help="Google Cloud project (vertex)")
    p.add_argument("--region", default="", metavar="R", help="Vertex AI region, e.g. europe-west4 (vertex)")
    p.add_argument("--pipeline-root", default="", metavar="gs://...", help="gs:// artifact root")
    p.add_argument("--service-account", default=None, metavar="SA", help="identity of the run: a Google service account email (vertex) or a Kubernetes service account (kubeflow)")
    p.add_argument("--experiment", default=None, metavar="NAME", help="experiment to file the run under (vertex: none unless given; kubeflow: caloforge)")
    p.add_argument("--labels", default=None, metavar="K=V,...", help="run labels, lowercase (vertex: job labels; kubeflow: pod labels); caloforge-version is always added")
    p.add_argument("--no-cache", action="store_true", help="run every task again instead of reusing cached results (caching is on by default)")
    p.add_argument("--wait", action="store_true", help="follow the run, printing each state change; exit 1 unless it succeeds")
    p.add_argument("--poll-seconds", type=float, default=30.0, metavar="S", help="seconds between looks at the run with --wait")
    p.add_argument("--host", default="", metavar="URL", help="Kubeflow Pipelines API endpoint, e.g. http://localhost:8080 (kubeflow; default $KF_PIPELINES_ENDPOINT)")
    p.add_argument("--namespace", default=None, metavar="NS", help="Kubeflow namespace of a multi-user deployment (kubeflow)")
    p.add_argument("--api-endpoint", default=None, metavar="URL", help="Vertex AI API endpoint (vertex; default REGION-aiplatform.googleapis.com)")
    p.add_argument("--dry-run", action="store_true", help="check the YAML and values, build the job and print it without submitting")

    p = sub.add_parser("bench", help="benchmarks across runs: `bench compare RUN_OR_SWEEP...`")
    bench = p.add_subparsers(dest="bench_command", required=True)
    c = bench.add_parser("compare", help="table (and plot) of finished runs' benchmarks beside the published 3DGAN runs")
    c.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP",
                   help="run folder, sweep folder (every run below it), benchmark folder or benchmark.json")
    c.add_argument("--prices", default="", metavar="F.yaml",
                   help="price table `profiles: {NAME: {usd_per_device_hour: X, devices: N}}` over the packaged "
                        "defaults (eval/reference_data/device_prices.yaml)")
    c.add_argument("--output-dir", default=None, metavar="D", help="also write D/compare.json and D/compare.png")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON instead of tables")

    p = sub.add_parser("params", help="show the pipeline parameters: type, default, choices, help")
    p.add_argument("--json", action="store_true", help="machine-readable JSON instead of a table")

    for name, (_, _, help_text) in STAGE_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def take_verbose(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """(whether -v/--verbose appears anywhere before a `--`, argv without it).

    The flag belongs to the CLI, not to a stage's parser, so it may come before or after the
    command name.
    """
    out: list[str] = []
    verbose = False
    for i, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg in VERBOSE_FLAGS:
            verbose = True
        else:
            out.append(arg)
    return verbose, out


def report_user_errors(command: str, action: Callable[[], object], verbose: bool) -> int:
    """Run a command; a user error becomes `caloforge <command>: error: <one line>` and exit 2.

    With verbose the traceback is printed first. Other exceptions propagate unchanged.
    """
    try:
        result = action()
    except USER_ERRORS as err:
        if verbose:
            traceback.print_exc()
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"caloforge {command}: error: {message}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    verbose, argv = take_verbose(list(sys.argv[1:] if argv is None else argv))
    _configure_console(verbose)
    # A stage command passes everything after its name to the stage's own parser.
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] in STAGE_COMMANDS:
        command, rest = argv[first], argv[first + 1 :]
        return report_user_errors(command, lambda: _stage_entry(command)(rest), verbose)

    args = build_parser().parse_args(argv)
    return report_user_errors(args.command, lambda: _dispatch(args), verbose)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "params":
        return _show_params(args.json)
    if args.command == "hardware":
        return _show_hardware(args.hardware_file, args.json)
    if args.command == "bench":
        return _bench_compare(args)
    if args.command in ("compile", "run"):
        _check_pipeline_flags(args)
    if args.command == "compile" and args.pipeline == "sweep":
        return _compile_sweep(args)
    if args.command == "run" and args.pipeline == "sweep":
        return _run_sweep(args)
    if args.command == "compile":
        from pipelines.hardware import check_params, resolve
        from pipelines.hardware_profiles import profile_defaults

        hardware = _hardware_from_args(args)
        resolved = resolve(hardware, args.target)
        params = _params_from_args(args, cluster=True, base=profile_defaults(resolved))
        check_params(resolved, params.to_dict())
        from pipelines.compiler import compile_pipeline

        path = compile_pipeline(args.output or DEFAULT_OUTPUTS["main"][0], image=args.image, hardware=hardware, target=args.target, defaults=params,
                                registry=args.registry)
        print(f"wrote {path} (hardware {hardware.name}, target {args.target})")
        return 0
    if args.command == "run":
        params = _params_from_args(args, cluster=False)
        from pipelines.local_runner import run_local

        summary = run_local(params, args.output_dir or DEFAULT_OUTPUTS["main"][1])
        verdict = {True: "passed", False: "FAILED", None: "no verdict"}[summary.passed]
        print(f"run folder: {summary.run_dir}\nindex: {summary.run_dir}/index.html\nvalidation: {verdict}\nDAG time: {summary.seconds:.1f} s")
        publication = summary.publication or {}
        if publication.get("published"):
            print(f"model published: {publication['destination']}")
        elif publication:
            print(f"model {publication.get('reason', 'not published')}")
        return 0
    if args.command == "submit":
        return _submit(args)
    raise ValueError(f"unknown command {args.command!r}")


def _compile_sweep(args: argparse.Namespace) -> int:
    """`caloforge compile --pipeline sweep`: the points checked for the target, then the YAML."""
    from pipelines.sweep import compile_sweep, describe_points, read_prices

    plan = _sweep_plan(args, args.target, cluster=True)
    prices = read_prices(args.prices)
    path = compile_sweep(args.output or DEFAULT_OUTPUTS["sweep"][0], plan, image=args.image, registry=args.registry,
                         prices_yaml=prices)
    print(f"wrote {path} (sweep of {len(plan.points)} points, target {args.target})\n{describe_points(plan)}")
    return 0


def _run_sweep(args: argparse.Namespace) -> int:
    """`caloforge run --local --pipeline sweep`: the points one after another, then the table."""
    from eval.sweep import render_text
    from pipelines.local_runner import run_local_sweep
    from pipelines.sweep import describe_points, read_prices

    plan = _sweep_plan(args, "vertex", cluster=False)
    prices = read_prices(args.prices)
    print(f"sweep of {len(plan.points)} points:\n{describe_points(plan)}", flush=True)
    result = run_local_sweep(plan, args.output_dir or DEFAULT_OUTPUTS["sweep"][1], prices_yaml=prices)
    print(render_text(result["rows"], result["notes"]))
    print(f"sweep folder: {result['sweep_dir']}\nindex: {result['sweep_dir']}/index.html\n"
          f"DAG time: {result['seconds']:.1f} s")
    return 0


def _submit(args: argparse.Namespace) -> int:
    """`caloforge submit`: values and the YAML checked first, then the run's id and link, then
    (with --wait) its states until it ends: exit 0 only when it succeeded."""
    from pipelines.config import parse_overrides

    overrides = parse_overrides(args.param)
    params = _params_from_args(args, cluster=True)
    # Only the values given: the compiled YAML's own defaults stand for the rest.
    parameters = {k: v for k, v in params.to_dict().items() if k in overrides}
    if args.poll_seconds <= 0:
        raise ValueError(f"--poll-seconds {args.poll_seconds}: must be > 0")
    from pipelines import submit

    labels = submit.parse_labels(args.labels)
    caching = False if args.no_cache else None
    compiled = submit.load_compiled(args.pipeline)
    warning = submit.check_target(compiled, args.backend)
    if warning:
        print(warning, file=sys.stderr)
    from pipelines.compiled import check_hardware_parameters

    check_hardware_parameters(compiled.spec, args.backend, parameters)  # e.g. a TPU batch of 12
    if args.backend == "vertex":
        target = submit.VertexTarget(args.project, args.region, args.pipeline_root, args.service_account, caching,
                                     labels, args.experiment, args.api_endpoint)
        if args.dry_run:
            from google.auth.credentials import AnonymousCredentials

            # A dry run never authenticates: it shows what would be submitted.
            job = submit.build_vertex_job(args.pipeline, target, parameters, credentials=AnonymousCredentials())
            print(f"would submit Vertex AI PipelineJob {job._gca_resource.display_name!r} to {args.project}/{args.region} "
                  f"with {parameters}, labels {dict(job._gca_resource.labels)}, caching {'off' if args.no_cache else 'as compiled'}")
            return 0
        run = submit.submit_vertex(args.pipeline, target, parameters)
    else:
        import os

        target = submit.KubeflowTarget(args.host or os.environ.get("KF_PIPELINES_ENDPOINT", ""), args.namespace,
                                       args.experiment or "caloforge", args.pipeline_root or None,
                                       args.service_account, caching, labels)
        if args.dry_run:
            target.validate()
            submit.check_parameters(compiled, parameters)
            print(f"would submit {args.pipeline} to {target.host} with {parameters}, pod labels "
                  f"{submit.run_labels(labels)}, caching {'off' if args.no_cache else 'as compiled'}")
            return 0
        run = submit.submit_kubeflow(args.pipeline, target.host, parameters, target=target)
    print(f"run id: {run.run_id}\nconsole: {run.console_url}", flush=True)
    if not args.wait:
        return 0
    try:
        status = submit.follow_run(run, args.poll_seconds, report=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print(f"caloforge submit: stopped following {run.run_id}; the run goes on: {run.console_url}", file=sys.stderr)
        return 130
    if status.succeeded:
        return 0
    detail = f": {' '.join(status.error.split())}" if status.error else ""
    print(f"caloforge submit: run {run.run_id} ended {status.state}{detail} ({run.console_url})", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
