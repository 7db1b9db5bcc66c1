"""The worker cluster of a multi-worker run, read from what its launcher sets (no TensorFlow import).

Three launchers, one TF_CONFIG:
- TF_CONFIG set by hand, or by Vertex AI (it sets TF_CONFIG beside CLUSTER_SPEC): used as is.
- Vertex AI's CLUSTER_SPEC alone: worker pool 0 is the chief, pool 1 the workers.
- A GKE JobSet / Indexed Job started by caloforge (components/jobset.py): every pod gets the
  same worker list in CALOFORGE_WORKER_HOSTS and Kubernetes gives each its JOB_COMPLETION_INDEX.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

WORKER_HOSTS_ENV = "CALOFORGE_WORKER_HOSTS"
INDEX_ENV = "JOB_COMPLETION_INDEX"
#: Vertex AI's worker pools, in CustomJobSpec.workerPoolSpecs order.
VERTEX_POOLS = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps", "workerpool3": "evaluator"}


def _json(env: Mapping[str, str], name: str) -> dict:
    raw = env.get(name, "")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} is not valid JSON ({err}): {raw[:200]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {raw[:200]!r}")
    return value


def from_vertex_cluster_spec(spec: dict) -> dict:
    """TF_CONFIG from Vertex AI's CLUSTER_SPEC (workerpool0 = chief, workerpool1 = workers).

    Raises:
        ValueError: parameter-server or evaluator pools (caloforge trains synchronously).
    """
    cluster = {}
    for pool, hosts in spec.get("cluster", {}).items():
        role = VERTEX_POOLS.get(pool)
        if role in ("ps", "evaluator") and hosts:
            raise ValueError(f"CLUSTER_SPEC has a {role} pool ({pool}); caloforge trains with synchronous "
                             "workers only (worker pools 0 and 1)")
        if role is None:
            raise ValueError(f"CLUSTER_SPEC names an unknown worker pool {pool!r}")
        if hosts:
            cluster[role] = list(hosts)
    task = spec.get("task", {})
    role = VERTEX_POOLS.get(task.get("type", ""))
    if role not in cluster:
        raise ValueError(f"CLUSTER_SPEC task {task!r} is not in its cluster {sorted(cluster)}")
    return {"cluster": cluster, "task": {"type": role, "index": int(task.get("index", 0))}}


def from_worker_hosts(hosts: str, index: str) -> dict:
    """TF_CONFIG of pod `index` of a JobSet whose workers are `hosts` ('h0:2222,h1:2222').

    Raises:
        ValueError: an empty list, or an index that is not a position in it.
    """
    workers = [h.strip() for h in hosts.split(",") if h.strip()]
    if not workers:
        raise ValueError(f"{WORKER_HOSTS_ENV} lists no workers")
    if not index.strip().isdigit() or int(index) >= len(workers):
        raise ValueError(f"{INDEX_ENV}={index!r} is not a worker index of {WORKER_HOSTS_ENV} "
                         f"({len(workers)} workers)")
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": int(index)}}


def tf_config_from_environment(env: Mapping[str, str] | None = None) -> dict:
    """The TF_CONFIG this process belongs to; {} when it trains alone.

    Raises:
        ValueError: a malformed TF_CONFIG, CLUSTER_SPEC or worker list, naming the variable.
    """
    env = os.environ if env is None else env
    config = _json(env, "TF_CONFIG")
    if config:
        return config
    spec = _json(env, "CLUSTER_SPEC")
    if spec:
        return from_vertex_cluster_spec(spec)
    if env.get(WORKER_HOSTS_ENV):
        return from_worker_hosts(env[WORKER_HOSTS_ENV], env.get(INDEX_ENV, ""))
    return {}


def export_tf_config(env: dict | None = None) -> dict:
    """Sets TF_CONFIG from CLUSTER_SPEC or the JobSet's variables when it is unset (TensorFlow's
    cluster resolver reads only TF_CONFIG); returns the config in force."""
    env = os.environ if env is None else env
    config = tf_config_from_environment(env)
    if config and not env.get("TF_CONFIG"):
        env["TF_CONFIG"] = json.dumps(config)
    return config
