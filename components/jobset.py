"""Multi-node training on GKE from the DAG: one JobSet of N pods started together, then waited for.

Kubeflow Pipelines runs one pod per task, so a training step that needs several machines (GPU
workers, or the hosts of a multi-host TPU slice) is a small launcher task: it writes a JobSet
(jobset.x-k8s.io, the GKE way to start pods that only work together), waits for it and fails
when it fails. Each pod runs `caloforge train` with the step's TrainConfig. GPU pods find each
other through the JobSet's headless service: they all get the worker list
(CALOFORGE_WORKER_HOSTS) and Kubernetes gives each its JOB_COMPLETION_INDEX, from which
trainer.cluster builds TF_CONFIG. TPU hosts get their peers from GKE's TPU webhook instead.

`jobset_manifest` is pure (tested offline); `run_jobset` talks to the cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from trainer.cluster import WORKER_HOSTS_ENV

log = logging.getLogger(__name__)

API_GROUP = "jobset.x-k8s.io"
API_VERSION = "v1alpha2"
PLURAL = "jobsets"
REPLICATED_JOB = "workers"
PORT = 2222
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class JobSetRequest:
    """What the DAG asks of the JobSet (resolved from the hardware profile at compile time).

    Attributes:
        image: Image of every pod.
        pods: Pods started together (GPU workers or TPU hosts).
        resource, per_pod: Accelerator resource name and count per pod ('' / 0 for CPU).
        cpu, memory: Container limits ('7', '25G').
        node_selector, tolerations: Where the pods may run.
        tpu: The pods are the hosts of one TPU slice (GKE sets their peers; no worker list).
        max_restarts: Times the whole set restarts after a pod fails (training resumes from
            its checkpoints).
        poll_seconds: Interval of the status checks.
    """

    image: str
    pods: int
    resource: str = ""
    per_pod: int = 0
    cpu: str = ""
    memory: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, str]] = field(default_factory=list)
    tpu: bool = False
    max_restarts: int = 0
    poll_seconds: float = 30.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "JobSetRequest":
        return cls(**json.loads(text))


def jobset_name(output_uri: str) -> str:
    """A stable, DNS-safe name per training output: a retried launcher finds its own JobSet."""
    return "caloforge-" + hashlib.sha1(output_uri.encode()).hexdigest()[:10]


def worker_hosts(name: str, pods: int) -> list[str]:
    """`host:port` of each pod: JobSet names pods `<set>-<job>-<job index>-<pod index>` in the
    headless service `<set>`."""
    return [f"{name}-{REPLICATED_JOB}-0-{i}.{name}:{PORT}" for i in range(pods)]


def jobset_manifest(request: JobSetRequest, name: str, namespace: str, train_argv: list[str]) -> dict[str, Any]:
    """The JobSet running `caloforge train <train_argv>` on `request.pods` pods."""
    container: dict[str, Any] = {
        "name": "trainer",
        "image": request.image,
        "command": ["caloforge", "train", *train_argv],
        "ports": [{"containerPort": PORT, "name": "tf"}],
        "env": [] if request.tpu else [{"name": WORKER_HOSTS_ENV, "value": ",".join(worker_hosts(name, request.pods))}],
    }
    limits: dict[str, Any] = {}
    if request.resource:
        limits[request.resource] = request.per_pod
    if request.cpu:
        limits["cpu"] = request.cpu
    if request.memory:
        limits["memory"] = request.memory
    if limits:
        container["resources"] = {"limits": limits}
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if request.node_selector:
        pod_spec["nodeSelector"] = dict(request.node_selector)
    if request.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in request.tolerations]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {"app.kubernetes.io/name": "caloforge", "app.kubernetes.io/component": "train"}}
    if request.tpu:
        # One slice per node pool: the hosts of a slice must not be spread over two pools.
        metadata["annotations"] = {"alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"}
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "JobSet",
        "metadata": metadata,
        "spec": {
            "failurePolicy": {"maxRestarts": request.max_restarts},
            "network": {"enableDNSHostnames": True, "subdomain": name},
            "replicatedJobs": [{
                "name": REPLICATED_JOB,
                "replicas": 1,
                "template": {"spec": {
                    "parallelism": request.pods,
                    "completions": request.pods,
                    "completionMode": "Indexed",
                    "backoffLimit": 0,
                    "template": {"spec": pod_spec},
                }},
            }],
        },
    }


def jobset_state(status: dict[str, Any]) -> str:
    """'Completed', 'Failed' or 'Running' from a JobSet's status conditions."""
    for condition in status.get("conditions", []) or []:
        if condition.get("status") == "True" and condition.get("type") in ("Completed", "Failed"):
            return condition["type"]
    return "Running"


def wait_for_jobset(get_status: Callable[[], dict[str, Any]], name: str, poll_seconds: float,
                    sleep: Callable[[float], None] = time.sleep) -> None:
    """Polls until the JobSet completes; logs each change of state with the elapsed time.

    Raises:
        RuntimeError: the JobSet failed (its failure message included).
    """
    start = time.monotonic()
    last = None
    while True:
        status = get_status() or {}
        state = jobset_state(status)
        restarts = status.get("restarts", 0)
        summary = f"{state}, restarts {restarts}"
        if summary != last:
            log.info("JobSet %s: %s after %.0f s", name, summary, time.monotonic() - start)
            last = summary
        if state == "Completed":
            return
        if state == "Failed":
            reason = next((c.get("message", "") for c in status.get("conditions", []) if c.get("type") == "Failed"), "")
            raise RuntimeError(f"JobSet {name} failed after {restarts} restart(s): {reason}")
        sleep(poll_seconds)


def run_jobset(request: JobSetRequest, train_argv: list[str], output_uri: str, data_uri: str) -> str:
    """Creates (or re-attaches to) the JobSet for this output and waits for it. Cluster only.

    Raises:
        ValueError: the data or output is not on gs:// (pods on other nodes cannot see the
            launcher's files; set the Kubeflow pipeline root to a gs:// bucket).
        RuntimeError: the JobSet failed.
    """
    for what, uri in (("output", output_uri), ("data", data_uri)):
        if not uri.startswith("gs://"):
            raise ValueError(f"multi-node training needs its {what} on gs:// (got {uri!r}): run the pipeline "
                             "with a gs:// pipeline root")
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    config.load_incluster_config()
    with open(NAMESPACE_FILE, encoding="utf-8") as f:
        namespace = f.read().strip()
    name = jobset_name(output_uri)
    api = client.CustomObjectsApi()
    manifest = jobset_manifest(request, name, namespace, train_argv)
    try:
        existing = api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    except ApiException as err:
        if err.status != 404:
            raise
        existing = None
    if existing is not None and jobset_state(existing.get("status", {})) == "Failed":
        api.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name,
                                            body=client.V1DeleteOptions(propagation_policy="Foreground"))
        while True:  # the retried step starts a fresh set; training resumes from its checkpoints
            try:
                api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
            except ApiException as err:
                if err.status == 404:
                    break
                raise
            time.sleep(5)
        existing = None
    if existing is None:
        api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, manifest)
        log.info("created JobSet %s/%s: %d pod(s)", namespace, name, request.pods)
    else:
        log.info("JobSet %s/%s exists: waiting for it", namespace, name)

    def status() -> dict[str, Any]:
        return api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name).get("status", {})

    wait_for_jobset(status, name, request.poll_seconds)
    return name
