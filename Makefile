# dtrepro: `make install`, then `make test`. Every target uses the project's own .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
PROFILE ?= default

.PHONY: install test test-fast lint repro demo bench clean help

help:
	@echo "make install    create .venv and install the locked dependencies and dtrepro"
	@echo "make test       run the whole test suite (fast and slow tests)"
	@echo "make test-fast  skip the slow end-to-end tests"
	@echo "make demo       the offline quickstart on a CPU: dvc repro with the demo profile"
	@echo "make repro      dvc repro with PROFILE=<name> (profiles/*.yaml; default: params.yaml as is)"
	@echo "make bench      run the benchmarks in bench/"
	@echo "make lint       ruff"

install: $(BIN)/dtrepro-installed

$(BIN)/dtrepro-installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check src stages tests bench

repro: install
	$(BIN)/python -m dtrepro.profiles run $(PROFILE) -- dvc repro

demo: install
	$(BIN)/python -m dtrepro.profiles run demo -- dvc repro
	@echo "demo: dataset data/clean.hdf5, checkpoints models/last.pt and models/best.pt, learning curve plots/learning_curve.png; metrics in reports/ (dvc metrics show)"

bench: install
	for b in bench/repair.py bench/collect.py bench/train.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
