"""Container image names: one per stage kind, read by the compiler, the Dockerfiles' build and `make images`.

The Beam and evaluation stages run on the CPU image (no CUDA, no libtpu); the training step
runs on the image of its hardware profile's accelerator. Names are
`REGISTRY/caloforge-KIND:VERSION`; the registry is --registry, else $CALOFORGE_REGISTRY, else
DEFAULT_REGISTRY (e.g. an Artifact Registry path `europe-west4-docker.pkg.dev/PROJECT/caloforge`).

`python -m pipelines.images [--registry R]` prints `KIND IMAGE` lines for build scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Sequence

from pipelines.version import VERSION

DEFAULT_REGISTRY = "ghcr.io/caloforge"
REGISTRY_ENV = "CALOFORGE_REGISTRY"
#: One image for every component, whatever the stage ($CALOFORGE_IMAGE, or --image).
IMAGE_ENV = "CALOFORGE_IMAGE"
#: Stage kind -> (image name, Dockerfile under infra/docker).
IMAGES: dict[str, tuple[str, str]] = {
    "cpu": ("caloforge-cpu", "Dockerfile.cpu"),
    "gpu": ("caloforge-gpu", "Dockerfile.gpu"),
    "tpu": ("caloforge-tpu", "Dockerfile.tpu"),
}


def registry(explicit: str | None = None) -> str:
    return (explicit or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY).rstrip("/")


def image_for(kind: str, registry_path: str | None = None, tag: str = VERSION) -> str:
    """The image of one stage kind (cpu | gpu | tpu).

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in IMAGES:
        raise ValueError(f"image kind {kind!r} is not one of {', '.join(IMAGES)}")
    return f"{registry(registry_path)}/{IMAGES[kind][0]}:{tag}"


@dataclass(frozen=True)
class StageImages:
    """The images a compiled DAG uses: every stage on `default`, the training step on `train`."""

    default: str
    train: str


def stage_images(accelerator: str, image: str | None = None, registry_path: str | None = None) -> StageImages:
    """Images for a DAG whose training runs on `accelerator`.

    Args:
        image: one image for every stage (--image); default $CALOFORGE_IMAGE, else per kind.
        registry_path: where the per-kind images live (--registry).
    """
    single = image or os.environ.get(IMAGE_ENV)
    if single:
        return StageImages(single, single)
    return StageImages(image_for("cpu", registry_path), image_for(accelerator, registry_path))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.images", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=None, help=f"registry path (default ${REGISTRY_ENV} or {DEFAULT_REGISTRY})")
    args = parser.parse_args(argv)
    for kind, (_, dockerfile) in IMAGES.items():
        print(f"{kind} {image_for(kind, args.registry)} infra/docker/{dockerfile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
