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

import dataclasses
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


class SweepTraining:
    """The scaling sweep's training step: one task in the ParallelFor, its hardware from the point.

    Each point's resources are compiled into its loop item (pipelines.sweep) and handed to the
    task from there; a value every point shares is set as a constant. Per backend:

    - Vertex AI, any point with accelerators or several workers: every point is a custom job
      whose worker pools (machine, accelerators, replica count, TPU topology and the image of
      its accelerator) come from the item; scheduling (SPOT) and labels too.
    - Kubeflow: one pod per point, all of one kind (one image and one accelerator resource
      name; `nvidia.com/gpu` or `google.com/tpu` counts, CPU, memory, node selectors and
      tolerations from the item). Points needing several pods (a JobSet) are refused.
    - Otherwise (the cpu points on Vertex AI or kfp.local): plain tasks with CPU and memory limits.

    The retry policy is the most any point's profile asks for.
    """

    def __init__(self, plan: Any, image: str | None, registry: str | None):
        from pipelines.images import stage_images

        self.points = plan.points
        self.target = plan.target
        kinds = sorted({p.resolved.profile.accelerator for p in self.points})
        if self.target == "vertex":
            self.mode = "custom_job" if any(p.resolved.vertex is not None for p in self.points) else "task"
        else:
            multi = [p.name for p in self.points if p.resolved.multi_node]
            if multi:
                raise ValueError(f"--sweep on kubeflow: {', '.join(multi)} need{'s' if len(multi) == 1 else ''} "
                                 "several pods started together (a "
                                 "JobSet), and a sweep runs each point as one pod there; compile such a profile as "
                                 "its own DAG, or sweep it with --target vertex")
            if len(kinds) > 1:
                raise ValueError(f"--sweep on kubeflow: points of {' and '.join(kinds)} together; the sweep's pods "
                                 "share one image and one accelerator resource there: sweep each kind apart, or "
                                 "use --target vertex")
            self.mode = "pod"
        self.images = {kind: stage_images(kind, image, registry).train for kind in kinds}
        self.retries = max(p.resolved.profile.retries for p in self.points)
        self._resources = [self._resources_of(p) for p in self.points]

    # -- compile time: each point's item fields ------------------------------------------------

    def _resources_of(self, point: Any) -> dict[str, Any]:
        resolved = point.resolved
        gke = resolved.gke
        if self.mode == "custom_job":
            return {"worker_pool_specs": self._pools(point),
                    "scheduling": "SPOT" if resolved.profile.spot else "STANDARD",
                    "restart_job_on_worker_restart": resolved.profile.restart_job_on_worker_restart,
                    "labels": vertex_labels(resolved)}
        out: dict[str, Any] = {"cpu": gke.cpu, "memory": gke.memory}
        if self.mode == "pod":
            out.update({"accelerator_count": gke.per_pod, "node_selector": dict(gke.node_selector),
                        "tolerations": [dict(t) for t in gke.tolerations]})
        return out

    def _pools(self, point: Any) -> list[dict]:
        from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component

        from components import stages
        from pipelines.hardware import VertexPool

        resolved = point.resolved
        pool = resolved.vertex or VertexPool(resolved.machine.name, "", 0, "", resolved.workers)
        component = dsl.component(base_image=self.images[resolved.profile.accelerator],
                                  install_kfp_package=False)(stages.train_gan)
        op = create_custom_training_job_from_component(
            component, display_name=CUSTOM_JOB_DISPLAY_NAME, replica_count=pool.replica_count,
            machine_type=pool.machine_type, accelerator_type=pool.accelerator_type,
            accelerator_count=pool.accelerator_count)
        return worker_pool_specs(op.component_spec.inputs["worker_pool_specs"].default,
                                 dataclasses.replace(resolved, vertex=pool))

    def item_resources(self, point: Any) -> dict[str, Any]:
        return self._resources[self.points.index(point)]

    def _value(self, key: str, item: Any) -> Any:
        """The constant every point shares, else the loop item's field."""
        values = [r[key] for r in self._resources]
        return values[0] if all(v == values[0] for v in values) else getattr(item, key)

    # -- the task ------------------------------------------------------------------------------

    def add(self, comps: Any, tfrecords: Any, inputs: dict[str, Any], item: Any) -> dsl.PipelineTask:
        """Adds the training task of the loop item `item` to the pipeline being defined."""
        if self.mode == "custom_job":
            from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component

            op = create_custom_training_job_from_component(comps.train_gan, display_name=CUSTOM_JOB_DISPLAY_NAME)
            task = op(tfrecords=tfrecords, **inputs, worker_pool_specs=item.worker_pool_specs,
                      strategy=item.scheduling, restart_job_on_worker_restart=item.restart_job_on_worker_restart,
                      labels=item.labels)
        else:
            from components import stages

            kind = next(iter(self.images))
            component = dsl.component(base_image=self.images[kind], install_kfp_package=False)(stages.train_gan)
            task = component(tfrecords=tfrecords, **inputs)
            task.set_cpu_limit(self._value("cpu", item))
            task.set_memory_limit(self._value("memory", item))
            if self.mode == "pod":
                self._pod_requests(task, item)
        if self.retries:
            task.set_retry(num_retries=self.retries, backoff_duration=RETRY_BACKOFF, backoff_factor=2.0)
        return task

    def _pod_requests(self, task: dsl.PipelineTask, item: Any) -> None:
        from kfp import kubernetes

        resource = self.points[0].resolved.gke.resource
        if resource:
            task.set_accelerator_type(resource)
            task.set_accelerator_limit(self._value("accelerator_count", item))
        selector = self._value("node_selector", item)
        if isinstance(selector, dict):
            for key, value in selector.items():
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
        else:
            kubernetes.add_node_selector_json(task, node_selector_json=selector)
        tolerations = self._value("tolerations", item)
        if not isinstance(tolerations, list) or tolerations:
            kubernetes.add_toleration_json(task, toleration_json=tolerations)
