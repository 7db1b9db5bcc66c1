"""The benchmark's fingerprint: what trained (from the trainer's config.json, written on the
training machine) and what collected (this machine): devices and counts, strategy, precision,
XLA, batch sizes, replicas, library versions, git commit."""

from __future__ import annotations

from typing import Any


def fingerprint(include_tf_devices: bool = True) -> dict:
    """Hardware and software of the machine running the collector (the trainer's own machine is
    in the `fingerprint.trainer` part, from its config.json; in a pipeline both usually differ)."""
    from importlib import metadata

    from data_prep.provenance import git_commit, host_info, library_versions

    info: dict[str, Any] = dict(host_info())
    versions = library_versions()
    try:
        versions["caloforge"] = metadata.version("caloforge")
    except metadata.PackageNotFoundError:
        versions["caloforge"] = "absent"
    for dist in ("tensorflow", "keras", "kfp", "apache-beam", "numpy", "h5py"):
        versions.setdefault(dist, "absent")
    info["versions"] = versions
    info["git_commit"] = git_commit()
    if include_tf_devices:
        try:
            import tensorflow as tf

            devices = tf.config.list_physical_devices()
            info["tf_devices"] = [f"{d.device_type}:{d.name}" for d in devices]
            gpus = []
            for d in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(d)
                gpus.append(details.get("device_name", d.name))
            info["gpu_names"] = gpus
        except ImportError:
            info["tf_devices"], info["gpu_names"] = None, None
    return info


def device_summary(device_kind: str | None, replicas: int, trainer_fp: dict) -> str:
    """A short label of the training hardware: '8 x NVIDIA A100-SXM4-40GB', 'TPU (8 replicas)',
    '1 x CPU Intel(R) Xeon(R) ...'."""
    gpus = trainer_fp.get("gpu_names") or []
    if gpus:
        names = sorted(set(gpus))
        return f"{len(gpus)} x {' + '.join(names)}" + (f" ({replicas} replicas)" if replicas != len(gpus) else "")
    kind = (device_kind or "unknown").split(":")[0]
    if kind == "tpu":
        return f"TPU ({replicas} replicas)"
    if kind == "cpu":
        model = (trainer_fp.get("host") or {}).get("cpu_model")
        return f"CPU{' ' + model if model else ''} ({replicas} replica{'s' if replicas != 1 else ''})"
    return f"{kind} ({replicas} replicas)"


def trainer_fingerprint(config_doc: dict, summary: dict, identity: dict) -> dict:
    """The training side of the fingerprint, from the trainer's config.json and summary.json."""
    train_config = config_doc.get("train_config") or {}
    derived = config_doc.get("derived") or {}
    fp = derived.get("fingerprint") or {}
    replicas = int(derived.get("replicas") or summary.get("replicas") or identity["replicas"])
    device_kind = derived.get("device_kind") or summary.get("device_kind")
    libraries = fp.get("libraries") or config_doc.get("versions") or {}
    return {
        "source": "config.json" if config_doc else "summary.json only (no config.json)",
        "device_kind": device_kind,
        "device_summary": device_summary(device_kind, replicas, fp),
        "physical_devices": fp.get("physical_devices"),
        "gpu_names": fp.get("gpu_names"),
        "replica_devices": fp.get("replica_devices"),
        "host": fp.get("host"),
        "replicas": replicas,
        "strategy": train_config.get("strategy", summary.get("strategy")),
        "strategy_class": derived.get("strategy_class") or (summary.get("extra") or {}).get("strategy_class"),
        "precision": train_config.get("precision", (summary.get("extra") or {}).get("precision")),
        "xla": train_config.get("jit_compile"),
        "loop": train_config.get("loop"),
        "layers": train_config.get("layers"),
        "steps_per_call": train_config.get("steps_per_call"),
        "batch_size_per_replica": train_config.get("batch_size_per_replica"),
        "global_batch": identity["global_batch"],
        "seed": train_config.get("seed"),
        "libraries": {k: libraries.get(k) for k in ("python", "tensorflow", "tensorflow-cpu", "keras", "apache-beam",
                                                      "kfp", "numpy") if libraries.get(k)},
        "git_commit": fp.get("git_commit"),
    }
