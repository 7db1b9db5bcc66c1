"""The one map from a hardware profile to what each backend needs and what training it implies.

A HardwareProfile says what a training run asks for (GPU type and count, TPU version and
topology, workers, spot, retries, training overrides). `resolve(profile, target)` turns it into
a ResolvedHardware: the machine type, the Vertex AI worker pool (machine, accelerator enum and
count, TPU topology, replica count), the GKE pod (node selectors, tolerations,
`nvidia.com/gpu` / `google.com/tpu` per host, CPU and memory a pod can get), and the training
settings it implies (strategy, precision, XLA, per-replica batch, preset, epochs). Every
impossible request fails here, at compile time, with one line naming the limit.

Machine and accelerator facts come from the Compute Engine, GKE and Vertex AI machine tables
(GPU machine families, TPU slice shapes). No kfp or TensorFlow import: the CLI validates a
request before anything heavy loads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

ACCELERATORS = ("cpu", "gpu", "tpu")
TARGETS = ("vertex", "kubeflow")


# ---------------------------------------------------------------------------------------------
# Machines


@dataclass(frozen=True)
class Machine:
    """A Compute Engine machine type.

    Attributes:
        name: e.g. a2-highgpu-8g.
        vcpus, memory_gb: its size.
        gpus, gpu_type: GPUs built into the machine (a2, a3, g2); 0 for machines that take
            attached GPUs (n1) or none.
        tpu_chips: TPU chips of one TPU VM host.
    """

    name: str
    vcpus: int
    memory_gb: float
    gpus: int = 0
    gpu_type: str = ""
    tpu_chips: int = 0


def _n1(kind: str, n: int, gb_per_vcpu: float) -> Machine:
    return Machine(f"n1-{kind}-{n}", n, round(n * gb_per_vcpu, 2))


MACHINES: dict[str, Machine] = {m.name: m for m in [
    *[_n1("standard", n, 3.75) for n in (4, 8, 16, 32, 64, 96)],
    *[_n1("highmem", n, 6.5) for n in (8, 16, 32, 64, 96)],
    *[Machine(f"e2-standard-{n}", n, 4.0 * n) for n in (4, 8, 16, 32)],
    Machine("a2-highgpu-1g", 12, 85, 1, "nvidia-tesla-a100"),
    Machine("a2-highgpu-2g", 24, 170, 2, "nvidia-tesla-a100"),
    Machine("a2-highgpu-4g", 48, 340, 4, "nvidia-tesla-a100"),
    Machine("a2-highgpu-8g", 96, 680, 8, "nvidia-tesla-a100"),
    Machine("a2-megagpu-16g", 96, 1360, 16, "nvidia-tesla-a100"),
    Machine("a2-ultragpu-1g", 12, 170, 1, "nvidia-a100-80gb"),
    Machine("a2-ultragpu-2g", 24, 340, 2, "nvidia-a100-80gb"),
    Machine("a2-ultragpu-4g", 48, 680, 4, "nvidia-a100-80gb"),
    Machine("a2-ultragpu-8g", 96, 1360, 8, "nvidia-a100-80gb"),
    Machine("a3-highgpu-8g", 208, 1872, 8, "nvidia-h100-80gb"),
    Machine("g2-standard-4", 4, 16, 1, "nvidia-l4"),
    Machine("g2-standard-8", 8, 32, 1, "nvidia-l4"),
    Machine("g2-standard-12", 12, 48, 1, "nvidia-l4"),
    Machine("g2-standard-16", 16, 64, 1, "nvidia-l4"),
    Machine("g2-standard-24", 24, 96, 2, "nvidia-l4"),
    Machine("g2-standard-32", 32, 128, 1, "nvidia-l4"),
    Machine("g2-standard-48", 48, 192, 4, "nvidia-l4"),
    Machine("g2-standard-96", 96, 384, 8, "nvidia-l4"),
    # TPU VM hosts (GKE node machine types; Vertex takes the same names for v5e).
    Machine("ct3-hightpu-4t", 96, 340, tpu_chips=4),
    Machine("ct3p-hightpu-4t", 48, 340, tpu_chips=4),
    Machine("ct4p-hightpu-4t", 240, 407, tpu_chips=4),
    Machine("ct5lp-hightpu-1t", 24, 48, tpu_chips=1),
    Machine("ct5lp-hightpu-4t", 112, 192, tpu_chips=4),
    Machine("ct5lp-hightpu-8t", 224, 384, tpu_chips=8),
    Machine("ct5p-hightpu-4t", 208, 448, tpu_chips=4),
]}

#: CPU and memory that GKE's system daemons (kube-proxy, logging, the GPU device plugin) take
#: from a node beyond the kubelet's reservation; a pod asking for more would never schedule.
SYSTEM_PODS_CPU = 1.0
SYSTEM_PODS_MEMORY_GB = 2.0


def pod_capacity(machine: Machine) -> tuple[float, float]:
    """(vCPUs, GB) one pod can get on this machine under GKE's allocatable rules.

    GKE reserves CPU (6 % of the first core, 1 % of the next, 0.5 % of the next two, 0.25 %
    above four) and memory (25 % of the first 4 GB, 20 % of the next 4, 10 % of the next 8,
    6 % of the next 112, 2 % above 128, plus a 100 MiB eviction threshold); daemons take a
    little more (SYSTEM_PODS_*).
    """
    c = machine.vcpus
    cpu_reserved = (0.06 * min(c, 1) + 0.01 * min(max(c - 1, 0), 1) + 0.005 * min(max(c - 2, 0), 2)
                    + 0.0025 * max(c - 4, 0))
    m = machine.memory_gb
    mem_reserved = (0.25 * min(m, 4) + 0.2 * min(max(m - 4, 0), 4) + 0.1 * min(max(m - 8, 0), 8)
                    + 0.06 * min(max(m - 16, 0), 112) + 0.02 * max(m - 128, 0) + 0.1)
    return c - cpu_reserved - SYSTEM_PODS_CPU, m - mem_reserved - SYSTEM_PODS_MEMORY_GB


# ---------------------------------------------------------------------------------------------
# Accelerators


@dataclass(frozen=True)
class GpuType:
    """An NVIDIA GPU type and the machines that carry it.

    Attributes:
        name: GKE node label value (cloud.google.com/gke-accelerator).
        vertex: Vertex AI AcceleratorType enum name.
        memory_gb: GPU memory.
        bfloat16: has bfloat16 tensor cores (Ampere and later).
        machines: GPUs per machine -> the default machine type. Built-in GPUs (a2, a3, g2):
            the counts those machines have. Attached GPUs (n1): the counts Compute Engine
            allows, with any n1 machine up to `attached_max_vcpus[count]` vCPUs.
        attached_max_vcpus: for attached GPUs, count -> the largest n1 machine (vCPUs) allowed.
    """

    name: str
    vertex: str
    memory_gb: int
    bfloat16: bool
    machines: dict[int, str]
    attached_max_vcpus: dict[int, int] = field(default_factory=dict)

    @property
    def attached(self) -> bool:
        return bool(self.attached_max_vcpus)

    def family(self) -> str:
        if self.attached:
            return f"n1-* + {self.name}"
        return ", ".join(sorted({m.rsplit("-", 1)[0] + "-*" for m in self.machines.values()}))

    def candidates(self, count: int) -> list[Machine]:
        """Machines with `count` of these GPUs, smallest first."""
        if self.attached:
            limit = self.attached_max_vcpus.get(count, 0)
            found = [m for m in MACHINES.values() if m.name.startswith("n1-") and m.vcpus <= limit]
        else:
            found = [m for m in MACHINES.values() if m.gpu_type == self.name and m.gpus == count]
        return sorted(found, key=lambda m: (m.vcpus, m.memory_gb))


GPU_TYPES: dict[str, GpuType] = {g.name: g for g in [
    GpuType("nvidia-tesla-t4", "NVIDIA_TESLA_T4", 16, False,
            {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32"}, {1: 48, 2: 48, 4: 96}),
    GpuType("nvidia-tesla-v100", "NVIDIA_TESLA_V100", 16, False,
            {1: "n1-standard-8", 2: "n1-standard-16", 4: "n1-standard-32", 8: "n1-standard-64"},
            {1: 12, 2: 24, 4: 48, 8: 96}),
    GpuType("nvidia-l4", "NVIDIA_L4", 24, True,
            {1: "g2-standard-8", 2: "g2-standard-24", 4: "g2-standard-48", 8: "g2-standard-96"}),
    GpuType("nvidia-tesla-a100", "NVIDIA_TESLA_A100", 40, True,
            {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g",
             16: "a2-megagpu-16g"}),
    GpuType("nvidia-a100-80gb", "NVIDIA_A100_80GB", 80, True,
            {1: "a2-ultragpu-1g", 2: "a2-ultragpu-2g", 4: "a2-ultragpu-4g", 8: "a2-ultragpu-8g"}),
    GpuType("nvidia-h100-80gb", "NVIDIA_H100_80GB", 80, True, {8: "a3-highgpu-8g"}),
]}
GPU_ALIASES = {"t4": "nvidia-tesla-t4", "v100": "nvidia-tesla-v100", "l4": "nvidia-l4",
               "a100": "nvidia-tesla-a100", "nvidia-a100": "nvidia-tesla-a100",
               "a100-80gb": "nvidia-a100-80gb", "h100": "nvidia-h100-80gb",
               "nvidia-h100": "nvidia-h100-80gb"}
DEFAULT_GPU = "nvidia-tesla-a100"


@dataclass(frozen=True)
class TpuSlice:
    """One TPU slice shape: the host machine and how many hosts it spans."""

    machine: str
    chips_per_host: int

    def hosts(self, chips: int) -> int:
        return chips // self.chips_per_host


@dataclass(frozen=True)
class TpuType:
    """A TPU generation.

    Attributes:
        version: v3 | v4 | v5e | v5p.
        gke_single_host, gke_multi_host: cloud.google.com/gke-tpu-accelerator values.
        vertex: Vertex AI AcceleratorType enum name; '' where aiplatform has none.
        vertex_machine: Vertex machine type ('' = the GKE host machine of the slice).
        vertex_topologies: the slices Vertex AI training takes.
        tensorcores_per_chip: what `v3-8` / `v4-8` count.
        tf_devices_per_chip: TPU devices TensorFlow sees per chip (v2/v3 expose each core,
            v4/v5p fuse two into one megacore, v5e has one core).
        slices: topology -> TpuSlice (the GKE/TPU VM table).
    """

    version: str
    gke_single_host: str
    gke_multi_host: str
    vertex: str
    vertex_machine: str
    vertex_topologies: tuple[str, ...]
    tensorcores_per_chip: int
    tf_devices_per_chip: int
    slices: dict[str, TpuSlice]


def _slices(single: dict[str, TpuSlice], multi_machine: str, multi: tuple[str, ...]) -> dict[str, TpuSlice]:
    return {**single, **{t: TpuSlice(multi_machine, 4) for t in multi}}


TPU_TYPES: dict[str, TpuType] = {t.version: t for t in [
    TpuType("v3", "tpu-v3-device", "tpu-v3-slice", "TPU_V3", "cloud-tpu", ("2x2",), 2, 2,
            _slices({"2x2": TpuSlice("ct3-hightpu-4t", 4)}, "ct3p-hightpu-4t",
                    ("4x4", "4x8", "8x8", "8x16", "16x16"))),
    TpuType("v4", "tpu-v4-podslice", "tpu-v4-podslice", "TPU_V4_POD", "cloud-tpu", ("2x2x1",), 2, 1,
            _slices({"2x2x1": TpuSlice("ct4p-hightpu-4t", 4)}, "ct4p-hightpu-4t",
                    ("2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8", "4x8x8", "8x8x8"))),
    TpuType("v5e", "tpu-v5-lite-podslice", "tpu-v5-lite-podslice", "TPU_V5_LITEPOD", "",
            ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16"), 1, 1,
            _slices({"1x1": TpuSlice("ct5lp-hightpu-1t", 1), "2x2": TpuSlice("ct5lp-hightpu-4t", 4),
                     "2x4": TpuSlice("ct5lp-hightpu-8t", 8)}, "ct5lp-hightpu-4t",
                    ("4x4", "4x8", "8x8", "8x16", "16x16"))),
    # aiplatform's AcceleratorType has no TPU_V5P: v5p runs on GKE only.
    TpuType("v5p", "tpu-v5p-slice", "tpu-v5p-slice", "", "", (), 2, 1,
            _slices({"2x2x1": TpuSlice("ct5p-hightpu-4t", 4)}, "ct5p-hightpu-4t",
                    ("2x2x2", "2x2x4", "2x4x4", "4x4x4", "4x4x8"))),
]}
DEFAULT_TPU = "v3"


# ---------------------------------------------------------------------------------------------
# Profiles


#: Keys of a profile's `training:` section besides pipeline parameter names.
TRAINING_EXTRA_KEYS = ("global_batch_size",)


@dataclass(frozen=True)
class HardwareProfile:
    """What a training run asks for; a built-in name or an entry of a --hardware-file.

    Attributes:
        name: The profile's name (caloforge hardware list).
        accelerator: cpu | gpu | tpu.
        count: GPUs per worker, or TPU chips in the slice; 0 = derived (1 GPU, or the
            topology's chips). On a cpu profile: logical CPU devices the machine's CPU is split
            into, one replica each (0 or 1 = one; a plumbing test of several replicas, not a
            speed-up: they share the same cores).
        gpu_type: GKE label such as nvidia-tesla-a100, or an alias (a100, l4, t4, h100).
        tpu_version: v3 | v4 | v5e | v5p.
        tpu_topology: Slice topology such as 2x2 or 2x2x1; '' = derived from count.
        workers: Machines training together (CPU/GPU). For a TPU the slice sets the hosts;
            give it only to have it checked.
        machine_type: A machine of the GPU's family; '' = the family's default for the count,
            or the smallest one that fits cpu and memory_gb.
        cpu: vCPUs the training pod asks for per worker (Kubeflow); 0 = what the machine gives.
        memory_gb: Memory the training pod asks for per worker; 0 = what the machine gives.
        spot: Spot VMs (Vertex SPOT scheduling; GKE spot node pools).
        restart_job_on_worker_restart: Vertex: restart every worker when one restarts.
        retries: Retries of the training task (the trainer resumes from its checkpoints).
        training: Training settings overriding the implied ones, by pipeline parameter name
            (distribution_strategy, precision, jit_compile, batch_size_per_replica, preset,
            epochs, ...) or global_batch_size (split over the replicas).
        description: One line for `caloforge hardware list`.
    """

    name: str = "custom"
    accelerator: str = "cpu"
    count: int = 0
    gpu_type: str = ""
    tpu_version: str = ""
    tpu_topology: str = ""
    workers: int = 1
    machine_type: str = ""
    cpu: float = 0
    memory_gb: float = 0
    spot: bool = False
    restart_job_on_worker_restart: bool = False
    retries: int = 0
    training: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        where = f"hardware profile {self.name!r}"
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"{where}: accelerator={self.accelerator!r} is not one of {', '.join(ACCELERATORS)}")
        for name in ("count", "workers", "retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{where}: {name}={value!r} must be an integer")
        if self.count < 0 or self.workers < 1 or self.retries < 0:
            raise ValueError(f"{where}: count={self.count} and retries={self.retries} must be >= 0, "
                             f"workers={self.workers} >= 1")
        if self.cpu < 0 or self.memory_gb < 0:
            raise ValueError(f"{where}: cpu={self.cpu} and memory_gb={self.memory_gb} must be >= 0")
        if self.accelerator == "cpu" and self.count > 1 and self.workers > 1:
            raise ValueError(f"{where}: accelerator=cpu with count={self.count} logical CPU devices takes one "
                             f"worker, not workers={self.workers}")
        if self.accelerator != "gpu" and self.gpu_type:
            raise ValueError(f"{where}: gpu_type={self.gpu_type!r} needs accelerator=gpu")
        if self.accelerator != "tpu" and (self.tpu_version or self.tpu_topology):
            raise ValueError(f"{where}: tpu_version/tpu_topology need accelerator=tpu")
        if not isinstance(self.training, Mapping):
            raise ValueError(f"{where}: training must be a mapping of pipeline parameters, got {self.training!r}")
        if self.accelerator == "gpu":
            self.gpu()
        if self.accelerator == "tpu":
            self.tpu()
            topo = self.tpu_topology
            if topo and not all(d.isdigit() and int(d) > 0 for d in topo.split("x")):
                raise ValueError(f"{where}: tpu_topology={topo!r} must look like 2x2 or 2x2x1")

    # -- accelerator types ------------------------------------------------------------------

    def gpu(self) -> GpuType:
        """The GPU type, resolving aliases. Raises ValueError naming the valid types."""
        key = (self.gpu_type or DEFAULT_GPU).lower()
        key = GPU_ALIASES.get(key, key)
        if key not in GPU_TYPES:
            raise ValueError(f"hardware profile {self.name!r}: gpu_type={self.gpu_type!r} is not one of "
                             f"{', '.join([*GPU_TYPES, *GPU_ALIASES])}")
        return GPU_TYPES[key]

    def tpu(self) -> TpuType:
        """The TPU version. Raises ValueError naming the valid versions."""
        key = (self.tpu_version or DEFAULT_TPU).lower()
        if key not in TPU_TYPES:
            raise ValueError(f"hardware profile {self.name!r}: tpu_version={self.tpu_version!r} is not one of "
                             f"{', '.join(TPU_TYPES)}")
        return TPU_TYPES[key]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["training"] = dict(self.training)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str | None = None) -> "HardwareProfile":
        """A profile from a mapping (a --hardware-file entry); unknown keys are named."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        label = name or data.get("name", "custom")
        if unknown:
            raise ValueError(f"hardware profile {label!r}: unknown keys {unknown}; known "
                             f"{[k for k in known if k != 'name']}")
        values = dict(data)
        if name is not None:
            values["name"] = name
        for key in ("cpu", "memory_gb"):
            if key in values and (isinstance(values[key], bool) or not isinstance(values[key], (int, float))):
                raise ValueError(f"hardware profile {label!r}: {key}={values[key]!r} must be a number")
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# Resolution: one profile on one backend


@dataclass(frozen=True)
class VertexPool:
    """The Vertex AI custom job's worker pool (the chief; `replica_count - 1` workers copy it)."""

    machine_type: str
    accelerator_type: str
    accelerator_count: int
    tpu_topology: str
    replica_count: int


@dataclass(frozen=True)
class GkePod:
    """One training pod on GKE (several for multi-node GPU and multi-host TPU).

    Attributes:
        pods: Pods started together (workers, or TPU hosts).
        resource: nvidia.com/gpu | google.com/tpu | '' (CPU).
        per_pod: GPUs or TPU chips each pod asks for.
        cpu, memory: Container limits in KFP/Kubernetes syntax ('7', '25G').
        node_selector: Node labels the pod needs.
        tolerations: Taints of GPU, TPU and spot node pools the pod tolerates.
    """

    pods: int
    resource: str
    per_pod: int
    cpu: str
    memory: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]


@dataclass(frozen=True)
class ResolvedHardware:
    """A profile checked and resolved for one target (see `resolve`).

    Attributes:
        machine: The machine of each worker / TPU host.
        workers: Processes training together (machines; the TPU slice counts as one on Vertex).
        replicas: TensorFlow replicas in sync (GPUs x workers, TPU devices, or 1 per CPU worker).
        tpu_topology, tpu_chips: The TPU slice ('' / 0 otherwise).
        vertex: The Vertex worker pool, or None when the step runs as a plain pipeline task.
        gke: The GKE pod(s).
        settings: The training settings implied: pipeline parameter -> (value, reason).
    """

    profile: HardwareProfile
    target: str
    machine: Machine
    workers: int
    replicas: int
    tpu_topology: str
    tpu_chips: int
    vertex: VertexPool | None
    gke: GkePod
    settings: dict[str, tuple[Any, str]]

    @property
    def multi_node(self) -> bool:
        """Several pods/machines must start together (a custom job on Vertex, a JobSet on GKE)."""
        return self.gke.pods > 1

    @property
    def image_kind(self) -> str:
        return self.profile.accelerator


def _topology_chips(topology: str) -> int:
    return math.prod(int(d) for d in topology.split("x"))


def _pick_machine(profile: HardwareProfile, candidates: list[Machine], default: str, what: str) -> Machine:
    """The profile's machine_type (checked to be a candidate), else the default if it fits the
    cpu/memory request, else the smallest candidate that fits."""
    where = f"hardware profile {profile.name!r}"
    if profile.machine_type:
        machine = MACHINES.get(profile.machine_type)
        if machine is None or machine not in candidates:
            valid = ", ".join(m.name for m in candidates)
            raise ValueError(f"{where}: machine_type={profile.machine_type!r} cannot carry {what}; "
                             f"valid: {valid}")
        chosen = machine
    else:
        fits = [m for m in candidates if _fits(profile, m)]
        preferred = MACHINES.get(default)
        chosen = preferred if preferred in fits else (fits[0] if fits else None)
        if chosen is None:
            biggest = max(candidates, key=lambda m: (m.memory_gb, m.vcpus))
            cpu, mem = pod_capacity(biggest)
            raise ValueError(f"{where}: no machine with {what} gives a pod cpu={profile.cpu:g} and "
                             f"memory_gb={profile.memory_gb:g}; the largest, {biggest.name}, gives "
                             f"{math.floor(cpu)} vCPUs and {math.floor(mem)} GB")
    if not _fits(profile, chosen):
        cpu, mem = pod_capacity(chosen)
        raise ValueError(f"{where}: {chosen.name} ({chosen.vcpus} vCPUs, {chosen.memory_gb:g} GB) gives a "
                         f"pod at most {math.floor(cpu)} vCPUs and {math.floor(mem)} GB; asked cpu="
                         f"{profile.cpu:g}, memory_gb={profile.memory_gb:g}")
    return chosen


def _fits(profile: HardwareProfile, machine: Machine) -> bool:
    cpu, mem = pod_capacity(machine)
    return profile.cpu <= cpu and profile.memory_gb <= mem


def _pod_limits(profile: HardwareProfile, machine: Machine) -> tuple[str, str]:
    cpu, mem = pod_capacity(machine)
    asked_cpu = profile.cpu or max(1, math.floor(cpu))
    asked_mem = profile.memory_gb or max(1, math.floor(mem))
    return f"{asked_cpu:g}", f"{asked_mem:g}G"


GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TPU_TAINT = {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TAINT = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
SPOT_LABEL = ("cloud.google.com/gke-spot", "true")

CPU_MACHINE = "n1-standard-8"
CPU_MACHINES = ("n1-standard-", "n1-highmem-", "e2-standard-")


def resolve(profile: HardwareProfile, target: str) -> ResolvedHardware:
    """Checks `profile` for `target` and resolves machine, worker pools, pods and settings.

    Raises:
        ValueError: one line naming the profile, the value and the limit it breaks.
    """
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is not one of {', '.join(TARGETS)}")
    if profile.accelerator == "gpu":
        return _resolve_gpu(profile, target)
    if profile.accelerator == "tpu":
        return _resolve_tpu(profile, target)
    return _resolve_cpu(profile, target)


def _selectors(profile: HardwareProfile, selectors: dict[str, str], taints: list[dict]) -> tuple[dict, list]:
    if profile.spot:
        selectors = {**selectors, SPOT_LABEL[0]: SPOT_LABEL[1]}
        taints = [*taints, SPOT_TAINT]
    return selectors, taints


def _resolve_cpu(profile: HardwareProfile, target: str) -> ResolvedHardware:
    candidates = [m for m in MACHINES.values() if m.name.startswith(CPU_MACHINES)]
    machine = _pick_machine(profile, sorted(candidates, key=lambda m: (m.vcpus, m.memory_gb)), CPU_MACHINE,
                            "a CPU-only training")
    cpu, memory = _pod_limits(profile, machine)
    selectors, taints = _selectors(profile, {}, [])
    gke = GkePod(profile.workers, "", 0, cpu, memory, selectors, taints)
    vertex = None
    if profile.workers > 1 or profile.spot:
        vertex = VertexPool(machine.name, "", 0, "", profile.workers)
    replicas = max(profile.count, 1) * profile.workers
    return ResolvedHardware(profile, target, machine, profile.workers, replicas, "", 0, vertex, gke,
                            training_settings(profile, replicas=replicas))


def _resolve_gpu(profile: HardwareProfile, target: str) -> ResolvedHardware:
    gpu = profile.gpu()
    count = profile.count or 1
    where = f"hardware profile {profile.name!r}"
    if count not in gpu.machines:
        counts = ", ".join(str(c) for c in gpu.machines)
        more = " (more GPUs: several workers)" if count > max(gpu.machines) else ""
        raise ValueError(f"{where}: {gpu.name} comes {counts} per machine ({gpu.family()}), not "
                         f"count={count}{more}")
    machine = _pick_machine(profile, gpu.candidates(count), gpu.machines[count], f"{count} x {gpu.name}")
    cpu, memory = _pod_limits(profile, machine)
    selectors, taints = _selectors(profile, {"cloud.google.com/gke-accelerator": gpu.name}, [GPU_TAINT])
    gke = GkePod(profile.workers, "nvidia.com/gpu", count, cpu, memory, selectors, taints)
    vertex = VertexPool(machine.name, gpu.vertex, count, "", profile.workers)
    return ResolvedHardware(profile, target, machine, profile.workers, count * profile.workers, "", 0, vertex,
                            gke, training_settings(profile, replicas=count * profile.workers))


def _resolve_tpu(profile: HardwareProfile, target: str) -> ResolvedHardware:
    tpu = profile.tpu()
    where = f"hardware profile {profile.name!r}"
    topology = profile.tpu_topology
    if not topology:
        matching = [t for t in tpu.slices if _topology_chips(t) == (profile.count or 0)]
        if not profile.count:
            matching = [next(iter(tpu.slices))]
        if not matching:
            sizes = ", ".join(f"{_topology_chips(t)} ({t})" for t in tpu.slices)
            raise ValueError(f"{where}: no TPU {tpu.version} slice has count={profile.count} chips; valid: {sizes}")
        topology = matching[0]
    if topology not in tpu.slices:
        raise ValueError(f"{where}: tpu_topology={topology!r} is not a TPU {tpu.version} slice; valid: "
                         f"{', '.join(tpu.slices)}")
    chips = _topology_chips(topology)
    if profile.count and profile.count != chips:
        raise ValueError(f"{where}: count={profile.count} chips does not match tpu_topology={topology} "
                         f"({chips} chips)")
    shape = tpu.slices[topology]
    hosts = shape.hosts(chips) if chips >= shape.chips_per_host else 1
    per_host = min(chips, shape.chips_per_host)
    if profile.workers not in (1, hosts):
        raise ValueError(f"{where}: TPU {tpu.version} {topology} runs on {hosts} host(s) of {per_host} chips; "
                         f"workers={profile.workers} does not match (leave workers out)")
    if profile.machine_type and profile.machine_type != shape.machine:
        raise ValueError(f"{where}: TPU {tpu.version} {topology} runs on {shape.machine} ({per_host} chips per "
                         f"host), not machine_type={profile.machine_type!r}")
    machine = MACHINES[shape.machine]
    if not _fits(profile, machine):
        cpu, mem = pod_capacity(machine)
        raise ValueError(f"{where}: {machine.name} gives a pod at most {math.floor(cpu)} vCPUs and "
                         f"{math.floor(mem)} GB; asked cpu={profile.cpu:g}, memory_gb={profile.memory_gb:g}")
    vertex = None
    if target == "vertex":
        if not tpu.vertex:
            raise ValueError(f"{where}: Vertex AI has no TPU {tpu.version} accelerator (aiplatform's "
                             "AcceleratorType lacks it); use --target kubeflow on a GKE cluster, or a v5e profile")
        if topology not in tpu.vertex_topologies:
            raise ValueError(f"{where}: Vertex AI trains on TPU {tpu.version} slices "
                             f"{', '.join(tpu.vertex_topologies)}, not {topology}; use --target kubeflow for it")
        if tpu.vertex_machine:  # the TPU node API: Vertex counts TensorCores
            vertex = VertexPool(tpu.vertex_machine, tpu.vertex, chips * tpu.tensorcores_per_chip,
                                "" if tpu.version == "v3" else topology, 1)
        else:  # a TPU VM machine type: the machine names the accelerator, the topology the slice
            vertex = VertexPool(shape.machine, "", 0, topology, 1)
    label = tpu.gke_single_host if hosts == 1 else tpu.gke_multi_host
    cpu, memory = _pod_limits(profile, machine)
    selectors, taints = _selectors(profile, {"cloud.google.com/gke-tpu-accelerator": label,
                                             "cloud.google.com/gke-tpu-topology": topology}, [TPU_TAINT])
    gke = GkePod(hosts, "google.com/tpu", per_host, cpu, memory, selectors, taints)
    replicas = chips * tpu.tf_devices_per_chip
    return ResolvedHardware(profile, target, machine, hosts, replicas, topology, chips, vertex, gke,
                            training_settings(profile, replicas=replicas))


# ---------------------------------------------------------------------------------------------
# Training settings a profile implies


@dataclass(frozen=True)
class BackendSettings:
    """The TrainConfig values a profile implies (see `backend_settings`)."""

    strategy: str
    precision: str
    jit_compile: bool
    batch_size_per_replica: int
    replicas: int
    cpu_logical_devices: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


#: Published 3DGAN training length (60 to 120 epochs); the accelerator profiles train the full model.
ACCELERATOR_EPOCHS = 60


def backend_settings(profile: HardwareProfile, replicas: int | None = None) -> BackendSettings:
    """Strategy, precision, XLA and per-replica batch for a profile (before its `training:`).

    CPU: the default strategy (multi_worker with several workers; mirrored over the logical
    devices of a CPU split by `count`), float32, no XLA (XLA's Conv3D is many times slower on
    CPU, and XLA cannot run one step over several CPU devices), batch 64. GPU: one_device / mirrored / multi_worker
    (NCCL), mixed_float16 with loss scaling, XLA, 64 per replica as the published GPU runs.
    TPU: TPUStrategy, mixed_bfloat16, XLA, 128 per core as the published TPU runs.
    """
    if profile.accelerator == "cpu":
        if profile.count > 1:
            return BackendSettings("mirrored", "float32", False, 64, replicas or profile.count, profile.count)
        return BackendSettings("multi_worker" if profile.workers > 1 else "default", "float32", False, 64,
                               replicas or profile.workers)
    if profile.accelerator == "gpu":
        count = profile.count or 1
        if profile.workers > 1:
            strategy = "multi_worker"
        else:
            strategy = "mirrored" if count > 1 else "one_device"
        return BackendSettings(strategy, "mixed_float16", True, 64, replicas or count * profile.workers)
    return BackendSettings("tpu", "mixed_bfloat16", True, 128, replicas or 1)


def training_settings(profile: HardwareProfile, replicas: int) -> dict[str, tuple[Any, str]]:
    """The DAG parameter defaults a profile implies: name -> (value, reason).

    The cpu profiles change nothing (the embedded demo stays the default). Accelerator profiles
    train the full model for ACCELERATOR_EPOCHS epochs with the backend's strategy, precision,
    XLA and batch. The profile's own `training:` entries win; `global_batch_size` becomes the
    per-replica batch and must divide by the replicas.
    """
    name = profile.name
    layer: dict[str, tuple[Any, str]] = {}
    settings = backend_settings(profile, replicas)
    if profile.accelerator != "cpu" or profile.workers > 1 or settings.cpu_logical_devices:
        layer["distribution_strategy"] = (settings.strategy, f"{name}: {replicas} replica(s)")
    if settings.cpu_logical_devices:
        layer["cpu_logical_devices"] = (settings.cpu_logical_devices,
                                        f"{name}: the CPU split into {settings.cpu_logical_devices} logical devices")
    if profile.accelerator != "cpu":
        kind = profile.accelerator.upper()
        layer.update({
            "preset": ("full", f"{name}: the published model on an accelerator"),
            "max_steps": (0, f"{name}: train by epochs, not the demo's step cap"),
            "epochs": (ACCELERATOR_EPOCHS, f"{name}: the published runs train 60 to 120 epochs"),
            "batch_size_per_replica": (settings.batch_size_per_replica,
                                       f"{name}: the published {kind} runs' per-replica batch"),
            "precision": (settings.precision, f"{name}: {kind} mixed precision"),
            "jit_compile": (settings.jit_compile, f"{name}: XLA pays off on {kind}"),
        })
    for key, value in profile.training.items():
        if key == "global_batch_size":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"hardware profile {name!r}: training.global_batch_size={value!r} must be an "
                                 "integer >= 1")
            if value % replicas:
                raise ValueError(f"hardware profile {name!r}: training.global_batch_size={value} is not "
                                 f"divisible by the {replicas} replicas")
            layer["batch_size_per_replica"] = (value // replicas, f"{name}: global batch {value} / {replicas} replicas")
        else:
            layer[key] = (value, f"{name}: the profile's training setting")
    return layer


# ---------------------------------------------------------------------------------------------
# Parameter values against the hardware


def check_params(resolved: ResolvedHardware, values: Mapping[str, Any]) -> None:
    """Checks training parameter values (the compiled defaults or a run's values) against the hardware.

    Raises:
        ValueError: a strategy the hardware cannot run, a precision it lacks, a TPU
            per-replica batch that is not a multiple of 8, a CPU split the profile does not make,
            or a hardware_profile record naming another profile.
    """
    profile = resolved.profile
    where = f"hardware profile {profile.name!r}"
    recorded = values.get("hardware_profile", "")
    if recorded and recorded != profile.name:
        raise ValueError(f"pipeline parameter hardware_profile={recorded!r}: this DAG trains on {where}; the "
                         f"parameter records it (give {profile.name!r} or leave it out; compile another YAML with "
                         "`caloforge compile --hardware NAME` for other hardware)")
    strategy = values.get("distribution_strategy", "auto")
    precision = values.get("precision", "float32")
    batch = values.get("batch_size_per_replica", 1)
    tpu = profile.accelerator == "tpu"
    allowed = {"auto"}
    if tpu:
        allowed |= {"tpu"}
    elif resolved.workers > 1:
        allowed |= {"multi_worker"}
    elif profile.accelerator == "gpu":
        allowed |= {"one_device", "default"} | ({"mirrored"} if resolved.replicas > 1 else set())
    elif resolved.replicas > 1:  # a CPU split into logical devices
        allowed |= {"mirrored"}
    else:
        allowed |= {"default", "one_device"}
    if strategy not in allowed:
        raise ValueError(f"pipeline parameter distribution_strategy={strategy!r} cannot run on {where} "
                         f"({resolved.replicas} replica(s) on {resolved.workers} worker(s)); use one of "
                         f"{', '.join(sorted(allowed))}")
    devices = values.get("cpu_logical_devices", 0)
    split = profile.count if profile.accelerator == "cpu" and profile.count > 1 else 0
    if max(devices, 1) != max(split, 1):
        what = (f"its CPU is split into {split} logical devices" if split else
                "only a cpu profile with count > 1 splits its CPU" if profile.accelerator != "cpu" else
                "its CPU is one device")
        raise ValueError(f"pipeline parameter cpu_logical_devices={devices} on {where}: {what}; give "
                         f"{split} or leave it out (a cpu profile with `count: N` splits it into N)")
    if tpu and precision == "mixed_float16":
        raise ValueError(f"pipeline parameter precision='mixed_float16' on {where}: TPUs compute in bfloat16; "
                         "use mixed_bfloat16 or float32")
    if profile.accelerator == "gpu" and precision == "mixed_bfloat16" and not profile.gpu().bfloat16:
        raise ValueError(f"pipeline parameter precision='mixed_bfloat16' on {where}: {profile.gpu().name} has no "
                         "bfloat16 support; use mixed_float16 or float32")
    if tpu and batch % 8:
        raise ValueError(f"pipeline parameter batch_size_per_replica={batch} on {where}: a TPU per-replica batch "
                         "must be a multiple of 8")


def describe_resolved(resolved: ResolvedHardware) -> dict[str, Any]:
    """A flat summary (for `caloforge hardware list` and the compiled YAML's description)."""
    vertex = resolved.vertex
    gke = resolved.gke
    return {
        "name": resolved.profile.name,
        "accelerator": resolved.profile.accelerator,
        "machine": resolved.machine.name,
        "vertex_machine": vertex.machine_type if vertex else "(pipeline task)",
        "vertex_accelerator": f"{vertex.accelerator_type} x{vertex.accelerator_count}" if vertex and vertex.accelerator_type else "",
        "tpu_topology": resolved.tpu_topology,
        "workers": resolved.workers,
        "replicas": resolved.replicas,
        "gke_per_pod": f"{gke.resource}: {gke.per_pod}" if gke.resource else f"cpu {gke.cpu}, {gke.memory}",
        "gke_label": next((v for k, v in gke.node_selector.items() if "accelerator" in k), ""),
    }
