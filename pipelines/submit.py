"""Submits a compiled caloforge DAG to Vertex AI Pipelines or to a Kubeflow Pipelines cluster, and follows it.

Both backends go through their stock clients (`google.cloud.aiplatform.PipelineJob`, `kfp.Client`);
this module adds what they leave to the caller: a check that the YAML was compiled for the
backend it is sent to, that every parameter exists in it, run labels (with the caloforge
version), a printable run id and console link, and `--wait` (state changes until the run ends).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import yaml

from pipelines.compiled import TARGET_PARAMETER, compiled_record
from pipelines.version import VERSION

TARGETS = ("vertex", "kubeflow")
#: Contract with the compiler (docs/CONTRACTS.md, "Compiled pipeline YAML"): the target a YAML was
#: compiled for is the default of the root pipeline parameter TARGET_PARAMETER (pipelines.compiled).
#: Also read: the `caloforge-compiled: {"target": ...}` JSON record at the end of the pipeline's
#: description (shown in the Vertex AI and Kubeflow UIs; pipelines.compiled).
VERSION_LABEL = "caloforge-version"
#: Label rules both backends accept: Vertex AI's (lowercase letters, digits, `_`, `-`; keys start
#: with a letter; at most 63 characters) within Kubernetes' (values start and end alphanumeric).
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^([a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?)?$")
MAX_LABELS = 64
#: Vertex AI experiment names (they become metadata context ids).
_VERTEX_EXPERIMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_VERTEX_JOB_NAME = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/pipelineJobs/(?P<job>[^/]+)$")


# --- the compiled YAML -------------------------------------------------------------------------

@dataclass
class CompiledPipeline:
    """A compiled KFP v2 YAML: the pipeline spec and, on Kubeflow builds, its Kubernetes platform spec."""

    path: str
    spec: dict
    platform_spec: dict | None

    @property
    def root_parameters(self) -> dict[str, dict]:
        return ((self.spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}

    @property
    def target(self) -> str | None:
        value = (self.root_parameters.get(TARGET_PARAMETER) or {}).get("defaultValue")
        if isinstance(value, str) and value:
            return value
        value = (compiled_record(str((self.spec.get("pipelineInfo") or {}).get("description") or "")) or {}).get("target")
        return value if isinstance(value, str) and value else None

    @property
    def executors(self) -> list[str]:
        return sorted(((self.spec.get("deploymentSpec") or {}).get("executors") or {}).keys())


def load_compiled(yaml_path: str) -> CompiledPipeline:
    """Reads a compiled pipeline YAML (one document, or two with a platform spec).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not YAML, or not a KFP v2 pipeline spec (one line naming the file).
    """
    if not os.path.exists(yaml_path):
        raise FileNotFoundError(f"compiled pipeline {yaml_path!r} not found: run `caloforge compile` first")
    try:
        with open(yaml_path, encoding="utf-8") as f:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as err:
        raise ValueError(f"{yaml_path}: not a YAML file ({' '.join(str(err).split())[:160]})") from err
    if not documents or not isinstance(documents[0], dict) or "pipelineInfo" not in documents[0] \
            or "root" not in documents[0]:
        raise ValueError(f"{yaml_path}: not a compiled KFP pipeline (no pipelineInfo/root); write it with `caloforge compile`")
    platform = documents[1] if len(documents) > 1 and isinstance(documents[1], dict) else None
    return CompiledPipeline(yaml_path, documents[0], platform)


def compiled_target(yaml_path: str) -> str | None:
    """The target (`vertex` or `kubeflow`) a YAML was compiled for; None when it records none.

    Reads `root.inputDefinitions.parameters.compile_target.defaultValue`, else the description's
    `caloforge-compiled: {"target": ...}` record (docs/CONTRACTS.md §6).
    """
    return load_compiled(yaml_path).target


def check_target(compiled: CompiledPipeline, backend: str) -> str | None:
    """Refuses a YAML compiled for the other backend; returns a warning when it records none.

    Raises:
        ValueError: one line naming the file, the two targets and the command to run.
    """
    target = compiled.target
    if target is not None and target not in TARGETS:
        raise ValueError(f"{compiled.path}: unknown {TARGET_PARAMETER} {target!r} (expected one of {', '.join(TARGETS)})")
    if target is not None and target != backend:
        raise ValueError(f"{compiled.path} was compiled for {target}, not {backend}: "
                         f"compile it again with `caloforge compile --target {backend}`")
    if backend == "vertex" and compiled.platform_spec is not None:
        # aiplatform reads one YAML document; a Kubernetes platform spec means a Kubeflow build.
        raise ValueError(f"{compiled.path} carries a Kubernetes platform spec (a Kubeflow build), which Vertex AI "
                         f"cannot read: compile it again with `caloforge compile --target vertex`")
    if target is None:
        return (f"warning: {compiled.path} does not record the target it was compiled for "
                f"(an older caloforge?); submitting to {backend} unchecked")
    return None


def check_parameters(compiled: CompiledPipeline, parameters: dict[str, Any]) -> None:
    """Every submitted parameter must be an input of the YAML (else the service rejects it late)."""
    unknown = sorted(set(parameters) - set(compiled.root_parameters))
    if unknown:
        raise ValueError(f"{compiled.path} has no pipeline parameter {', '.join(unknown)} (compiled by another "
                         f"caloforge version?): compile it again with `caloforge compile`")


# --- labels ------------------------------------------------------------------------------------

def version_label_value(version: str = VERSION) -> str:
    """`0.1.0` -> `0-1-0`: label values allow no dots on Vertex AI."""
    return re.sub(r"[^a-z0-9_-]", "-", version.lower())


def parse_labels(text: str | None) -> dict[str, str]:
    """`--labels team=calo,purpose=bench` -> dict, each key and value checked.

    Raises:
        ValueError: one line naming the label and the rule it breaks.
    """
    labels: dict[str, str] = {}
    if not text:
        return labels
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--labels {item!r}: expected KEY=VALUE (comma separated)")
        key, value = key.strip(), value.strip()
        if not _LABEL_KEY.match(key):
            raise ValueError(f"--labels key {key!r}: must start with a lowercase letter and hold only lowercase "
                             f"letters, digits, '_' or '-' (at most 63 characters)")
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"--labels {key}={value!r}: values hold only lowercase letters, digits, '_' or '-', "
                             f"start and end with a letter or digit (at most 63 characters)")
        if key == VERSION_LABEL:
            raise ValueError(f"--labels {key}: set by caloforge itself (the version that submits the run)")
        if key in labels:
            raise ValueError(f"--labels {key}: given twice")
        labels[key] = value
    if len(labels) + 1 > MAX_LABELS:
        raise ValueError(f"--labels: {len(labels)} labels; at most {MAX_LABELS - 1} (one is {VERSION_LABEL})")
    return labels


def run_labels(user_labels: dict[str, str] | None = None) -> dict[str, str]:
    """The labels a run carries: the user's plus `caloforge-version`."""
    return {**(user_labels or {}), VERSION_LABEL: version_label_value()}


# --- a submitted run and following it ----------------------------------------------------------

@dataclass
class RunStatus:
    """One look at a run: its state name without the API's prefix, and whether it has ended."""

    state: str
    done: bool
    succeeded: bool
    error: str = ""


@dataclass
class SubmittedRun:
    """What a submission returns: an id and link to print, and a way to look at the run again."""

    backend: str
    run_id: str
    console_url: str
    poll: Callable[[], RunStatus] = field(repr=False)


def follow_run(run: SubmittedRun, poll_seconds: float = 30.0, report: Callable[[str], None] = print,
               clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
               max_failed_looks: int = 5) -> RunStatus:
    """Polls a run until it ends, reporting each change of state (with the time since following began).

    A look that fails (a dropped connection, a 5xx, an expired token) is reported and tried
    again: a training run lasts hours and one bad answer must not end the wait. After
    `max_failed_looks` failures in a row the last error propagates.

    Returns:
        The final status (`succeeded` tells whether the command should exit 0).
    """
    start = clock()
    last = None
    failed = 0
    while True:
        try:
            status = run.poll()
        except Exception as err:  # noqa: BLE001 - any client error; bounded by max_failed_looks
            failed += 1
            if failed >= max_failed_looks:
                raise
            detail = " ".join(str(err).split())[:200] or type(err).__name__
            report(f"[{clock() - start:7.1f} s] {run.run_id}: could not read its state ({detail}); trying again")
            sleep(poll_seconds)
            continue
        failed = 0
        if status.state != last:
            report(f"[{clock() - start:7.1f} s] {run.run_id}: {status.state}")
            last = status.state
        if status.done:
            return status
        sleep(poll_seconds)


# --- Vertex AI ---------------------------------------------------------------------------------

@dataclass
class VertexTarget:
    """Where and how a Vertex AI PipelineJob runs.

    Attributes:
        project: Google Cloud project id.
        region: Vertex AI region, e.g. `europe-west4` (TPUs and most GPUs are regional).
        pipeline_root: gs:// folder for artifacts; every stage's output lands below it.
        service_account: service account the job runs as (None: the project's default compute one).
        enable_caching: None keeps the compiled YAML's per-task choice (caching on unless a task
            turned it off); False turns it off for every task (`--no-cache`).
        labels: the user's labels; `caloforge-version` is added.
        experiment: Vertex AI experiment to associate the run with (None: none).
        api_endpoint: Vertex AI API endpoint (None: REGION-aiplatform.googleapis.com). A plain
            http:// endpoint (a local emulator or proxy) is spoken to over REST with no
            credentials: tokens are never sent in clear text.
    """

    project: str
    region: str
    pipeline_root: str
    service_account: str | None = None
    enable_caching: bool | None = None
    labels: dict[str, str] = field(default_factory=dict)
    experiment: str | None = None
    api_endpoint: str | None = None

    def validate(self) -> None:
        if not self.project:
            raise ValueError("Vertex AI submission needs --project")
        if not self.region:
            raise ValueError("Vertex AI submission needs --region")
        if not self.pipeline_root.startswith("gs://"):
            raise ValueError(f"--pipeline-root must be a gs:// folder for Vertex AI, got {self.pipeline_root!r}")
        if self.experiment is not None and not _VERTEX_EXPERIMENT.match(self.experiment):
            raise ValueError(f"--experiment {self.experiment!r}: Vertex AI experiment names hold lowercase letters, "
                             f"digits and '-', starting with a letter or digit (at most 128 characters)")

    @property
    def plain_http(self) -> bool:
        return bool(self.api_endpoint) and self.api_endpoint.startswith("http://")


@contextlib.contextmanager
def _vertex_settings(target: VertexTarget) -> Iterator[None]:
    """aiplatform keeps its endpoint in process-wide settings: set ours, then put the old ones back,
    so one submission (or a test) never redirects the next one."""
    from google.cloud import aiplatform
    from google.cloud.aiplatform import initializer

    _quiet_vertex_logs()
    saved = dict(initializer.global_config.__dict__)
    try:
        if target.api_endpoint:
            aiplatform.init(api_endpoint=target.api_endpoint, api_transport="rest")
        yield
    finally:
        initializer.global_config.__dict__.clear()
        initializer.global_config.__dict__.update(saved)


def _quiet_vertex_logs() -> None:
    """aiplatform sets INFO on each of its loggers (its own "View Pipeline Job" lines, which the
    command prints once itself): warnings only, unless --verbose."""
    from data_prep.console import is_verbose

    if is_verbose():
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("google.cloud.aiplatform"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _vertex_credentials(target: VertexTarget, credentials):
    if credentials is None and target.plain_http:
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    return credentials


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
        credentials: google.auth credentials; None uses Application Default Credentials (or none
            for a plain http:// endpoint).

    Raises:
        FileNotFoundError: the compiled pipeline YAML does not exist.
        ValueError: the target is incomplete, or the YAML was compiled for Kubeflow.
    """
    compiled = load_compiled(template_path)
    target.validate()
    check_target(compiled, "vertex")
    check_parameters(compiled, parameters)
    from google.cloud import aiplatform

    with _vertex_settings(target):
        return aiplatform.PipelineJob(
            display_name=display_name,
            template_path=template_path,
            pipeline_root=target.pipeline_root,
            parameter_values=parameters,
            enable_caching=target.enable_caching,
            labels=run_labels(target.labels),
            project=target.project,
            location=target.region,
            credentials=_vertex_credentials(target, credentials),
        )


_VERTEX_ENDED = {"SUCCEEDED": True, "FAILED": False, "CANCELLED": False}


def vertex_console_url(resource_name: str) -> str:
    """The Cloud console page of a PipelineJob resource name."""
    match = _VERTEX_JOB_NAME.match(resource_name)
    if not match:
        return ""
    return (f"https://console.cloud.google.com/vertex-ai/locations/{match['location']}/pipelines/runs/"
            f"{match['job']}?project={match['project']}")


def submit_vertex(template_path: str, target: VertexTarget, parameters: dict[str, Any], credentials=None) -> SubmittedRun:
    """Submits to Vertex AI (needs Google credentials, or a plain-http endpoint) and returns the run."""
    job = build_vertex_job(template_path, target, parameters, credentials=credentials)
    with _vertex_settings(target):
        job.submit(service_account=target.service_account, experiment=target.experiment)

    def poll() -> RunStatus:
        with _vertex_settings(target):
            state = job.state.name.removeprefix("PIPELINE_STATE_")
            error = job.gca_resource.error.message if state in _VERTEX_ENDED else ""
        return RunStatus(state, state in _VERTEX_ENDED, _VERTEX_ENDED.get(state, False), error)

    return SubmittedRun("vertex", job.job_id, vertex_console_url(job.resource_name), poll)


# --- Kubeflow Pipelines ------------------------------------------------------------------------

@dataclass
class KubeflowTarget:
    """A Kubeflow Pipelines API endpoint and how runs go there.

    Attributes:
        host: KFP API endpoint, e.g. http://localhost:8080 through `kubectl port-forward`
            (default: $KF_PIPELINES_ENDPOINT).
        namespace: Kubernetes namespace of a multi-user deployment (None: single-user).
        experiment: KFP experiment the run is filed under (created if missing).
        pipeline_root: artifact root (None: the YAML's or the cluster's default).
        service_account: Kubernetes service account the run's pods use (None: the cluster default).
        enable_caching: as VertexTarget.enable_caching.
        labels: the user's labels; `caloforge-version` is added. KFP runs have no labels of their
            own, so they become Kubernetes labels on every pod of the run (what GKE cost
            allocation reads).
    """

    host: str
    namespace: str | None = None
    experiment: str = "caloforge"
    pipeline_root: str | None = None
    service_account: str | None = None
    enable_caching: bool | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.host:
            raise ValueError("Kubeflow submission needs --host, the KFP API endpoint (or $KF_PIPELINES_ENDPOINT)")
        if not re.match(r"^https?://", self.host):
            raise ValueError(f"--host {self.host!r}: give the scheme, e.g. http://localhost:8080")


def with_pod_labels(compiled: CompiledPipeline, labels: dict[str, str]) -> dict:
    """The platform spec with `labels` on every executor's pods (kfp-kubernetes' podMetadata),
    existing labels of the YAML kept unless a submitted one has the same key."""
    platform = dict(compiled.platform_spec or {})
    kubernetes = platform.setdefault("platforms", {}).setdefault("kubernetes", {})
    executors = kubernetes.setdefault("deploymentSpec", {}).setdefault("executors", {})
    for name in compiled.executors:
        config = executors.setdefault(name, {})
        pod = config.setdefault("podMetadata", {})
        pod["labels"] = {**(pod.get("labels") or {}), **labels}
    return platform


_KFP_ENDED = {"SUCCEEDED": True, "FAILED": False, "CANCELED": False, "SKIPPED": False}


def submit_kubeflow(
    template_path: str,
    host: str,
    parameters: dict[str, Any],
    experiment: str = "caloforge",
    namespace: str | None = None,
    pipeline_root: str | None = None,
    target: KubeflowTarget | None = None,
) -> SubmittedRun:
    """Submits to a Kubeflow Pipelines endpoint (e.g. http://localhost:8080 via port-forward).

    Args:
        target: everything at once (host, experiment, ... above are kept for older callers).

    Returns:
        The run (its `run_id`, console link and poll).
    """
    target = target or KubeflowTarget(host or os.environ.get("KF_PIPELINES_ENDPOINT", ""), namespace,
                                      experiment, pipeline_root)
    compiled = load_compiled(template_path)
    target.validate()
    check_target(compiled, "kubeflow")
    check_parameters(compiled, parameters)
    import kfp

    platform = with_pod_labels(compiled, run_labels(target.labels))
    with tempfile.TemporaryDirectory(prefix="caloforge-submit-") as folder:
        # The YAML as compiled plus the run's pod labels; the user's file is left unchanged.
        labelled = os.path.join(folder, os.path.basename(template_path).rsplit(".", 1)[0] + ".yaml")
        with open(labelled, "w", encoding="utf-8") as f:
            yaml.safe_dump_all([compiled.spec, platform], f, sort_keys=False)
        # kfp prints its own "Experiment/Run details" links and warns about server versions: the
        # caller prints the run's id and link once.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=target.host, namespace=target.namespace)
            result = client.create_run_from_pipeline_package(
                labelled,
                arguments=parameters,
                run_name=f"caloforge-{VERSION} {time.strftime('%Y-%m-%d %H:%M:%S')}",
                experiment_name=target.experiment,
                namespace=target.namespace,
                pipeline_root=target.pipeline_root,
                enable_caching=target.enable_caching,
                service_account=target.service_account,
            )
    run_id = result.run_id

    def poll() -> RunStatus:
        run = client.get_run(run_id)
        state = str(run.state or "PENDING")
        error = (getattr(run.error, "message", "") or "") if run.error else ""
        return RunStatus(state, state in _KFP_ENDED, _KFP_ENDED.get(state, False), error)

    ui_host = os.environ.get("KF_PIPELINES_UI_ENDPOINT") or target.host
    return SubmittedRun("kubeflow", run_id, f"{ui_host.rstrip('/')}/#/runs/details/{run_id}", poll)
