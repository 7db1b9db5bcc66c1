"""Strategy factory: one flat mapping from a strategy name to a tf.distribute strategy."""

from __future__ import annotations

import glob
import logging
import os
import socket
import threading
import urllib.request
from typing import Callable

import tensorflow as tf

from trainer.cluster import export_tf_config, tf_config_from_environment
from trainer.config import STRATEGIES

log = logging.getLogger(__name__)


class HardwareNotFoundError(RuntimeError, ValueError):
    """The strategy asked for hardware (GPUs, a TPU, a worker cluster) that is not there.

    Also a ValueError: asking for absent hardware is a user's choice to correct, which the CLI
    reports in one line with exit code 2 (pipelines.cli.USER_ERRORS), not as a traceback.
    """


def cluster_workers() -> int:
    """Number of workers (chief included) in this process's cluster: TF_CONFIG, or what Vertex
    AI's CLUSTER_SPEC or a caloforge JobSet describe (trainer.cluster); 0 when there is none."""
    cluster = tf_config_from_environment().get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def _run_bounded(fn: Callable[[], object], timeout: float) -> object:
    """fn() in a daemon thread; its result, its exception, or TimeoutError after `timeout` s.

    DNS lookups and socket connects take no reliable timeout of their own (getaddrinfo has
    none); a daemon thread left behind does not keep the process alive.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller below
            box["error"] = err

    thread = threading.Thread(target=target, name="strategy-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


# The client connection preface of HTTP/2 (RFC 9113 section 3.4) and an empty SETTINGS frame.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x04


def check_grpc_endpoint(address: str, timeout: float) -> None:
    """Make sure `address` (grpc://HOST:PORT or HOST:PORT) answers as a gRPC server does.

    TensorFlow's connect_to_cluster + initialize_tpu_system wait forever on an address that
    is down, filtered, or not a gRPC server. This opens a TCP connection and sends the HTTP/2
    client preface: a gRPC server answers with a SETTINGS frame at once.

    Raises:
        HardwareNotFoundError: one line naming the address and what failed, after at most
            about `timeout` seconds.
    """
    hostport = address[len("grpc://"):] if address.startswith("grpc://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise HardwareNotFoundError(f"TPU address {address!r} is not grpc://HOST:PORT")

    def probe() -> bytes:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_PREFACE)
            header = b""
            while len(header) < 9:
                chunk = conn.recv(9 - len(header))
                if not chunk:
                    break
                header += chunk
            return header

    try:
        header = _run_bounded(probe, timeout)
    except (TimeoutError, socket.timeout):
        raise HardwareNotFoundError(
            f"TPU address {address} did not answer as a gRPC server within {timeout:g} s "
            "(down, filtered, or not a TPU worker; see --tpu-connect-timeout)") from None
    except OSError as err:
        raise HardwareNotFoundError(
            f"TPU address {address} cannot be reached: {err.strerror or err}") from None
    if len(header) < 9 or header[3] != _HTTP2_SETTINGS:
        raise HardwareNotFoundError(
            f"TPU address {address} accepted a connection but does not speak gRPC "
            f"(answered {header[:9]!r})")


def metadata_server() -> str:
    """host[:port] of the Google Cloud metadata server, as TensorFlow's TPU client finds it."""
    return (os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_IP")
            or "metadata.google.internal")


def on_google_cloud(timeout: float = 3.0) -> bool:
    """True when the Google Cloud metadata server answers within `timeout` seconds.

    TPUClusterResolver resolves a TPU *name* through that server with no timeout; off Google
    Cloud it fails only after about 90 s of retries (URLError).
    """
    request = urllib.request.Request(f"http://{metadata_server()}/computeMetadata/v1/project/project-id",
                                     headers={"Metadata-Flavor": "Google"})

    def probe() -> bool:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.headers.get("Metadata-Flavor") == "Google"

    try:
        return bool(_run_bounded(probe, timeout))
    except (TimeoutError, OSError, ValueError):
        return False


def tpu_hinted(tpu: str = "") -> bool:
    """Whether this process has any sign of a TPU: a TPU address or name asked for, the
    variables Cloud TPU VMs and GKE set, or TPU device files. `auto` only tries a TPU then,
    so a CPU or GPU machine never starts TensorFlow's TPU initialisation."""
    if tpu:
        return True
    if any(os.environ.get(v) for v in TPU_ENV_HINTS):
        return True
    return bool(glob.glob("/dev/accel*"))


# Set on Cloud TPU VMs / GKE TPU nodes (and read by TensorFlow's TPU client).
TPU_ENV_HINTS = ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG",
                  "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID", "TPU_WORKER_HOSTNAMES")


def _tpu_strategy(tpu: str, connect_timeout: float = 60.0) -> tf.distribute.Strategy:
    """Resolve, connect to and initialise a TPU; TPUStrategy over its cores.

    'local' (or '') is this TPU VM's own chips; grpc://HOST:PORT a TPU worker, checked to
    answer gRPC within connect_timeout before TensorFlow connects (it would wait forever);
    any other value a TPU name, which TensorFlow resolves through the Google Cloud metadata
    server and the TPU API, so it is refused at once off Google Cloud.

    Raises:
        HardwareNotFoundError: one line saying which TPU was asked for and what failed.
    """
    name = tpu or "local"
    if name.startswith("grpc://"):
        check_grpc_endpoint(name, connect_timeout)
    elif name != "local" and not on_google_cloud(min(connect_timeout, 3.0)):
        raise HardwareNotFoundError(
            f"strategy 'tpu' asked for TPU {name!r} by name, which only resolves on Google Cloud "
            f"(metadata server {metadata_server()} did not answer); give --tpu grpc://HOST:8470 "
            "or run on a Cloud TPU VM / GKE TPU node")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
    except (tf.errors.NotFoundError, ValueError, RuntimeError, OSError) as err:
        raise HardwareNotFoundError(
            f"strategy 'tpu' asked for TPU {name!r} but none was found: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
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


def split_cpu(devices: int) -> None:
    """Split the host CPU into `devices` logical devices (TrainConfig.cpu_logical_devices).

    TensorFlow takes the split only before it initialises its devices, so a process that has
    already started them (it listed logical devices, built a tensor) keeps what it has: that is
    accepted when it already is this split, and refused otherwise. 0 or 1 leaves the CPU whole.

    Raises:
        HardwareNotFoundError: the devices were set up before, otherwise.
    """
    if devices < 2:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        current = tf.config.get_logical_device_configuration(cpu) or []
        if len(current) != devices:
            raise HardwareNotFoundError(
                f"cpu_logical_devices={devices}: TensorFlow already initialised this process's devices "
                f"({max(len(current), 1)} CPU device(s)); split the CPU before anything else uses TensorFlow "
                "(a fresh process, as `caloforge train` is)") from None
    log.info("CPU split into %d logical devices", devices)


def make_strategy(name: str, tpu: str = "", connect_timeout: float = 60.0,
                  cpu_devices: int = 0) -> tf.distribute.Strategy:
    """Build the tf.distribute strategy called `name`.

    auto: a TF_CONFIG with several workers -> multi_worker; else, where there is a sign of a
    TPU (tpu_hinted), a TPU if one resolves; else several GPUs -> mirrored, one GPU ->
    one_device, a CPU split into several logical devices (split_cpu) -> mirrored, else the
    default (CPU) strategy.
    mirrored runs over the local GPUs, or over several logical CPU devices when there is no
    GPU (tests). multi_worker reads TF_CONFIG, set from Vertex AI's CLUSTER_SPEC or a caloforge
    JobSet's worker list when unset (trainer.cluster); collectives use NCCL on GPU and ring on CPU.

    Args:
        name: One of trainer.config.STRATEGIES (case-insensitive).
        tpu: TPU for 'tpu'/'auto': '' or 'local' (a TPU VM's own chips), grpc://HOST:PORT,
            or a Cloud TPU name (resolved on Google Cloud only).
        connect_timeout: Seconds a grpc:// TPU address may take to answer.
        cpu_devices: Logical CPU devices split_cpu made (auto picks mirrored over them).

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
            if tpu_hinted(tpu):
                try:
                    return _tpu_strategy(tpu, connect_timeout)
                except HardwareNotFoundError as err:
                    log.warning("strategy auto: no TPU (%s)", err)
            key = ("mirrored" if len(gpus) > 1 or (not gpus and cpu_devices > 1)
                   else "one_device" if gpus else "default")
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
    return _tpu_strategy(tpu, connect_timeout)


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
