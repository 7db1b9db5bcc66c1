"""Publish a blessed generator: copy it, its training config, metrics and report to a models folder.

The DAG publishes a model only when the evaluator's verdict is PASSED (TFX's Evaluator blesses,
then its Pusher pushes); this module is what the publish step runs, and it refuses a FAILED
evaluation itself too, so no caller can push an unblessed model by mistake.

Layout: ``<destination>/<name>/`` (name = ``model_name``, else the run id) holding

    generator/            the exported generator (generator.keras, generator_config.json)
    train_config.json     the trainer's config.json (TrainConfig, config hash, fingerprint)
    summary.json          the trainer's summary (steps, final losses), when present
    metrics.json          the evaluation (verdict, every metric beside its noise floor)
    report.html           the evaluation report (plots embedded)
    saved_model/          a TF SavedModel of the generator, only when registering on Vertex AI
    publication.json      provenance, written last: run id, git commits, config hash, verdict,
                          headline metrics with their floors, sha256 of every file

A folder with ``publication.json`` is a complete publication. Locally the files are staged in a
hidden sibling folder and renamed into place in one step; on gs:// (no rename) the objects are
written first and ``publication.json`` last, under a claim object (``_PUBLISHING``) naming the run.
Nothing is ever written over another model's files: a destination that holds files caloforge did
not publish, or another run's publication, is refused; publishing the same run again (a retried
step) replaces its own files.

Vertex AI Model Registry (optional, ``register_vertex_model``): the published gs:// folder's
``saved_model/`` is uploaded as a model version with a TensorFlow prediction container
(``aiplatform.Model.upload``); ``vertex_upload_arguments`` builds the call's arguments without
touching the network.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from data_prep import uri
from data_prep.strict_fields import reject_unknown_keys

LOG = logging.getLogger(__name__)

PUBLICATION_FILE = "publication.json"
CLAIM_FILE = "_PUBLISHING"
PUBLICATION_FORMAT = 1
SAVED_MODEL_DIR = "saved_model"
#: Vertex AI's prebuilt TensorFlow prediction image serving the SavedModel (CPU).
DEFAULT_SERVING_IMAGE = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-17:latest"
#: Headline figures recorded in publication.json beside their Monte Carlo noise floor.
HEADLINE = ("sampling_fraction_mre", "resolution_mre", "shape_mre", "moment_mre", "angle_mre",
            "selection_metric", "sep_power_mean", "classifier_auc", "classifier_voxel_auc",
            "fpd_x1e3", "kpd_x1e3")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Environment variables Vertex AI sets in a custom job (a pipeline task runs as one).
VERTEX_PROJECT_ENV = "CLOUD_ML_PROJECT_ID"
VERTEX_REGION_ENV = "CLOUD_ML_REGION"


class PublishRefused(FileExistsError):
    """The destination holds files this publication must not replace (a user mistake: exit 2)."""


@dataclass
class PublishConfig:
    """Where and how a blessed generator is published.

    Attributes:
        model_dir: Trainer output folder (local or gs://) holding generator/ and config.json.
        evaluation_dir: Evaluator output folder (local or gs://) holding metrics.json and report.html.
        destination: Folder or gs:// prefix the model is published under, in a sub-folder named
            by model_name or the run id (in the DAG, empty publishes into the publish step's own
            Model artifact under the pipeline root; a local run moves it to <run folder>/models/).
        model_name: Folder name of the published model (letters, digits, '.', '_', '-'); empty
            uses the run id, one folder per run. A name already published by another run is
            refused, never overwritten.
        run_id: The run publishing (the DAG passes the KFP job name); recorded in publication.json.
        register_vertex_model: Also upload the published model to Vertex AI Model Registry (a
            new version of the model of the same display name); needs a gs:// destination and
            Google Cloud credentials.
        vertex_project: Project of the Model Registry (empty: $CLOUD_ML_PROJECT_ID, which Vertex
            AI sets, else the credentials' project).
        vertex_location: Region of the Model Registry (empty: $CLOUD_ML_REGION, else us-central1).
        vertex_serving_image: Prediction container registered with the model (serves saved_model/).
    """

    model_dir: str = field(default="", metadata={"path": "input", "required": True})
    evaluation_dir: str = field(default="", metadata={"path": "input", "required": True})
    destination: str = field(default="", metadata={"path": "output"})
    model_name: str = ""
    run_id: str = ""
    register_vertex_model: bool = False
    vertex_project: str = ""
    vertex_location: str = ""
    vertex_serving_image: str = DEFAULT_SERVING_IMAGE

    def __post_init__(self) -> None:
        if self.model_name and not _NAME.match(self.model_name):
            raise ValueError(f"model_name={self.model_name!r}: use 1-128 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
        if self.register_vertex_model and self.destination and not uri.is_gcs(self.destination):
            raise ValueError(f"register_vertex_model needs a gs:// destination (Vertex AI reads the model from "
                             f"Cloud Storage), got {self.destination!r}")

    def name(self) -> str:
        """The published folder's name: model_name, else the run id made safe for a path."""
        if self.model_name:
            return self.model_name
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", self.run_id).strip("-.")[:128]
        if not safe:
            raise ValueError("nothing to name the published model by: give model_name or run_id")
        return safe

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PublishConfig":
        reject_unknown_keys(cls, d, "PublishConfig")
        return cls(**d)


# --------------------------------------------------------------------------- reading the inputs
def _read_json(path: str, what: str) -> dict:
    if not uri.exists(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    return json.loads(uri.read_text(path))


def failed_checks_line(metrics: dict) -> str:
    """`checks a, b failed` (or why there is no verdict) from a metrics.json payload."""
    verdict = metrics.get("verdict") or {}
    failed = list(verdict.get("failed") or [])
    if failed:
        return f"{len(failed)} of {len(verdict.get('checks') or [])} checks failed: {', '.join(failed)}"
    if not verdict.get("checks"):
        return "no check could be judged"
    return "no failed check"


def not_published_reason(metrics: dict) -> str:
    """One line for the index page and the DAG's `publication` output when nothing is published."""
    verdict = metrics.get("verdict") or {}
    if verdict.get("passed") is True:
        return "verdict PASSED but the model was not published"
    return f"not published: verdict FAILED ({failed_checks_line(metrics)})"


def headline_with_floor(metrics: dict) -> dict[str, dict[str, Any]]:
    """The headline figures of metrics.json, each beside its Monte Carlo noise floor."""
    summary = metrics.get("summary") or {}
    generated, floor = summary.get("generated") or {}, summary.get("noise_floor") or {}
    return {name: {"value": generated.get(name), "floor": floor.get(name)} for name in HEADLINE if name in generated}


def _source_files(config: PublishConfig) -> dict[str, str]:
    """Published relative path -> source URI, every required file checked to exist."""
    # The generator the verdict judged: the evaluator's copy (the best snapshot when it selected
    # one, eval/best_epoch.py), else the trainer's final export.
    generator_dir = uri.join(config.evaluation_dir, "generator")
    if not uri.list_files(generator_dir):
        generator_dir = uri.join(config.model_dir, "generator")
    generator_files = uri.list_files(generator_dir)
    if not generator_files:
        raise FileNotFoundError(f"no exported generator under {generator_dir}")
    files: dict[str, str] = {}
    root = generator_dir.rstrip("/") + ("/" if uri.is_gcs(generator_dir) else os.sep)
    for src in generator_files:
        rel = src[len(root):].replace(os.sep, "/")
        files[f"generator/{rel}"] = src
    required = {"train_config.json": uri.join(config.model_dir, "config.json"),
                "metrics.json": uri.join(config.evaluation_dir, "metrics.json"),
                "report.html": uri.join(config.evaluation_dir, "report.html")}
    for rel, src in required.items():
        if not uri.exists(src):
            raise FileNotFoundError(f"cannot publish: {src} does not exist")
        files[rel] = src
    summary = uri.join(config.model_dir, "summary.json")
    if uri.exists(summary):
        files["summary.json"] = summary
    return files


# --------------------------------------------------------------------------- the destination
def check_destination(dest: str, run_id: str) -> dict | None:
    """Refuse a destination holding anything but this run's own publication.

    Returns:
        The existing publication.json of this same run (a retried step republishes), or None
        when the destination is empty.

    Raises:
        PublishRefused: naming the destination and what it holds.
    """
    present = uri.list_files(dest)
    if not present:
        return None
    names = {p[len(dest.rstrip("/")) + 1:].replace(os.sep, "/") for p in present}
    if PUBLICATION_FILE in names:
        existing = json.loads(uri.read_text(uri.join(dest, PUBLICATION_FILE)))
        if existing.get("run_id") == run_id and run_id:
            return existing
        raise PublishRefused(
            f"{dest} already holds model {existing.get('name')!r} published by run {existing.get('run_id')!r}; "
            "it is left alone: choose another model_name (or leave it empty: one folder per run) or models_uri")
    if CLAIM_FILE in names:
        claim = json.loads(uri.read_text(uri.join(dest, CLAIM_FILE)))
        if claim.get("run_id") == run_id and run_id:
            return None  # our own interrupted attempt: carry on
        raise PublishRefused(
            f"{dest} is being published by run {claim.get('run_id')!r} (or that run died: its {CLAIM_FILE} "
            "is left there); choose another model_name or models_uri, or remove that folder yourself")
    shown = ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
    raise PublishRefused(f"{dest} holds files caloforge did not publish ({shown}); they are left alone: "
                         "choose another model_name or models_uri")


def _copy(src: str, dst: str) -> None:
    if not uri.is_gcs(src) and not uri.is_gcs(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
    elif not uri.is_gcs(src):
        uri.upload_file(src, dst)
    else:
        uri.write_bytes(dst, uri.read_bytes(src))


def _file_records(root: str, rels: list[str]) -> dict[str, dict[str, Any]]:
    return {rel: {"sha256": uri.sha256(uri.join(root, *rel.split("/"))), "bytes": uri.size(uri.join(root, *rel.split("/")))}
            for rel in sorted(rels)}


def _provenance(config: PublishConfig, name: str, dest: str, metrics: dict, train_config: dict) -> dict:
    from importlib import metadata

    from data_prep.provenance import git_commit, library_versions

    derived = train_config.get("derived") or {}
    fingerprint = derived.get("fingerprint") or {}
    verdict = metrics.get("verdict") or {}
    try:
        version = metadata.version("caloforge")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "format_version": PUBLICATION_FORMAT,
        "name": name,
        "destination": dest,
        "run_id": config.run_id,
        "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "verdict": {"passed": bool(verdict.get("passed")), "failed": list(verdict.get("failed") or []),
                    "checks": len(verdict.get("checks") or []), "thresholds": verdict.get("thresholds")},
        "metrics": headline_with_floor(metrics),
        "counts": metrics.get("counts"),
        "training": {
            "config_hash": derived.get("config_hash"),
            "git_commit": fingerprint.get("git_commit"),
            "preset": (train_config.get("train_config") or {}).get("preset"),
            "seed": train_config.get("seed"),
        },
        "publisher": {"git_commit": git_commit(), "caloforge": version, "versions": library_versions()},
        "sources": {"model_dir": config.model_dir, "evaluation_dir": config.evaluation_dir},
    }


def _stage_local(files: dict[str, str], staging: str) -> None:
    for rel, src in files.items():
        _copy(src, os.path.join(staging, *rel.split("/")))


def publish(config: PublishConfig) -> dict:
    """Copy a blessed generator with its config, metrics and report to ``<destination>/<name>/``.

    Returns:
        The publication record (publication.json's content).

    Raises:
        ValueError: the evaluation's verdict is not PASSED, or the settings are wrong.
        PublishRefused: the destination holds another model's (or foreign) files.
        FileNotFoundError: an input file is missing.
    """
    if not config.destination:
        raise ValueError("destination is empty: give the folder or gs:// prefix to publish under")
    if not config.run_id:
        raise ValueError("run_id is empty: give the id of the run publishing (recorded in publication.json)")
    metrics = _read_json(uri.join(config.evaluation_dir, "metrics.json"), "evaluation")
    verdict = metrics.get("verdict") or {}
    if verdict.get("passed") is not True:
        raise ValueError(f"{config.evaluation_dir}: refusing to publish an unblessed model ({not_published_reason(metrics)})")
    train_config = _read_json(uri.join(config.model_dir, "config.json"), "training config")
    name = config.name()
    dest = uri.join(config.destination, name)
    previous = check_destination(dest, config.run_id)
    files = _source_files(config)
    record = _provenance(config, name, dest, metrics, train_config)
    if uri.is_gcs(dest):
        _publish_gcs(config, dest, files, record, previous)
    else:
        _publish_local(config, dest, files, record, previous)
    LOG.info("published %s (run %s) to %s", name, config.run_id, dest)
    return record


def _publish_local(config: PublishConfig, dest: str, files: dict[str, str], record: dict, previous: dict | None) -> None:
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(dest)
    staging = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    try:
        os.chmod(staging, 0o777 & ~_umask())
        _stage_local(files, staging)
        record["files"] = _file_records(staging, list(files))
        _write_json(os.path.join(staging, PUBLICATION_FILE), record)
        if previous is not None:  # this run's own earlier publication: swap it out, then remove it
            old = tempfile.mkdtemp(prefix=f".{base}.", suffix=".old", dir=parent)
            os.rename(dest, os.path.join(old, base))
            os.rename(staging, dest)
            shutil.rmtree(old)
        else:
            try:
                os.rename(staging, dest)  # fails if someone filled dest meanwhile: nothing replaced
            except OSError as err:
                raise PublishRefused(f"{dest} was filled by someone else while publishing ({err}); left alone") from None
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)


def _publish_gcs(config: PublishConfig, dest: str, files: dict[str, str], record: dict, previous: dict | None) -> None:
    claim = uri.join(dest, CLAIM_FILE)
    claim_body = json.dumps({"run_id": config.run_id, "started": record["published_at"]}).encode()
    try:
        uri.create_exclusive(claim, claim_body)
    except FileExistsError:
        held = json.loads(uri.read_text(claim))
        if held.get("run_id") != config.run_id:
            raise PublishRefused(f"{dest} is being published by run {held.get('run_id')!r}; left alone") from None
    if previous is not None:
        uri.delete(uri.join(dest, PUBLICATION_FILE))  # no manifest over half-replaced files
    for rel, src in files.items():
        _copy(src, uri.join(dest, rel))
    written = list(files)
    if config.register_vertex_model:
        saved = export_saved_model(uri.join(dest, "generator"), uri.join(dest, SAVED_MODEL_DIR))
        written += saved
        record["vertex_model"] = register_vertex_model(config, record, uri.join(dest, SAVED_MODEL_DIR))
    if previous is not None:  # files of the earlier attempt this one did not write again
        for stale in set(previous.get("files") or {}) - set(written):
            uri.delete(uri.join(dest, stale))
    record["files"] = _file_records(dest, written)
    uri.write_text(uri.join(dest, PUBLICATION_FILE), json.dumps(record, indent=2, sort_keys=True, default=str))
    uri.delete(claim)


def _write_json(path: str, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- Vertex AI
def export_saved_model(generator_dir: str, output_dir: str) -> list[str]:
    """Export the generator as a TF SavedModel (what Vertex AI's TensorFlow container serves).

    Its `serve` signature takes the generator's latent input, (N, latent_dim) float32 =
    [E / energy_scale, angle, standard-normal noise], and returns the preprocessed image
    (raw ECAL ** power); generator_config.json beside it says how to undo that.

    Returns:
        Paths of the files written, relative to the published model folder (saved_model/...).
    """
    from trainer.export import load_generator

    bundle = load_generator(generator_dir)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, SAVED_MODEL_DIR)
        bundle.model.export(local, format="tf_saved_model", verbose=False)
        rels = []
        for root, _dirs, names in os.walk(local):
            for file_name in names:
                path = os.path.join(root, file_name)
                rel = os.path.relpath(path, local).replace(os.sep, "/")
                _copy(path, uri.join(output_dir, *rel.split("/")))
                rels.append(f"{SAVED_MODEL_DIR}/{rel}")
    return sorted(rels)


def vertex_label(value: str) -> str:
    """A Vertex AI label value: lowercase letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-")[:63] or "none"


def vertex_upload_arguments(config: PublishConfig, record: dict, artifact_uri: str,
                            parent_model: str | None = None, environ: dict[str, str] | None = None) -> dict:
    """Keyword arguments of ``aiplatform.Model.upload`` for this publication (no network).

    Args:
        config: Publication settings (project, location, serving image).
        record: The publication record (name, run id, verdict, commits).
        artifact_uri: gs:// folder of the SavedModel.
        parent_model: Resource name of an existing model of the same display name: the upload
            becomes its new version.
        environ: Environment to read Vertex AI's project and region from (default os.environ).
    """
    if not uri.is_gcs(artifact_uri):
        raise ValueError(f"Vertex AI reads models from Cloud Storage: artifact_uri {artifact_uri!r} is not gs://")
    env = os.environ if environ is None else environ
    training = record.get("training") or {}
    publisher = record.get("publisher") or {}
    args: dict[str, Any] = {
        "display_name": config.model_name or "caloforge-3dgan",
        "artifact_uri": artifact_uri,
        "serving_container_image_uri": config.vertex_serving_image,
        "description": "3DGAN calorimeter-shower generator published by caloforge after a PASSED physics verdict",
        "version_description": (f"run {record.get('run_id')}, verdict PASSED, training config {training.get('config_hash')}, "
                                f"git {training.get('git_commit') or publisher.get('git_commit')}"),
        "labels": {
            "caloforge-run": vertex_label(str(record.get("run_id", ""))),
            "caloforge-verdict": "passed",
            "caloforge-config-hash": vertex_label(str(training.get("config_hash") or "none")),
            "caloforge-version": vertex_label(str(publisher.get("caloforge") or "unknown").replace(".", "-")),
        },
        "is_default_version": True,
        "sync": True,
    }
    project = config.vertex_project or env.get(VERTEX_PROJECT_ENV, "")
    location = config.vertex_location or env.get(VERTEX_REGION_ENV, "")
    if project:
        args["project"] = project
    if location:
        args["location"] = location
    if parent_model:
        args["parent_model"] = parent_model
    return args


def register_vertex_model(config: PublishConfig, record: dict, artifact_uri: str) -> dict:  # pragma: no cover - cloud only
    """Upload the published SavedModel to Vertex AI Model Registry (new version of the model
    of the same display name, if there is one). Needs credentials and network: never run here."""
    from google.cloud import aiplatform

    probe = vertex_upload_arguments(config, record, artifact_uri)
    scope = {k: probe[k] for k in ("project", "location") if k in probe}
    existing = aiplatform.Model.list(filter=f'display_name="{probe["display_name"]}"', **scope)
    parent = existing[0].resource_name if existing else None
    model = aiplatform.Model.upload(**vertex_upload_arguments(config, record, artifact_uri, parent_model=parent))
    return {"resource_name": model.resource_name, "version_id": getattr(model, "version_id", None),
            "display_name": probe["display_name"]}


def publication_summary(record: dict | None, reason: str = "") -> dict:
    """What the DAG's `publication` output (and the index page) says: where, or why not."""
    if record is None:
        return {"published": False, "reason": reason}
    out = {"published": True, "name": record["name"], "destination": record["destination"],
           "run_id": record["run_id"]}
    if record.get("vertex_model"):
        out["vertex_model"] = record["vertex_model"]
    return out

