# minillm course: `make help` lists the targets.
# The first `make book` or `make test` creates .venv and installs the pinned environment;
# later runs reuse it (the stamp file is rebuilt only when pyproject.toml or constraints.txt change).
# `make book` is the learner book; `make book-instructor` (or `make book INSTRUCTOR=1`) adds the
# instructor guide and the solutions.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip
PYTEST_TIMEOUT_FLAGS := --nbval-cell-timeout=900

export PYTHONHASHSEED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Offline by default: nothing may reach a model or dataset hub unless the user asks.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help
.PHONY: help install book book-instructor test test-unit test-notebooks lint lab notebooks bench doctor lock clean

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=24" setuptools wheel
	$(PIP) install --quiet "torch==2.13.0" -c constraints.txt
	$(PIP) install --quiet -e ".[course,dev]" -c constraints.txt
	@touch $(STAMP)
	@echo "Environment ready in $(VENV)"

install: $(STAMP)  ## create .venv and install the pinned environment (done by book/test too)

lint: $(STAMP)  ## ruff over the package, tests, benchmarks and the notebooks' code
	$(BIN)/ruff check minillm tests bench scripts notebooks solutions
	$(BIN)/ruff format --check minillm tests bench scripts

test: $(STAMP) lint  ## the whole suite: ruff, unit tests, every lesson (nbval), every solution (papermill)
	$(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env $(PYTEST_TIMEOUT_FLAGS) -p no:cacheprovider

test-unit: $(STAMP) lint  ## the quick loop: ruff and unit tests only (no notebook execution)
	$(BIN)/python -m pytest tests/unit -q -p no:cacheprovider

test-notebooks: $(STAMP)  ## only the notebooks: lessons with nbval, solutions with papermill
	$(BIN)/python -m pytest tests/notebooks notebooks --nbval-lax --nbval-current-env $(PYTEST_TIMEOUT_FLAGS) -p no:cacheprovider

book: $(STAMP)  ## the learner book: execute every lesson, render into book/_build/html (no solutions)
	$(BIN)/python scripts/build_book.py $(if $(filter 1,$(INSTRUCTOR)),--instructor)

book-instructor: $(STAMP)  ## the instructor book: the lessons, the instructor guide and the solutions
	$(BIN)/python scripts/build_book.py --instructor

notebooks: $(STAMP)  ## re-execute every lesson and solution in order, storing fresh outputs
	$(BIN)/python scripts/nbexec.py --inplace --timings bench/results/lesson_timings.json notebooks/*.ipynb solutions/*.ipynb

lab: $(STAMP)  ## open JupyterLab on notebooks/
	$(BIN)/jupyter lab --notebook-dir=notebooks

doctor: $(STAMP)  ## check this machine for the course
	$(BIN)/python -m minillm doctor

bench: $(STAMP)  ## run every benchmark in bench/ (prints tables, writes bench/results/)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

lock: $(STAMP)  ## rewrite constraints.txt from the current environment
	$(BIN)/python scripts/lock.py

clean:  ## remove the environment, caches and the built book
	rm -rf $(VENV) book/_build book/lessons book/solutions book/_toc.yml book/api.md book/timings.md .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
