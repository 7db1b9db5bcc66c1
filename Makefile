# Two entry points for a fresh machine: `make run` (set up, then run the whole DAG locally on the
# embedded Monte Carlo) and `make test` (set up, then run the test suite). Both are idempotent:
# the install is redone only when setup.py or constraints.txt change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.caloforge-installed
RUN_DIR ?= runs/latest
PYTEST_ARGS ?=

.PHONY: run test install compile bench clean images quality chromium

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,gcp,dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/caloforge run --local --output-dir $(RUN_DIR)

# tests/test_report_render.py opens the validation report in headless Chromium (Debian's package),
# installed here when missing so that `make test` sets up everything it needs on a fresh machine.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "make test: install Chromium (the report render test opens it headless)" >&2; exit 2; }; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test: $(STAMP) chromium
	$(PY) -m pytest tests $(PYTEST_ARGS)

# The 2-CPU quality recipe (docs/trainer.md, "A GAN shown to learn"): 7,500 steps, about 1.5-2 hours on 2 cores.
QUALITY_DIR ?= runs/quality
quality: $(STAMP)
	$(VENV)/bin/caloforge run --local --params-file examples/cpu-quality.json --output-dir $(QUALITY_DIR)

compile: $(STAMP)
	$(VENV)/bin/caloforge compile --output caloforge_pipeline.yaml

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Container images (infra/docker): `make images PROJECT=my-project REGION=europe-west4` builds the
# CPU, GPU and TPU images with Cloud Build (infra/cloudbuild.yaml; no local docker needed) and pushes
# them to Artifact Registry as $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/caloforge-{cpu,gpu,tpu}:$(VERSION).
# BUILDER=docker builds them with the local docker and pushes them from here instead.
VERSION ?= $(shell sed -n 's/^VERSION = "\(.*\)"/\1/p' pipelines/version.py)
REPOSITORY ?= caloforge
BUILDER ?= cloudbuild
PYTHON_IMAGE ?= python:3.11-slim-bookworm
IMAGE_KINDS := cpu gpu tpu

images:
	@test -n "$(PROJECT)" -a -n "$(REGION)" || { echo "make images: give PROJECT=<project id> REGION=<Artifact Registry region>, e.g. make images PROJECT=my-project REGION=europe-west4" >&2; exit 2; }
ifeq ($(BUILDER),docker)
	for kind in $(IMAGE_KINDS); do \
	  docker build -f infra/docker/Dockerfile.$$kind --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
	    --build-arg CALOFORGE_VERSION=$(VERSION) \
	    -t $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/caloforge-$$kind:$(VERSION) . && \
	  docker push $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/caloforge-$$kind:$(VERSION) || exit 1; \
	done
else
	gcloud builds submit --project $(PROJECT) --config infra/cloudbuild.yaml \
	  --substitutions _REGION=$(REGION),_REPOSITORY=$(REPOSITORY),_VERSION=$(VERSION),_PYTHON_IMAGE=$(PYTHON_IMAGE) .
endif

clean:
	rm -rf $(VENV) runs local_outputs *.egg-info
