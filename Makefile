# Two entry points for a fresh machine: `make run` (set up, then run the whole DAG locally on the
# embedded Monte Carlo) and `make test` (set up, then run the test suite). Both are idempotent:
# the install is redone only when setup.py or constraints.txt change.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.caloforge-installed
RUN_DIR ?= runs/latest
PYTEST_ARGS ?=

.PHONY: run test install compile bench clean

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24" setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,gcp,dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/caloforge run --local --output-dir $(RUN_DIR)

test: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

compile: $(STAMP)
	$(VENV)/bin/caloforge compile --output caloforge_pipeline.yaml

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs local_outputs *.egg-info
