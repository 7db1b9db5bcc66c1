"""Strategy factory: one flat mapping from a strategy name to a tf.distribute strategy."""

from __future__ import annotations

import logging

import tensorflow as tf

from trainer.cluster import export_tf_config, tf_config_from_environment
from trainer.config import STRATEGIES

log = logging.getLogger(__name__)


class HardwareNotFoundError(RuntimeError):
    """The strategy asked for hardware (GPUs, a TPU, a worker cluster) that is not there."""


def cluster_workers() -> int:
    """Number of workers (chief included) in this process's cluster: TF_CONFIG, or what Vertex
    AI's CLUSTER_SPEC or a caloforge JobSet describe (trainer.cluster); 0 when there is none."""
    cluster = tf_config_from_environment().get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    """Resolve, connect to and initialise a TPU; TPUStrategy over its cores.

    Raises:
        HardwareNotFoundError: when the resolver finds no TPU of that name (never tries to
        connect to an address that was not resolved).
    """
    name = tpu or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
    except (tf.errors.NotFoundError, ValueError, RuntimeError) as err:
        raise HardwareNotFoundError(
            f"strategy 'tpu' asked for TPU {name!r} but none was found: "
            f"{type(err).__name__}: {err}") from None
    if name != "local":  # a remote TPU VM / pod slice: connect the client to it
        tf.config.experimental_connect_to_cluster(resolver)
    try:
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
        # Seen on CPU-only hosts: the 'local' resolver succeeds, then initialisation finds
        # no TPU kernels ("TPUs not found in the cluster").
        raise HardwareNotFoundError(
            f"strategy 'tpu' asked for TPU {name!r} but none could be initialised: "
            f"{type(err).__name__}: {str(err).splitlines()[0]}") from None
    strategy = tf.distribute.TPUStrategy(resolver)
    log.info("TPU %s: %d cores", name, strategy.num_replicas_in_sync)
    return strategy


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """Build the tf.distribute strategy called `name`.

    auto: a TF_CONFIG with several workers -> multi_worker; else a TPU if one resolves; else
    several GPUs -> mirrored, one GPU -> one_device, else the default (CPU) strategy.
    mirrored runs over the local GPUs, or over several logical CPU devices when there is no
    GPU (tests). multi_worker reads TF_CONFIG, set from Vertex AI's CLUSTER_SPEC or a caloforge
    JobSet's worker list when unset (trainer.cluster); collectives use NCCL on GPU and ring on CPU.

    Args:
        name: One of trainer.config.STRATEGIES (case-insensitive).
        tpu: TPU name for 'tpu'/'auto' ('' or 'local' for a TPU VM's own chips).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
        HardwareNotFoundError: when the named strategy's hardware is absent.
    """
    key = (name or "").lower()
    if key not in STRATEGIES:
        raise ValueError(f"strategy={name!r} is not one of {', '.join(STRATEGIES)}")
    if key in ("auto", "multi_worker"):
        export_tf_config()  # TensorFlow's resolver reads TF_CONFIG only
    # Physical devices only: listing logical devices would initialise the runtime, after
    # which MultiWorkerMirroredStrategy can no longer configure its collectives.
    gpus = tf.config.list_physical_devices("GPU")
    if key == "auto":
        if cluster_workers() > 1:
            key = "multi_worker"
        else:
            try:
                return _tpu_strategy(tpu)
            except HardwareNotFoundError:
                pass
            key = "mirrored" if len(gpus) > 1 else "one_device" if gpus else "default"
        log.info("strategy auto -> %s", key)
    if key == "default":
        return tf.distribute.get_strategy()
    if key == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if key == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()  # every local GPU
        cpus = tf.config.list_logical_devices("CPU")
        if len(cpus) < 2:
            raise HardwareNotFoundError(
                "strategy 'mirrored' needs GPUs or several logical CPU devices; found no GPU and "
                f"{len(cpus)} CPU device(s)")
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    if key == "multi_worker":
        if cluster_workers() < 1:
            raise HardwareNotFoundError(
                "strategy 'multi_worker' needs TF_CONFIG describing the worker cluster "
                "(TF_CONFIG is unset or lists no workers; nor is CLUSTER_SPEC or CALOFORGE_WORKER_HOSTS set)")
        impl = (tf.distribute.experimental.CommunicationImplementation.NCCL if gpus
                else tf.distribute.experimental.CommunicationImplementation.RING)
        options = tf.distribute.experimental.CommunicationOptions(implementation=impl)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return _tpu_strategy(tpu)


def task_info(strategy: tf.distribute.Strategy) -> tuple[str, int, bool]:
    """(task type, task id, is chief) of this process; single-process strategies are chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "worker", 0, True
    task_type, task_id = resolver.task_type, resolver.task_id
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                     and "chief" not in resolver.cluster_spec().as_dict())
    return task_type or "worker", int(task_id or 0), chief


def device_kind(strategy: tf.distribute.Strategy) -> str:
    """A short label of the hardware the strategy runs on (for summary.json)."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return f"gpu:{details.get('device_name', 'unknown')}"
    return "cpu"
