"""The lightweight KFP component functions: translate artifacts and parameters, call the library.

Each body imports the library inside the function (KFP ships only the function's source to the
container), builds the stage's config dataclass, calls the stage, and records a few results in the
output artifacts' metadata. No physics or training logic lives here.

The parameters besides the artifacts are pipeline parameters: their names, types and the config
fields they set come from pipelines.config.PARAMETERS (`stage_values` maps them onto the config;
a test checks each signature against the table). KFP needs the signatures written out here.
"""

from typing import NamedTuple

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

#: The evaluator's verdict as the DAG's gate reads it (`dsl.If(verdict == PASSED)`).
PASSED = "PASSED"
FAILED = "FAILED"


def prepare_raw_data(
    mc_events: int,
    mc_events_per_file: int,
    mc_energy_min: float,
    mc_energy_max: float,
    mc_seed: int,
    input_uri: str,
    raw_data: Output[Dataset],
):
    """Writes Monte Carlo HDF5 files, or validates and lists the user's real files at input_uri."""
    from components.artifacts import local_dir, uri_of, write_json
    from data_prep.console import configure_console
    from data_prep.sources import describe_sources, list_hdf5
    from pipelines.config import stage_values

    configure_console()
    out_dir = local_dir(raw_data)
    if input_uri:
        files = list_hdf5(input_uri)
        raw_data.metadata["source"] = input_uri
    else:
        from data_prep.montecarlo import MonteCarloConfig, generate_files

        config = MonteCarloConfig(**stage_values("generate", locals()))
        files = generate_files(config, out_dir)
        raw_data.metadata["source"] = "monte_carlo"
        raw_data.metadata["mc_config"] = config.to_dict()
    description = describe_sources(files)
    for entry in description["files"]:
        entry["uri"] = uri_of(raw_data, entry["uri"])  # gs:// for remote Beam workers on Vertex
    write_json(out_dir, "files.json", description)
    raw_data.metadata["files"] = len(files)
    raw_data.metadata["events"] = sum(f["n_events"] for f in description["files"])


def convert_to_tfrecords(
    raw_data: Input[Dataset],
    test_fraction: float,
    encoding: str,
    compression: str,
    on_bad_event: str,
    beam_args: str,
    tfrecords: Output[Dataset],
):
    """Runs the Beam HDF5 -> TFRecord conversion; the artifact is the dataset with its manifest."""
    import json
    import os
    import shlex

    from components.artifacts import local_dir, location
    from data_prep.console import configure_console
    from data_prep.convert import ConvertConfig, convert
    from pipelines.config import stage_values

    configure_console()
    with open(os.path.join(local_dir(raw_data), "files.json"), encoding="utf-8") as f:
        files = [entry["uri"] for entry in json.load(f)["files"]]
    config = ConvertConfig(inputs=files, output=location(tfrecords), overwrite=True,
                           **stage_values("convert", locals()))
    manifest = convert(config, pipeline_args=shlex.split(beam_args))
    tfrecords.metadata["counts"] = manifest["counts"]
    tfrecords.metadata["manifest"] = os.path.join(location(tfrecords), "manifest.json")


def train_gan(
    tfrecords: Input[Dataset],
    preset: str,
    training_loop: str,
    epochs: int,
    max_steps: int,
    batch_size_per_replica: int,
    learning_rate: float,
    lr_scaling: str,
    d_mode_in_g_update: str,
    distribution_strategy: str,
    cpu_logical_devices: int,
    precision: str,
    jit_compile: bool,
    train_seed: int,
    snapshot_every: int,
    keep_snapshots: int,
    model: Output[Model],
):
    """Trains 3DGAN; the Model artifact is the trainer's whole output folder (generator, timings...)."""
    import os

    from components.artifacts import location
    from data_prep.console import configure_console, import_quietly
    from pipelines.config import stage_values
    from trainer.config import TrainConfig

    configure_console()
    import_quietly("tensorflow")
    from trainer.train import train

    config = TrainConfig(data=os.path.join(location(tfrecords), "manifest.json"), output_dir=location(model),
                         **stage_values("train", locals()))
    result = train(config)
    model.metadata["steps"] = result.steps
    model.metadata["replicas"] = result.replicas
    model.metadata["strategy"] = result.strategy
    model.metadata["final_losses"] = result.final_losses


def evaluate_gan(
    tfrecords: Input[Dataset],
    model: Input[Model],
    eval_events: int,
    eval_seed: int,
    eval_thresholds: str,
    select_best: bool,
    best_of_last: int,
    evaluation: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> NamedTuple("EvaluateOutputs", [("verdict", str)]):
    """Validates generated showers against the Monte Carlo test split.

    `evaluation` is the evaluator's whole folder (metrics.json, report.html, plots/, and
    generator/: the generator evaluated, the best snapshot of the training run unless
    select_best is off; metrics.json's `selected_generator` names it, and the publish step
    publishes that copy); `report` is report.html alone, which the Vertex AI and Kubeflow UIs
    render inline. The Metrics hold every figure beside its Monte Carlo noise floor (`<name>`,
    `<name>_floor`) and `selected_step`. A FAILED verdict does not fail the step: it returns
    `verdict` ("PASSED" or "FAILED"), and the DAG publishes the model only when it is PASSED.
    """
    import collections
    import os

    from components.artifacts import location, log_with_floor
    from data_prep import uri
    from data_prep.console import configure_console, import_quietly
    from pipelines.config import stage_values

    configure_console()
    import_quietly("tensorflow")
    from eval.evaluate import EvalConfig, evaluate

    out_dir = location(evaluation)
    config = EvalConfig(data=os.path.join(location(tfrecords), "manifest.json"),
                        generator_dir=os.path.join(location(model), "generator"), output_dir=out_dir,
                        **stage_values("evaluate", locals()))
    result = evaluate(config)
    with open(report.path, "wb") as f:
        f.write(uri.read_bytes(uri.join(out_dir, "report.html")))
    passed = bool(result["verdict"]["passed"])
    evaluation.metadata["passed"] = passed
    evaluation.metadata["selected_generator"] = result["selected_generator"]
    report.metadata["passed"] = passed
    log_with_floor(metrics, result["summary"].get("generated", {}), result["summary"].get("noise_floor", {}))
    metrics.log_metric("passed", float(passed))
    if result["selected_generator"]["step"] is not None:
        metrics.log_metric("selected_step", float(result["selected_generator"]["step"]))
    return collections.namedtuple("EvaluateOutputs", ["verdict"])("PASSED" if passed else "FAILED")


def collect_benchmark(
    tfrecords: Input[Dataset],
    model: Input[Model],
    warmup_steps: int,
    hardware_profile: str,
    benchmark: Output[Artifact],
    metrics: Output[Metrics],
):
    """Summarises the training timings into benchmark.json and benchmark.mllog (throughput, epoch
    time, generation beside Monte Carlo, FLOPs, fingerprint); the Metrics are its headline figures."""
    import os

    from components.artifacts import location, log_scalars
    from data_prep.console import configure_console, import_quietly
    from eval.benchmark import BenchmarkConfig, collect
    from pipelines.config import stage_values

    configure_console()
    import_quietly("tensorflow")  # the fingerprint lists TensorFlow's devices
    config = BenchmarkConfig(train_dir=location(model), output_dir=location(benchmark),
                             manifest=os.path.join(location(tfrecords), "manifest.json"),
                             **stage_values("benchmark", locals()))
    result = collect(config)
    log_scalars(metrics, result["figures"])
    benchmark.metadata["status"] = result["status"]
    benchmark.metadata["measured"] = result["measured"]


def publish_model(
    model: Input[Model],
    evaluation: Input[Artifact],
    models_uri: str,
    model_name: str,
    register_vertex_model: bool,
    run_id: str,
    blessed_model: Output[Model],
) -> str:
    """Publishes a generator the evaluator blessed (the DAG runs it only on a PASSED verdict).

    Copies the generator, its training config, metrics and report to `<models_uri>/<name>/`, or,
    with models_uri empty, into `blessed_model` itself (under the pipeline root), with
    publication.json (provenance) last. `blessed_model` always holds publication.json; its
    metadata names the destination. Returns the publication summary as JSON (the DAG's
    `publication` output).
    """
    import json

    from components.artifacts import local_dir, location, write_json
    from data_prep.console import configure_console
    from eval.publish import PublishConfig, publication_summary, publish
    from pipelines.config import stage_values

    configure_console()
    values = stage_values("publish", locals())
    in_artifact = not values["destination"]
    if in_artifact:
        values["destination"] = location(blessed_model)
    config = PublishConfig(model_dir=location(model), evaluation_dir=location(evaluation), run_id=run_id, **values)
    record = publish(config)
    if not in_artifact:
        write_json(local_dir(blessed_model), "publication.json", record)
    summary = publication_summary(record)
    summary["in_artifact"] = in_artifact
    summary["artifact"] = blessed_model.path
    for key in ("name", "destination", "run_id"):
        blessed_model.metadata[key] = record[key]
    blessed_model.metadata["verdict"] = "PASSED"
    if record.get("vertex_model"):
        blessed_model.metadata["vertex_model"] = record["vertex_model"].get("resource_name")
    print(f"published {record['name']} to {record['destination']}", flush=True)
    return json.dumps(summary, sort_keys=True)


def skip_publish(evaluation: Input[Artifact], verdict: str) -> str:
    """The gate's other branch: says why the model was not published (the failed checks).

    Returns the publication summary as JSON (`{"published": false, "reason": ...}`).
    """
    import json

    from components.artifacts import location
    from data_prep import uri
    from eval.publish import not_published_reason, publication_summary

    metrics = json.loads(uri.read_text(uri.join(location(evaluation), "metrics.json")))
    reason = not_published_reason(metrics)
    print(f"{reason} (verdict output: {verdict})", flush=True)
    return json.dumps(publication_summary(None, reason), sort_keys=True)
