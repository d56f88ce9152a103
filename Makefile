# mlflow-secrets-auth: every developer and CI entry point.
# `make test` is the README's test command and what .ci/run calls.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: venv test test-unit test-e2e compat lint generate stack-up stack-down demo demo-down soak clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

## test: everything CI runs: lint, unit and end-to-end tests (installs what it needs, cached)
test: venv
	$(BIN)/lint-imports
	$(BIN)/python -m pytest tests dev

test-unit: venv
	$(BIN)/python -m pytest tests/unit dev

test-e2e: venv
	$(BIN)/python -m pytest tests/e2e

## compat: the whole MLflow versions matrix (every 2.x minor from 2.8.0, every 3.x minor; venvs cached), prints the table in docs/compatibility.md
compat: venv
	$(BIN)/python -m dev.compat

lint: venv
	$(BIN)/lint-imports

## stack-up / stack-down: the local stack alone (control plane, secret managers, MLflow)
stack-up: venv
	$(BIN)/python -m dev.stack up

stack-down: venv
	$(BIN)/python -m dev.stack down

## generate: the chart's CRD copy and the generated reference docs (after editing crds/ or values.yaml)
generate: venv
	$(BIN)/python dev/generate/chart_crds.py
	$(BIN)/python dev/generate/docs.py

## demo: the whole system on the local stack (as root: on the real node, the chart via helm); an MLflow run logged through an injected, rotated credential
demo: venv
	$(BIN)/python -m dev.demo

## demo-down: stop everything the demo (or stack-up) started
demo-down: venv
	$(BIN)/python -m dev.demo down

## soak: the fault-injecting soak on the local node (root; docs/reliability.md): SEED=1 DURATION=300 (seconds); FULL=1 for 10 namespaces, 50 bindings, 20 client pods
SEED ?= 1
DURATION ?= 300
soak: venv
	$(BIN)/python -m bench.soak --seed $(SEED) --duration $(DURATION) $(if $(FULL),--full,)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
