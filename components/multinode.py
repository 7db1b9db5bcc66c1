"""The training step for several machines on a Kubeflow cluster: a launcher that runs a JobSet.

Same inputs and output as components.stages.train_gan (so the DAG wires it the same way), plus
`jobset_request`: the compile-time JSON of components.jobset.JobSetRequest (image, pods,
accelerators per pod, node selectors, tolerations).
"""

from kfp.dsl import Dataset, Input, Model, Output


def train_gan_jobset(
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
    jobset_request: str,
    model: Output[Model],
):
    """Starts the training JobSet, waits for it, and records the chief's summary in the Model."""
    import json
    import os

    from components.artifacts import location
    from components.jobset import JobSetRequest, run_jobset
    from data_prep import uri
    from data_prep.config_cli import config_to_argv
    from data_prep.console import configure_console
    from pipelines.config import stage_values
    from trainer.config import TrainConfig

    configure_console()
    output = location(model)
    data = os.path.join(location(tfrecords), "manifest.json")
    config = TrainConfig(data=data, output_dir=output, **stage_values("train", locals()))
    run_jobset(JobSetRequest.from_json(jobset_request), config_to_argv(config), output, data)
    summary = json.loads(uri.read_bytes(uri.join(output, "summary.json")))
    for key in ("steps", "replicas", "strategy", "final_losses"):
        if key in summary:
            model.metadata[key] = summary[key]
