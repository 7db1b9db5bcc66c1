"""Hardware profiles compiled for Vertex AI and Kubeflow: what each YAML asks of the cloud, and the
training defaults it carries. Expected values are the machine tables' facts, written out here."""

import json

import pytest
import yaml
from google.cloud.aiplatform_v1.types import AcceleratorType, WorkerPoolSpec

from components.jobset import JobSetRequest, jobset_manifest
from pipelines.compiled import check_hardware_parameters, compiled_record
from pipelines.compiler import compile_pipeline
from pipelines.submit import check_target, load_compiled
from pipelines.config import EMBEDDED_DEMO, PipelineParams
from pipelines.hardware import HardwareProfile, backend_settings, pod_capacity, resolve, MACHINES
from pipelines.hardware_profiles import BUILTIN_PROFILES, profile_defaults, profile_table_text
from pipelines.version import VERSION

GPU = "cloud.google.com/gke-accelerator"
TPU = "cloud.google.com/gke-tpu-accelerator"
TOPO = "cloud.google.com/gke-tpu-topology"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TPU_TOLERATION = {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}

# name: (Vertex machine, accelerator enum, count, topology, replicas (chief + workers),
#        GKE node selector, GKE resource per pod, pods, strategy)
EXPECTED = {
    "gpu-t4-1": ("n1-standard-8", "NVIDIA_TESLA_T4", 1, "", 1, {GPU: "nvidia-tesla-t4"}, 1, 1, "one_device"),
    "gpu-l4-1": ("g2-standard-8", "NVIDIA_L4", 1, "", 1, {GPU: "nvidia-l4"}, 1, 1, "one_device"),
    "gpu-l4-4": ("g2-standard-48", "NVIDIA_L4", 4, "", 1, {GPU: "nvidia-l4"}, 4, 1, "mirrored"),
    "gpu-a100-1": ("a2-highgpu-1g", "NVIDIA_TESLA_A100", 1, "", 1, {GPU: "nvidia-tesla-a100"}, 1, 1, "one_device"),
    "gpu-a100-8": ("a2-highgpu-8g", "NVIDIA_TESLA_A100", 8, "", 1, {GPU: "nvidia-tesla-a100"}, 8, 1, "mirrored"),
    "gpu-a100-80gb-8": ("a2-ultragpu-8g", "NVIDIA_A100_80GB", 8, "", 1, {GPU: "nvidia-a100-80gb"}, 8, 1, "mirrored"),
    "gpu-h100-8": ("a3-highgpu-8g", "NVIDIA_H100_80GB", 8, "", 1, {GPU: "nvidia-h100-80gb"}, 8, 1, "mirrored"),
    "gpu-a100-8x4": ("a2-highgpu-8g", "NVIDIA_TESLA_A100", 8, "", 4, {GPU: "nvidia-tesla-a100"}, 8, 4, "multi_worker"),
    "gpu-h100-8x2": ("a3-highgpu-8g", "NVIDIA_H100_80GB", 8, "", 2, {GPU: "nvidia-h100-80gb"}, 8, 2, "multi_worker"),
    "tpu-v3-8": ("cloud-tpu", "TPU_V3", 8, "", 1, {TPU: "tpu-v3-device", TOPO: "2x2"}, 4, 1, "tpu"),
    "tpu-v4-8": ("cloud-tpu", "TPU_V4_POD", 8, "2x2x1", 1, {TPU: "tpu-v4-podslice", TOPO: "2x2x1"}, 4, 1, "tpu"),
    "tpu-v5e-8": ("ct5lp-hightpu-8t", "", 0, "2x4", 1, {TPU: "tpu-v5-lite-podslice", TOPO: "2x4"}, 8, 1, "tpu"),
    "tpu-v5e-16": ("ct5lp-hightpu-4t", "", 0, "4x4", 1, {TPU: "tpu-v5-lite-podslice", TOPO: "4x4"}, 4, 4, "tpu"),
}
IMAGES = {kind: f"ghcr.io/caloforge/caloforge-{kind}:{VERSION}" for kind in ("cpu", "gpu", "tpu")}


def _env():
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _load(path):
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    return docs[0], (docs[1] if len(docs) > 1 else {})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, request):
    """Every built-in profile compiled for both targets, as `caloforge compile` does it."""
    import os

    saved = {k: os.environ.pop(k) for k in ("CALOFORGE_IMAGE", "CALOFORGE_REGISTRY") if k in os.environ}
    folder = tmp_path_factory.mktemp("profiles")
    out = {}
    for name, profile in BUILTIN_PROFILES.items():
        for target in ("vertex", "kubeflow"):
            resolved = resolve(profile, target)
            path = compile_pipeline(str(folder / f"{name}-{target}.yaml"), hardware=profile, target=target,
                                    defaults=profile_defaults(resolved))
            out[name, target] = path
    yield out
    os.environ.update(saved)


def test_every_builtin_profile_is_listed_and_compiles_for_both_targets(compiled):
    assert set(BUILTIN_PROFILES) == {"cpu", *EXPECTED}
    for (name, target), path in compiled.items():
        spec = load_compiled(path).spec
        assert spec["root"]["inputDefinitions"]["parameters"]["compile_target"]["defaultValue"] == target
        record = compiled_record(spec["pipelineInfo"]["description"])
        assert (record["target"], record["hardware"]["name"], record["version"]) == (target, name, VERSION)
        assert HardwareProfile.from_dict(record["hardware"]) == BUILTIN_PROFILES[name]


def _train_task(spec):
    tasks = spec["root"]["dag"]["tasks"]
    key = next(k for k in tasks if k.startswith("train-gan"))
    return key, tasks[key]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vertex_yaml_runs_training_as_a_custom_job_with_the_profiles_worker_pools(compiled, name):
    machine, accelerator, count, topology, replicas, _, _, _, strategy = EXPECTED[name]
    spec, platform = _load(compiled[name, "vertex"])
    assert platform == {}  # nothing Kubernetes-only in a Vertex YAML
    _, task = _train_task(spec)
    pools = task["inputs"]["parameters"]["worker_pool_specs"]["runtimeValue"]["constant"]
    kind = name.split("-")[0]
    assert [p["replica_count"] for p in pools] == [1] + ([replicas - 1] if replicas > 1 else [])
    for pool in pools:
        machine_spec = pool["machine_spec"]
        assert machine_spec["machine_type"] == machine
        assert machine_spec.get("accelerator_type", "") == accelerator
        assert machine_spec.get("accelerator_count", 0) == count
        assert machine_spec.get("tpu_topology", "") == topology
        assert pool["container_spec"]["image_uri"] == IMAGES[kind]
        WorkerPoolSpec.from_json(json.dumps(pool))  # the real client's message takes every field
        if accelerator:
            assert AcceleratorType[accelerator]  # a member of aiplatform's enum
    component = spec["components"]["comp-train-gan"]["inputDefinitions"]["parameters"]
    assert component["strategy"]["defaultValue"] == "STANDARD"  # Vertex scheduling, not tf.distribute
    assert "distribution_strategy" in component
    assert component["restart_job_on_worker_restart"]["defaultValue"] is (replicas > 1)
    assert component["labels"]["defaultValue"] == {"caloforge-version": VERSION.replace(".", "-"),
                                                   "caloforge-hardware": name}
    assert task["retryPolicy"]["maxRetryCount"] == 2
    images = {k: e["container"]["image"] for k, e in spec["deploymentSpec"]["executors"].items()}
    assert {images[f"exec-{s}"] for s in ("prepare-raw-data", "convert-to-tfrecords", "evaluate-gan",
                                          "collect-benchmark")} == {IMAGES["cpu"]}
    defaults = {k: v["defaultValue"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    tpu = kind == "tpu"
    assert defaults["distribution_strategy"] == strategy
    assert (defaults["preset"], defaults["max_steps"], defaults["epochs"]) == ("full", 0, 60)
    assert defaults["precision"] == ("mixed_bfloat16" if tpu else "mixed_float16")
    assert defaults["batch_size_per_replica"] == (128 if tpu else 64) and defaults["jit_compile"] is True
    assert defaults["mc_events"] == EMBEDDED_DEMO["mc_events"][0]  # the rest stays the demo's


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kubeflow_yaml_asks_gke_for_the_profiles_nodes(compiled, name):
    machine, _, _, topology, _, selector, per_pod, pods, strategy = EXPECTED[name]
    spec, platform = _load(compiled[name, "kubeflow"])
    key, task = _train_task(spec)
    tpu = name.startswith("tpu")
    resource = "google.com/tpu" if tpu else "nvidia.com/gpu"
    toleration = TPU_TOLERATION if tpu else GPU_TOLERATION
    kind = name.split("-")[0]
    assert task["retryPolicy"]["maxRetryCount"] == 2
    if pods == 1:
        assert key == "train-gan"
        resources = spec["deploymentSpec"]["executors"]["exec-train-gan"]["container"]["resources"]
        assert (resources["accelerator"]["resourceType"], resources["accelerator"]["resourceCount"]) == (resource, str(per_pod))
        cpu, memory = pod_capacity(MACHINES[resolve(BUILTIN_PROFILES[name], "kubeflow").machine.name])
        assert 1 <= resources["cpuLimit"] <= cpu and 1 <= resources["memoryLimit"] <= memory
        executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-gan"]
        assert executor["nodeSelector"]["labels"] == selector
        assert executor["tolerations"] == [toleration]
        assert spec["deploymentSpec"]["executors"]["exec-train-gan"]["container"]["image"] == IMAGES[kind]
    else:
        # Several machines: a launcher task starts them as one JobSet.
        assert key == "train-gan-jobset" and task["taskInfo"]["name"] == "train 3DGAN"
        request = JobSetRequest.from_json(task["inputs"]["parameters"]["jobset_request"]["runtimeValue"]["constant"])
        manifest = jobset_manifest(request, "caloforge-abc", "kubeflow-user", ["--preset", "full"])
        job = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]
        pod = job["template"]["spec"]
        assert (job["parallelism"], job["completions"], job["completionMode"]) == (pods, pods, "Indexed")
        assert pod["nodeSelector"] == selector and pod["tolerations"] == [toleration]
        container = pod["containers"][0]
        assert container["resources"]["limits"][resource] == per_pod
        assert container["image"] == IMAGES[kind]
        assert manifest["spec"]["failurePolicy"]["maxRestarts"] == 2
        assert (request.tpu, bool(container["env"])) == (tpu, not tpu)  # TPU hosts get peers from GKE
    defaults = {k: v["defaultValue"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert defaults["distribution_strategy"] == strategy and defaults["preset"] == "full"


def test_cpu_profile_is_the_embedded_demo_as_a_plain_task(compiled):
    for target in ("vertex", "kubeflow"):
        spec, platform = _load(compiled["cpu", target])
        assert platform == {}
        key, task = _train_task(spec)
        assert key == "train-gan" and "retryPolicy" not in task and "worker_pool_specs" not in task["inputs"]["parameters"]
        resources = spec["deploymentSpec"]["executors"]["exec-train-gan"]["container"]["resources"]
        assert "accelerator" not in resources and resources["resourceCpuLimit"] == "6"  # n1-standard-8
        defaults = {k: v["defaultValue"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
        assert defaults == {**PipelineParams().to_dict(), "compile_target": target}
        images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
        assert images == {IMAGES["cpu"]}


def test_user_profile_file_spot_and_training_overrides(tmp_path, capsys):
    from pipelines.cli import main

    hardware = tmp_path / "hardware.yaml"
    hardware.write_text(
        "profiles:\n"
        "  t4x4-spot:\n"
        "    accelerator: gpu\n    gpu_type: t4\n    count: 4\n    spot: true\n    retries: 3\n"
        "    training: {global_batch_size: 256, epochs: 80}\n")
    assert main(["hardware", "list", "--hardware-file", str(hardware)]) == 0
    listed = capsys.readouterr().out
    assert "t4x4-spot" in listed and "batch_size_per_replica=64" in listed and "epochs=80" in listed
    out = {}
    for target in ("vertex", "kubeflow"):
        out[target] = tmp_path / f"{target}.yaml"
        assert main(["compile", "--hardware-file", str(hardware), "--hardware", "t4x4-spot", "--target", target,
                     "--output", str(out[target]), "--param", "epochs=90", "--registry", "europe-docker.pkg.dev/p/r"]) == 0
    spec, _ = _load(out["vertex"])
    component = spec["components"]["comp-train-gan"]["inputDefinitions"]["parameters"]
    assert component["strategy"]["defaultValue"] == "SPOT"
    pool = spec["root"]["dag"]["tasks"]["train-gan"]["inputs"]["parameters"]["worker_pool_specs"]["runtimeValue"]["constant"][0]
    assert pool["machine_spec"]["machine_type"] == "n1-standard-32" and pool["machine_spec"]["accelerator_count"] == 4
    assert pool["container_spec"]["image_uri"] == f"europe-docker.pkg.dev/p/r/caloforge-gpu:{VERSION}"
    defaults = {k: v["defaultValue"] for k, v in spec["root"]["inputDefinitions"]["parameters"].items()}
    assert (defaults["batch_size_per_replica"], defaults["epochs"]) == (64, 90)  # 256 / 4; --param wins
    spec, platform = _load(out["kubeflow"])
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-gan"]
    assert executor["nodeSelector"]["labels"] == {GPU: "nvidia-tesla-t4", "cloud.google.com/gke-spot": "true"}
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"} in executor["tolerations"]
    assert spec["root"]["dag"]["tasks"]["train-gan"]["retryPolicy"]["maxRetryCount"] == 3


def test_a_yaml_is_refused_by_the_other_backend_and_checked_against_its_hardware(compiled, capsys):
    from pipelines.cli import main

    kubeflow_yaml = compiled["tpu-v3-8", "kubeflow"]
    with pytest.raises(ValueError, match="was compiled for kubeflow, not vertex"):
        check_target(load_compiled(kubeflow_yaml), "vertex")
    spec = load_compiled(kubeflow_yaml).spec
    with pytest.raises(ValueError, match="batch_size_per_replica=12 .* multiple of 8"):
        check_hardware_parameters(spec, "kubeflow", {"batch_size_per_replica": 12})
    check_hardware_parameters(spec, "kubeflow", {"batch_size_per_replica": 16})
    cases = [
        (["submit", "vertex", "--pipeline", kubeflow_yaml, "--project", "p", "--region", "europe-west4",
          "--pipeline-root", "gs://b/r", "--dry-run"], "was compiled for kubeflow, not vertex"),
        (["submit", "kubeflow", "--pipeline", compiled["gpu-a100-8", "vertex"], "--host", "http://127.0.0.1:1",
          "--dry-run"], "was compiled for vertex, not kubeflow"),
        (["submit", "kubeflow", "--pipeline", kubeflow_yaml, "--host", "http://127.0.0.1:1", "--param",
          "precision=mixed_float16", "--dry-run"], "TPUs compute in bfloat16"),
        (["submit", "vertex", "--pipeline", compiled["gpu-a100-8x4", "vertex"], "--project", "p", "--region", "r",
          "--pipeline-root", "gs://b/r", "--param", "distribution_strategy=mirrored", "--dry-run"],
         "distribution_strategy='mirrored' cannot run on hardware profile 'gpu-a100-8x4'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_stock_kfp_compiler_builds_the_module_pipeline(tmp_path):
    """`kfp dsl compile --py pipelines/pipeline.py`: the default image and profile, target recorded."""
    import os
    import subprocess
    import sys

    kfp = os.path.join(os.path.dirname(sys.executable), "kfp")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "stock.yaml"
    proc = subprocess.run([kfp, "dsl", "compile", "--py", os.path.join(repo, "pipelines", "pipeline.py"),
                           "--output", str(out)], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    compiled_yaml = load_compiled(str(out))
    assert compiled_yaml.target == "vertex"
    assert compiled_record(compiled_yaml.spec["pipelineInfo"]["description"])["hardware"]["name"] == "cpu"
    images = {e["container"]["image"] for e in compiled_yaml.spec["deploymentSpec"]["executors"].values()}
    assert images == {os.environ.get("CALOFORGE_IMAGE") or IMAGES["cpu"]}


def test_training_settings_follow_the_hardware():
    cpu = backend_settings(HardwareProfile())
    assert (cpu.strategy, cpu.precision, cpu.jit_compile, cpu.replicas) == ("default", "float32", False, 1)
    assert resolve(BUILTIN_PROFILES["gpu-a100-8x4"], "vertex").replicas == 32
    assert resolve(BUILTIN_PROFILES["tpu-v3-8"], "vertex").replicas == 8  # v3 shows each core
    assert resolve(BUILTIN_PROFILES["tpu-v4-8"], "vertex").replicas == 4  # v4 megacore: one device a chip
    assert resolve(BUILTIN_PROFILES["cpu"], "kubeflow").settings == {}


def test_hardware_list_shows_every_profile_with_machines(capsys):
    from pipelines.cli import main

    assert main(["hardware", "list"]) == 0
    text = capsys.readouterr().out
    for name, (machine, *_rest) in EXPECTED.items():
        row = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert machine in row, row
    assert "tpu-v5e-16: distribution_strategy=tpu" in profile_table_text()
    assert main(["hardware", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(BUILTIN_PROFILES)


def test_hardware_module_does_not_import_tensorflow_or_kfp():
    import subprocess
    import sys

    code = ("import sys, pipelines.hardware, pipelines.hardware_profiles, pipelines.compiled, trainer.cluster; "
            "print([m for m in ('tensorflow', 'kfp') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "[]"


def test_example_hardware_file_in_infra_resolves_on_both_targets():
    import os

    from pipelines.hardware_profiles import load_hardware_file

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "infra", "hardware-profiles.yaml")
    profiles = load_hardware_file(path)
    assert set(profiles) == {"gpu-a100-4", "tpu-v3-8-long", "gpu-t4-4-spot"}
    for profile in profiles.values():
        for target in ("vertex", "kubeflow"):
            profile_defaults(resolve(profile, target))
    assert resolve(profiles["gpu-a100-4"], "vertex").vertex.machine_type == "a2-highgpu-4g"
    assert profile_defaults(resolve(profiles["gpu-t4-4-spot"], "vertex")).batch_size_per_replica == 64


def test_only_a_vertex_accelerator_dag_imports_pipeline_components():
    """kfp.local (the cpu profile) and Kubeflow compiles must not need google-cloud-pipeline-components."""
    import subprocess
    import sys

    code = ("import sys\nfrom pipelines.pipeline import create_pipeline\n"
            "from pipelines.hardware_profiles import BUILTIN_PROFILES as P\n"
            "create_pipeline()\ncreate_pipeline(hardware=P['gpu-a100-8x4'], target='kubeflow')\n"
            "before = 'google_cloud_pipeline_components' in sys.modules\n"
            "create_pipeline(hardware=P['gpu-a100-8'], target='vertex')\n"
            "print(before, 'google_cloud_pipeline_components' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"]


def test_compiled_image_names_are_the_ones_cloud_build_pushes():
    """pipelines.images (what a compiled YAML names) against infra/cloudbuild.yaml (what `make images` pushes)."""
    import os

    from pipelines.images import IMAGES as TABLE, image_for

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "infra", "cloudbuild.yaml"), encoding="utf-8") as f:
        build = yaml.safe_load(f)
    subs = {**build["substitutions"], "_REGION": "europe-west4", "PROJECT_ID": "my-proj", "_VERSION": VERSION}
    pushed = set()
    for name in build["images"]:
        for key, value in subs.items():
            name = name.replace("${" + key + "}", value)
        pushed.add(name)
    registry = f"europe-west4-docker.pkg.dev/my-proj/{subs['_REPOSITORY']}"
    assert pushed == {image_for(kind, registry) for kind in TABLE}
    for _, dockerfile in TABLE.values():
        assert os.path.exists(os.path.join(repo, "infra", "docker", dockerfile))
