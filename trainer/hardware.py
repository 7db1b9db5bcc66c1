"""The one map from a hardware profile to backend settings and cluster resource names (no TF import).

The trainer reads `backend_settings` for its defaults; the pipeline compiler reads
`kfp_resources` for the training task's requests. Keeping both here means a GPU or TPU type
is spelled in exactly one file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

ACCELERATORS = ("cpu", "gpu", "tpu")
TARGETS = ("vertex", "kubeflow")


@dataclass(frozen=True)
class GpuType:
    gke_label: str  # value of the node label cloud.google.com/gke-accelerator
    vertex: str  # Vertex AI accelerator_type
    precision: str


@dataclass(frozen=True)
class TpuType:
    gke_label: str  # value of cloud.google.com/gke-tpu-accelerator
    vertex: str  # Vertex AI accelerator_type
    cores_per_chip: int  # TF devices per chip (v2/v3 expose 2 TensorCores, later chips 1)
    default_topology: str


GPU_TYPES: dict[str, GpuType] = {
    "nvidia-tesla-t4": GpuType("nvidia-tesla-t4", "NVIDIA_TESLA_T4", "mixed_float16"),
    "nvidia-tesla-v100": GpuType("nvidia-tesla-v100", "NVIDIA_TESLA_V100", "mixed_float16"),
    "nvidia-l4": GpuType("nvidia-l4", "NVIDIA_L4", "mixed_float16"),
    "nvidia-tesla-a100": GpuType("nvidia-tesla-a100", "NVIDIA_TESLA_A100", "mixed_float16"),
    "nvidia-a100-80gb": GpuType("nvidia-a100-80gb", "NVIDIA_A100_80GB", "mixed_float16"),
    "nvidia-h100-80gb": GpuType("nvidia-h100-80gb", "NVIDIA_H100_80GB", "mixed_float16"),
}
GPU_ALIASES = {"t4": "nvidia-tesla-t4", "v100": "nvidia-tesla-v100", "l4": "nvidia-l4",
               "a100": "nvidia-tesla-a100", "nvidia-a100": "nvidia-tesla-a100",
               "a100-80gb": "nvidia-a100-80gb", "h100": "nvidia-h100-80gb",
               "nvidia-h100": "nvidia-h100-80gb"}
DEFAULT_GPU = "nvidia-tesla-a100"

TPU_TYPES: dict[str, TpuType] = {
    "v2": TpuType("tpu-v2", "TPU_V2", 2, "2x2"),
    "v3": TpuType("tpu-v3", "TPU_V3", 2, "2x2"),
    "v4": TpuType("tpu-v4-podslice", "TPU_V4_POD", 1, "2x2x1"),
    "v5e": TpuType("tpu-v5-lite-podslice", "TPU_V5_LITEPOD", 1, "2x4"),
    "v5p": TpuType("tpu-v5p-slice", "TPU_V5P", 1, "2x2x1"),
}
DEFAULT_TPU = "v3"


@dataclass(frozen=True)
class HardwareProfile:
    """What a training run asks for.

    Attributes:
        accelerator: cpu | gpu | tpu.
        count: GPUs per worker, or TPU devices as Vertex counts them (cores on v2/v3, chips
            later); 0 means the default (1 GPU, or the whole default TPU topology).
        gpu_type: GKE label such as 'nvidia-tesla-a100' or an alias ('a100'); '' = A100.
        tpu_version: v2 | v3 | v4 | v5e | v5p; '' = v3.
        tpu_topology: TPU slice topology such as '2x2'; '' = the version's default.
        workers: Worker machines; > 1 selects multi-worker training (CPU or GPU).
    """

    accelerator: str = "cpu"
    count: int = 0
    gpu_type: str = ""
    tpu_version: str = ""
    tpu_topology: str = ""
    workers: int = 1

    def __post_init__(self) -> None:
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"hardware accelerator={self.accelerator!r} is not one of "
                             f"{', '.join(ACCELERATORS)}")
        if self.count < 0 or self.workers < 1:
            raise ValueError(f"hardware count={self.count} must be >= 0 and workers="
                             f"{self.workers} >= 1")
        if self.accelerator == "gpu":
            self.gpu()
        if self.accelerator == "tpu":
            self.tpu()
            if self.workers != 1:
                raise ValueError("accelerator=tpu: size a TPU slice with count/tpu_topology, "
                                 f"not workers={self.workers}")
            topo = self.topology()
            if not all(d.isdigit() and int(d) > 0 for d in topo.split("x")):
                raise ValueError(f"hardware tpu_topology={topo!r} must look like '2x2' or '2x2x1'")

    def gpu(self) -> GpuType:
        """The GPU type, resolving aliases. Raises ValueError naming the valid types."""
        key = (self.gpu_type or DEFAULT_GPU).lower()
        key = GPU_ALIASES.get(key, key)
        if key not in GPU_TYPES:
            raise ValueError(f"hardware gpu_type={self.gpu_type!r} is not one of "
                             f"{', '.join([*GPU_TYPES, *GPU_ALIASES])}")
        return GPU_TYPES[key]

    def tpu(self) -> TpuType:
        """The TPU version. Raises ValueError naming the valid versions."""
        key = (self.tpu_version or DEFAULT_TPU).lower()
        if key not in TPU_TYPES:
            raise ValueError(f"hardware tpu_version={self.tpu_version!r} is not one of "
                             f"{', '.join(TPU_TYPES)}")
        return TPU_TYPES[key]

    def topology(self) -> str:
        return self.tpu_topology or self.tpu().default_topology

    def devices(self) -> int:
        """Accelerator devices per worker (GPUs, or TPU cores/chips as TF sees them)."""
        if self.accelerator == "cpu":
            return 1
        if self.accelerator == "gpu":
            return self.count or 1
        if self.count:
            return self.count
        chips = math.prod(int(d) for d in self.topology().split("x"))
        return chips * self.tpu().cores_per_chip

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HardwareProfile":
        return cls(**data)


@dataclass(frozen=True)
class BackendSettings:
    """What the trainer derives from a HardwareProfile (TrainConfig field values)."""

    strategy: str
    precision: str
    jit_compile: bool
    batch_size_per_replica: int
    replicas: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class KfpResources:
    """Requests of the training task on a KFP backend ('' / 0 / {} = none).

    Attributes:
        cpu_limit, memory_limit: Container limits, KFP syntax ('8', '32G').
        accelerator_type: set_accelerator_type value: Vertex accelerator_type on Vertex
            ('NVIDIA_TESLA_A100', 'TPU_V3'), the resource name on Kubeflow ('nvidia.com/gpu').
        accelerator_count: set_accelerator_limit value.
        node_selector: Kubernetes node labels (Kubeflow target).
        env: Environment of the training container.
    """

    cpu_limit: str = ""
    memory_limit: str = ""
    accelerator_type: str = ""
    accelerator_count: int = 0
    node_selector: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)


def backend_settings(profile: HardwareProfile) -> BackendSettings:
    """Strategy, precision, XLA and batch defaults for a profile.

    CPU: default strategy (multi_worker with several workers), float32, no XLA, batch 64.
    GPU: one_device / mirrored / multi_worker (NCCL), mixed_float16 with loss scaling, XLA,
    64 per replica as in the published 3DGAN GPU runs.
    TPU: TPUStrategy, mixed_bfloat16, XLA, 128 per core as in the published TPU runs.
    """
    if profile.accelerator == "cpu":
        strategy = "multi_worker" if profile.workers > 1 else "default"
        return BackendSettings(strategy, "float32", False, 64, profile.workers)
    if profile.accelerator == "gpu":
        devices = profile.devices()
        if profile.workers > 1:
            strategy = "multi_worker"
        else:
            strategy = "mirrored" if devices > 1 else "one_device"
        return BackendSettings(strategy, profile.gpu().precision, True, 64,
                               devices * profile.workers)
    return BackendSettings("tpu", "mixed_bfloat16", True, 128, profile.devices())


def kfp_resources(profile: HardwareProfile, target: str = "vertex") -> KfpResources:
    """Resource requests of the training task for `target` (vertex | kubeflow).

    Raises:
        ValueError: for an unknown target.
    """
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is not one of {', '.join(TARGETS)}")
    env: dict = {}  # the trainer's strategy "auto" finds the devices itself
    if profile.accelerator == "cpu":
        return KfpResources(cpu_limit="4", memory_limit="16G", env=env)
    n = profile.devices()
    if profile.accelerator == "gpu":
        gpu = profile.gpu()
        if target == "vertex":
            return KfpResources(str(8 * n), f"{60 * n}G", gpu.vertex, n, {}, env)
        return KfpResources(str(8 * n), f"{60 * n}G", "nvidia.com/gpu", n,
                            {"cloud.google.com/gke-accelerator": gpu.gke_label}, env)
    tpu = profile.tpu()
    if target == "vertex":
        return KfpResources("", "", tpu.vertex, n, {}, env)
    chips = math.prod(int(d) for d in profile.topology().split("x"))
    return KfpResources("", "", "google.com/tpu", chips,
                        {"cloud.google.com/gke-tpu-accelerator": tpu.gke_label,
                         "cloud.google.com/gke-tpu-topology": profile.topology()}, env)
