"""The DAG's training step on each backend, from a resolved hardware profile (pipelines.hardware).

- Vertex AI, accelerators or several workers: a Vertex custom job
  (google-cloud-pipeline-components' create_custom_training_job_from_component) whose worker
  pools carry the machine type, accelerator enum and count, TPU topology and replica count,
  SPOT scheduling and restart_job_on_worker_restart. Vertex sets CLUSTER_SPEC / TF_CONFIG.
- Kubeflow, one pod: the training task with `nvidia.com/gpu` / `google.com/tpu` limits, CPU and
  memory the machine can give, GKE node selectors and tolerations (kfp-kubernetes).
- Kubeflow, several pods (GPU workers, multi-host TPU): a launcher task that runs the training
  as a JobSet (components.jobset) and waits for it.
- Otherwise (the cpu profile): the plain task with CPU and memory limits (kfp.local ignores them).

Every path gets the profile's retry policy: a retried step resumes from its checkpoints.
"""

from __future__ import annotations

import re
from typing import Any

from kfp import dsl

from pipelines.hardware import ResolvedHardware
from pipelines.version import VERSION

CUSTOM_JOB_DISPLAY_NAME = "caloforge-train"
RETRY_BACKOFF = "120s"


def vertex_labels(resolved: ResolvedHardware) -> dict[str, str]:
    """Labels of the custom job (lowercase letters, digits, '-' and '_' only)."""

    def clean(value: str) -> str:
        return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]

    return {"caloforge-version": clean(VERSION), "caloforge-hardware": clean(resolved.profile.name)}


def add_training_step(comps: Any, resolved: ResolvedHardware, tfrecords: Any, inputs: dict[str, Any],
                      train_image: str) -> dsl.PipelineTask:
    """Adds the training task for `resolved` to the pipeline being defined."""
    if resolved.target == "vertex" and resolved.vertex is not None:
        task = _vertex_custom_job(comps.train_gan, resolved)(tfrecords=tfrecords, **inputs)
    elif resolved.target == "kubeflow" and resolved.multi_node:
        task = comps.train_gan_jobset(tfrecords=tfrecords, **inputs,
                                      jobset_request=jobset_request(resolved, train_image).to_json())
    else:
        task = comps.train_gan(tfrecords=tfrecords, **inputs)
        _request_resources(task, resolved)
    if resolved.profile.retries:
        task.set_retry(num_retries=resolved.profile.retries, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0)
    return task


def worker_pool_specs(template: list[dict], resolved: ResolvedHardware) -> list[dict]:
    """gcpc's worker pools with the TPU topology added (its utility has no such argument)."""
    import copy

    pools = copy.deepcopy(template)
    if resolved.vertex is not None and resolved.vertex.tpu_topology:
        for pool in pools:
            pool["machine_spec"]["tpu_topology"] = resolved.vertex.tpu_topology
    return pools


def _vertex_custom_job(component: Any, resolved: ResolvedHardware) -> Any:
    # Imported here only: kfp.local and Kubeflow compiles never need google-cloud-pipeline-components.
    from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component

    pool = resolved.vertex
    profile = resolved.profile
    op = create_custom_training_job_from_component(
        component,
        display_name=CUSTOM_JOB_DISPLAY_NAME,
        replica_count=pool.replica_count,
        machine_type=pool.machine_type,
        accelerator_type=pool.accelerator_type,
        accelerator_count=pool.accelerator_count,
        restart_job_on_worker_restart=profile.restart_job_on_worker_restart,
        strategy="SPOT" if profile.spot else "STANDARD",
        labels=vertex_labels(resolved),
    )
    template = op.component_spec.inputs["worker_pool_specs"].default
    pools = worker_pool_specs(template, resolved)

    def call(**kwargs: Any) -> dsl.PipelineTask:
        return op(worker_pool_specs=pools, **kwargs)

    return call


def _request_resources(task: dsl.PipelineTask, resolved: ResolvedHardware) -> None:
    gke = resolved.gke
    task.set_cpu_limit(gke.cpu)
    task.set_memory_limit(gke.memory)
    if resolved.target == "vertex":
        return  # a Vertex pipeline task picks its machine from these limits
    if gke.resource:
        task.set_accelerator_type(gke.resource)
        task.set_accelerator_limit(gke.per_pod)
    if gke.node_selector or gke.tolerations:
        from kfp import kubernetes

        for key, value in gke.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in gke.tolerations:
            kubernetes.add_toleration(task, **toleration)


def jobset_request(resolved: ResolvedHardware, image: str) -> Any:
    from components.jobset import JobSetRequest

    gke = resolved.gke
    return JobSetRequest(image=image, pods=gke.pods, resource=gke.resource, per_pod=gke.per_pod, cpu=gke.cpu,
                         memory=gke.memory, node_selector=dict(gke.node_selector),
                         tolerations=[dict(t) for t in gke.tolerations],
                         tpu=resolved.profile.accelerator == "tpu", max_restarts=resolved.profile.retries)
