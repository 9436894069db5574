# Two commands from a fresh clone: `make quickstart` (train the small preset on synthetic rain) and `make test`
# (lint + the test suite). Both create .venv when it is missing and install exactly as README.md's manual steps do;
# a second run reuses .venv and reinstalls only the project.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,export,rivals
# The stamp records that the pinned dependencies are installed; delete .venv (or the stamp) to reinstall them.
DEPS := $(VENV)/.deps-installed

.PHONY: quickstart test lint install mutants dist clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEPS): | $(BIN)/python
	$(BIN)/pip install --upgrade pip setuptools wheel
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --no-build-isolation basicsr==1.4.2
	touch $@

install: $(DEPS)
	$(BIN)/pip install --no-build-isolation -e ".[$(EXTRAS)]"

quickstart: install
	$(BIN)/python -m basicsr.train -opt options/quickstart.yml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

# Mutation testing of one module (slow; see docs/testing.md): make mutants MODULE=tiling
MODULE ?= tiling
mutants: install
	$(BIN)/pip install mutmut==3.8.1
	PYTHON=$(abspath $(BIN)/python) bash tests/run_mutants.sh $(MODULE)

# The sdist and the wheel into dist/, checked by twine (README as long description, LICENSE): build uses the venv's
# setuptools (no isolated environment to download).
dist: install
	rm -rf dist build
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*

clean-venv:
	rm -rf $(VENV)
