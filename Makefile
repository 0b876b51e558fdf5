# harmonic-installer: every entry point an operator or developer needs. Run as root on Debian 12.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: help bootstrap test test-unit test-e2e lint demo

help:
	@echo "make demo        boot a VM and watch the installer do its whole job (docs/e2e.md)"
	@echo "make test        set up everything (apt packages, .venv) and run lint + the whole test suite"
	@echo "make test-unit   unit tests only (fast, no root-only parts)"
	@echo "make test-e2e    only the VM tests (tests/e2e, a few minutes each under TCG)"
	@echo "make lint        ruff and mypy --strict"

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

test-e2e: bootstrap
	HARMONIC_E2E=1 scripts/run-tests.sh -m e2e tests/e2e

demo:
	scripts/demo.sh
