"""Submits a compiled caloforge DAG to Vertex AI Pipelines or to a Kubeflow Pipelines cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VertexTarget:
    """Where and how a Vertex AI PipelineJob runs.

    Attributes:
        project: Google Cloud project id.
        region: Vertex AI region, e.g. `europe-west4` (TPUs and most GPUs are regional).
        pipeline_root: gs:// folder for artifacts; every stage's output lands below it.
        service_account: optional service account the job runs as.
        enable_caching: reuse earlier tasks' outputs when inputs match.
        labels: Vertex labels attached to the job.
    """

    project: str
    region: str
    pipeline_root: str
    service_account: str | None = None
    enable_caching: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.project:
            raise ValueError("Vertex AI submission needs --project")
        if not self.region:
            raise ValueError("Vertex AI submission needs --region")
        if not self.pipeline_root.startswith("gs://"):
            raise ValueError(f"--pipeline-root must be a gs:// folder for Vertex AI, got {self.pipeline_root!r}")


def build_vertex_job(
    template_path: str,
    target: VertexTarget,
    parameters: dict[str, Any],
    display_name: str = "caloforge",
    credentials=None,
):
    """Builds (without submitting) a Vertex AI PipelineJob from a compiled YAML.

    Construction is offline, so a dry run (and the tests) can check the job a user would submit.

    Args:
        credentials: google.auth credentials; None uses Application Default Credentials.

    Raises:
        FileNotFoundError: the compiled pipeline YAML does not exist.
        ValueError: the target is incomplete.
    """
    if not os.path.exists(template_path):
        raise FileNotFoundError(f"compiled pipeline {template_path!r} not found: run `caloforge compile` first")
    target.validate()
    from google.cloud import aiplatform

    return aiplatform.PipelineJob(
        display_name=display_name,
        template_path=template_path,
        pipeline_root=target.pipeline_root,
        parameter_values=parameters,
        enable_caching=target.enable_caching,
        labels=target.labels or None,
        project=target.project,
        location=target.region,
        credentials=credentials,
    )


def submit_vertex(template_path: str, target: VertexTarget, parameters: dict[str, Any], wait: bool = False) -> str:
    """Submits to Vertex AI and returns the job's resource name (needs Google credentials)."""
    job = build_vertex_job(template_path, target, parameters)
    job.submit(service_account=target.service_account)
    if wait:
        job.wait()
    return job.resource_name


def submit_kubeflow(
    template_path: str,
    host: str,
    parameters: dict[str, Any],
    experiment: str = "caloforge",
    namespace: str | None = None,
    pipeline_root: str | None = None,
) -> str:
    """Submits to a Kubeflow Pipelines endpoint (e.g. http://localhost:8080 via port-forward).

    Returns:
        The run id.
    """
    if not os.path.exists(template_path):
        raise FileNotFoundError(f"compiled pipeline {template_path!r} not found: run `caloforge compile` first")
    if not host:
        raise ValueError("Kubeflow submission needs --host, the KFP API endpoint")
    import kfp

    client = kfp.Client(host=host, namespace=namespace)
    result = client.create_run_from_pipeline_package(
        template_path,
        arguments=parameters,
        experiment_name=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
    )
    return result.run_id
