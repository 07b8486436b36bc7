# Paceline — see README.md. Every target uses the virtual environment in .venv (created on demand).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export KUBECONFIG_LOCAL := $(CURDIR)/.paceline/kubeconfig

.PHONY: help venv demo cluster-up cluster-down cluster-build test test-unit test-integration test-e2e lint \
        chart-crds bench clean

help:
	@echo "make demo          local cluster + operator + heterogeneous example job, live progress, summary"
	@echo "make test          install test dependencies and run lint, unit, integration and e2e tiers"
	@echo "make cluster-up    start the local cluster (kubeconfig: .paceline/kubeconfig)"
	@echo "make cluster-down  stop everything cluster-up started"
	@echo "make bench         run the benchmarks in bench/"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

cluster-build: $(STAMP)
	$(BIN)/paceline-dev cluster build

cluster-up: $(STAMP)
	$(BIN)/paceline-dev cluster up

cluster-down: $(STAMP)
	$(BIN)/paceline-dev cluster down

demo: $(STAMP)
	$(BIN)/paceline-dev cluster up
	$(BIN)/paceline-dev demo

chart-crds:
	cp crds/*.yaml charts/paceline/crds/

lint: $(STAMP)
	$(BIN)/ruff check operator worker-image tests bench examples
	$(BIN)/ruff format --check operator worker-image tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# the slow tiers name each test as it runs and list the slowest at the end
test-integration: $(STAMP)
	$(BIN)/pytest tests/integration -v -m integration --durations=5

test-e2e: $(STAMP) cluster-build
	$(BIN)/pytest tests/e2e -v -m e2e --durations=10

test: lint test-unit test-integration test-e2e

bench: $(STAMP)
	$(BIN)/python bench/planner.py
	$(BIN)/python bench/balancing.py --quick
	$(BIN)/python bench/execution.py

clean: cluster-down
	rm -rf .paceline
