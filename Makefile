# dtrepro: `make install`, then `make test`. Every target uses the project's own .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
PROFILE ?=
# a named run (profiles/$(PROFILE).yaml, as the DVC experiment $(PROFILE)), or the workspace's params.yaml as it is
EXP_RUN = $(if $(PROFILE),$(BIN)/dtrepro run $(PROFILE),$(BIN)/dvc exp run)

.PHONY: install test test-fast lint repro ablations demo suite suite-smoke bench bench-gpu bench-cluster cluster docs docker-build docker-test clean help

help:
	@echo "make install    create .venv and install the locked dependencies and dtrepro"
	@echo "make test       run the whole test suite (fast and slow tests)"
	@echo "make test-fast  skip the slow end-to-end tests"
	@echo "make demo       the offline quickstart on a CPU: the named run 'demo' (a DVC experiment)"
	@echo "make repro      dvc exp run; PROFILE=<name> runs profiles/<name>.yaml as the experiment <name>"
	@echo "make ablations  train and evaluate the study (targets, context lengths, seeds) and write results/"
	@echo "make suite      the DT paper's D4RL table: nine datasets at the headline K -> results/suite.md"
	@echo "make suite-smoke  the suite's pipeline on three envs' collected data, offline, in minutes"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make bench-cluster  the smoke study on a local Slurm against one local run: wall time, overhead per task"
	@echo "make bench-gpu  the GPU table to paste: large-batch training, 60-episode evaluation, CUDA paths"
	@echo "make docs       build the docs site (docs/, mkdocs build --strict) into site/"
	@echo "make lint       ruff and hadolint"
	@echo "make docker-build  docker build -t dtrepro . (DOCKER=podman to use podman)"
	@echo "make docker-test   build with podman on a local Debian base and run the smoke pipeline in it"

install: $(BIN)/dtrepro-installed

$(BIN)/dtrepro-installed: requirements.lock requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

test: install
	$(BIN)/python -m pytest

test-fast: install  # one worker per core (pytest-xdist), at most 4: each loads torch
	$(BIN)/python -m pytest -m "not slow" -n auto --maxprocesses 4

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: install
	$(BIN)/ruff check src stages tests bench docs/hooks
	$(BIN)/hadolint Dockerfile

repro: install
	$(EXP_RUN)

# The study of params.yaml (study.*, eval.targets): every train@D-K-S and evaluate@D-K-S stage, then the report.
ablations: install
	$(EXP_RUN) report
	@echo "ablations: tables results/ablations.md, every number results/ablations.json, metrics results/metrics.json, plots results/plots/*.png"

demo: install
	$(BIN)/dtrepro run demo
	@echo "demo: tables results/ablations.md, plots results/plots/*/*.png, metrics results/metrics.json (dvc metrics show; every number in results/ablations.json); checkpoints models/<dataset>/k<K>-seed<S>/"

# The DT paper's table (profiles/suite.yaml) as the DVC experiment suite; suite-smoke: the same offline, small.
suite: install
	$(BIN)/dtrepro run suite
	@echo "suite: results/suite.md, results/suite.json, results/suite-plots/*.png; per dataset: results/ablations.md"

suite-smoke: install
	$(BIN)/dtrepro run suite-smoke
	@echo "suite-smoke: results/suite.md, results/suite.json, results/suite-plots/*.png"

bench: install
	for b in bench/repair.py bench/collect.py bench/train.py bench/threads.py bench/evaluate.py bench/noop.py bench/render.py; do $(BIN)/python $$b || exit 1; done

# On a machine with a GPU (no internet needed: it collects its Hopper data first).
# the study of a named run on a Slurm cluster, from a login node (docs/cluster.md); PROFILE=suite for the paper's table
cluster: install
	$(BIN)/dtrepro cluster submit $(or $(PROFILE),default) --wait

# the smoke study on a one-node Slurm on localhost against one local run (needs Debian's slurm-wlm and munge)
bench-cluster: install
	$(BIN)/python bench/cluster.py

bench-gpu: install
	$(BIN)/python bench/gpu.py

DOCKER ?= docker
docker-build:
	$(DOCKER) build -t dtrepro .

docker-test:
	bash docker/test.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
