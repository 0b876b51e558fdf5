# harmonic-installer: every entry point an operator or developer needs. Run as root on Debian 12.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: help bootstrap test test-unit lint

help:
	@echo "make test        set up everything (apt packages, .venv) and run lint + the whole test suite"
	@echo "make test-unit   unit tests only (fast, no root-only parts)"
	@echo "make lint        ruff and mypy --strict"
	@echo "make bench       benchmarks of issue 7 (about 20 min, root) -> tests/bench/results/"
	@echo "make bench-quick the same, smaller and fewer (about 5 min)"

bootstrap:
	scripts/bootstrap.sh

lint: bootstrap
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	scripts/run-tests.sh

test-unit: bootstrap
	$(PY) -m pytest -q tests/unit

.PHONY: bench bench-quick
bench: bootstrap  ## issue 7: throughput, RSS, resume, start-up, fleet (about 20 min, root) -> tests/bench/results/
	$(PY) -m tests.bench

bench-quick: bootstrap  ## the same with smaller files, fewer runs, one small fleet (about 5 min)
	$(PY) -m tests.bench --quick
