"""The multi-node trainer finds its cluster from what Vertex AI and caloforge's GKE JobSet set.

Two real worker processes on 127.0.0.1 train together from Vertex AI's CLUSTER_SPEC alone
(worker pool 0 = chief). Each JobSet pod's worker list plus its JOB_COMPLETION_INDEX, exactly as
the JobSet manifest sets them, give TensorFlow's resolver the cluster and the pod's task."""

import json
import subprocess
import sys

import pytest

from components.jobset import JobSetRequest, jobset_manifest, jobset_state, wait_for_jobset, worker_hosts
from tests.test_trainer_distributed import _env, _finish_all, _free_ports
from trainer.cluster import (INDEX_ENV, WORKER_HOSTS_ENV, export_tf_config,
                             tf_config_from_environment)


def _vertex_cluster_spec(chief, workers, role, index):
    # The form Vertex AI sets in every replica of a custom job (CustomJobSpec worker pools 0 and 1).
    return json.dumps({"cluster": {"workerpool0": [chief], "workerpool1": workers}, "environment": "cloud",
                       "task": {"type": role, "index": index, "trial": ""}, "job": {"worker_pool_specs": []}})


def test_tf_config_from_each_launcher():
    spec = _vertex_cluster_spec("c:2222", ["w0:2222", "w1:2222"], "workerpool1", 1)
    assert tf_config_from_environment({"CLUSTER_SPEC": spec}) == {
        "cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]}, "task": {"type": "worker", "index": 1}}
    chief = tf_config_from_environment({"CLUSTER_SPEC": _vertex_cluster_spec("c:1", [], "workerpool0", 0)})
    assert chief == {"cluster": {"chief": ["c:1"]}, "task": {"type": "chief", "index": 0}}
    own = {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    assert tf_config_from_environment({"TF_CONFIG": json.dumps(own), "CLUSTER_SPEC": spec}) == own  # TF_CONFIG wins
    assert tf_config_from_environment({WORKER_HOSTS_ENV: "h0:2222,h1:2222", INDEX_ENV: "1"}) == {
        "cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 1}}
    assert tf_config_from_environment({}) == {}
    env = {WORKER_HOSTS_ENV: "h0:1,h1:1", INDEX_ENV: "0"}
    assert json.loads(export_tf_config(env) and env["TF_CONFIG"])["task"] == {"type": "worker", "index": 0}


@pytest.mark.parametrize("env,message", [
    ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["c:1"], "workerpool2": ["ps:1"]},
                                  "task": {"type": "workerpool0", "index": 0}})}, "ps pool (workerpool2)"),
    ({"CLUSTER_SPEC": "{not json"}, "CLUSTER_SPEC is not valid JSON"),
    ({"TF_CONFIG": "[1]"}, "TF_CONFIG must be a JSON object"),
    ({WORKER_HOSTS_ENV: "h0:1,h1:1", INDEX_ENV: "2"}, "JOB_COMPLETION_INDEX='2' is not a worker index"),
    ({WORKER_HOSTS_ENV: "h0:1"}, "JOB_COMPLETION_INDEX=''"),
])
def test_malformed_cluster_environment_is_named(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        tf_config_from_environment(env)


def test_each_jobset_pod_gets_its_own_tf_config():
    request = JobSetRequest(image="img", pods=3, resource="nvidia.com/gpu", per_pod=8, cpu="90", memory="600G",
                            node_selector={"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"})
    manifest = jobset_manifest(request, "caloforge-0123456789", "team", ["--preset", "full"])
    assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and manifest["kind"] == "JobSet"
    assert manifest["metadata"]["namespace"] == "team"
    assert manifest["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": "caloforge-0123456789"}
    container = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["caloforge", "train", "--preset", "full"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 8, "cpu": "90", "memory": "600G"}
    env = {e["name"]: e["value"] for e in container["env"]}
    hosts = worker_hosts("caloforge-0123456789", 3)
    assert hosts[2] == "caloforge-0123456789-workers-0-2.caloforge-0123456789:2222"
    for index in range(3):  # what Kubernetes adds to pod `index` of the Indexed Job
        config = tf_config_from_environment({**env, INDEX_ENV: str(index)})
        assert config == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def test_waiting_for_a_jobset_follows_its_conditions():
    running = {"restarts": 0, "conditions": []}
    done = {"restarts": 1, "conditions": [{"type": "Completed", "status": "True"}]}
    failed = {"restarts": 2, "conditions": [{"type": "Failed", "status": "True", "message": "pod OOMKilled"}]}
    statuses = iter([running, running, done])
    sleeps = []
    wait_for_jobset(lambda: next(statuses), "js", 5, sleep=sleeps.append)
    assert sleeps == [5, 5]
    with pytest.raises(RuntimeError, match="JobSet js failed after 2 restart\\(s\\): pod OOMKilled"):
        wait_for_jobset(lambda: failed, "js", 5, sleep=sleeps.append)
    assert jobset_state({"conditions": [{"type": "Completed", "status": "False"}]}) == "Running"


# One worker: a tiny in-memory sample (no conversion needed), strategy auto, two steps.
WORKER_SCRIPT = r"""
import json, sys
import numpy as np
from trainer.config import TrainConfig
from trainer.inputs import in_memory_dataset_fn
from trainer.train import train
rng = np.random.default_rng(0)
raw = (rng.exponential(1.0, (8, 51, 51, 25)) * (rng.random((8, 51, 51, 25)) < 0.03)).astype(np.float32)
th = rng.uniform(1.1, 2.0, 8).astype(np.float32)
arrays = {"ecal": raw ** 0.85, "energy": rng.uniform(50, 200, 8).astype(np.float32), "theta": th,
          "mtheta": th, "ecal_sum": raw.reshape(8, -1).sum(1)}
cfg = TrainConfig(output_dir=sys.argv[1], preset="tiny", strategy="auto", batch_size_per_replica=2, max_steps=2,
                  checkpoint_every=0, seed=3)
print(json.dumps(train(cfg, dataset_fn=in_memory_dataset_fn(arrays)).to_dict()))
"""


def test_two_workers_from_vertex_cluster_spec(tmp_path):
    chief, worker = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    envs = [{"CLUSTER_SPEC": _vertex_cluster_spec(chief, [worker], "workerpool0", 0)},
            {"CLUSTER_SPEC": _vertex_cluster_spec(chief, [worker], "workerpool1", 0)}]
    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(out)], env=_env(**env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for env in envs]
    outputs = _finish_all(procs)
    assert [o["is_chief"] for o in outputs] == [True, False]  # worker pool 0 is the chief
    assert all(o["replicas"] == 2 and o["steps"] == 2 for o in outputs)
    # Bit-exact on purpose: synchronous replicas apply the same all-reduced gradients.
    assert outputs[0]["weights_digest"] == outputs[1]["weights_digest"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extra"]["strategy_class"] in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")


def test_tensorflow_resolves_each_jobset_pods_cluster(monkeypatch):
    """What MultiWorkerMirroredStrategy reads in each JobSet pod (the real two-process training
    above runs the same resolver on Vertex's form)."""
    import tensorflow as tf

    from trainer.strategy import cluster_workers

    hosts = worker_hosts("caloforge-0123456789", 2)
    for index in range(2):
        monkeypatch.setenv("TF_CONFIG", "")
        monkeypatch.setenv(WORKER_HOSTS_ENV, ",".join(hosts))
        monkeypatch.setenv(INDEX_ENV, str(index))
        assert cluster_workers() == 2  # strategy auto picks multi_worker
        export_tf_config()
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        assert resolver.cluster_spec().as_dict() == {"worker": hosts}
        assert (resolver.task_type, resolver.task_id) == ("worker", index)
