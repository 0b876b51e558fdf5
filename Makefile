# harmonic-installer: every entry point an operator or developer needs. Run as root on Debian 12.
SHELL := /bin/bash
PY := .venv/bin/python
# The shared cache of built guest and sandbox images (a few GB; outside the checkout, shared by every checkout).
TEST_CACHE := $(or $(HARMONIC_TEST_CACHE),/var/cache/harmonic-installer-tests)

.PHONY: help bootstrap test test-unit test-failsafe test-e2e image-e2e lint demo sandbox-demo pyz deb image clean distclean bench bench-quick

help:
	@echo "make demo        boot a VM and watch the installer do its whole job (docs/e2e.md)"
	@echo "make test        set up everything (apt packages, .venv) and run lint + the whole test suite"
	@echo "make test-unit   unit tests only (fast, no root-only parts)"
	@echo "make test-e2e    only the VM tests (tests/e2e, a few minutes each under TCG)"
	@echo "make image-e2e   only the MAAS image tests: real Packer (Debian's) under TCG, then a MAAS-style boot (~9 min)"
	@echo "make lint        ruff and mypy --strict"
	@echo "make test-failsafe  the injected faults and bad inputs; rewrites docs/reliability.json and the README figures"
	@echo "make sandbox-demo  a complete -p -i install in an isolated root on a loop device (docs/sandbox.md)"
	@echo "make pyz         dist/harmonic-install.pyz (one file: python3 harmonic-install.pyz -p -i)"
	@echo "make deb         dist/harmonic-installer_<version>_all.deb (pyz, /usr/sbin wrapper, systemd unit)"
	@echo "make image       the MAAS image with Packer (packaging/packer: needs Packer and KVM)"
	@echo "make clean       remove what builds and tests leave in the checkout (dist/ build/ .cache/ caches)"
	@echo "make distclean   also .venv and the shared image cache $(TEST_CACHE) (GBs; used by every checkout)"
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

test-failsafe: bootstrap
	scripts/run-tests.sh tests/failsafe tests/unit/test_reliability_readme.py

# The sandbox demo (docs/sandbox.md): a complete -p -i install on real parts in an isolated root.
sandbox-demo:
	scripts/sandbox-demo.sh

# Artifacts. Always rebuilt (a few seconds): both are reproducible, so an unchanged tree gives the same bytes.
pyz:
	"$$(scripts/find-python310.sh)" packaging/build_pyz.py --output dist/harmonic-install.pyz

deb: pyz
	packaging/build_deb.sh dist/harmonic-install.pyz dist

image: deb
	$(MAKE) -C packaging/packer all

# What the build and the tests leave in the checkout; .venv stays (`make distclean` removes it too).
clean:
	rm -rf dist build .cache .pytest_cache .mypy_cache .ruff_cache tests/bench/work
	find . -path ./.venv -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
	$(MAKE) -C packaging/packer --no-print-directory clean

# Everything `make test` and `make demo` made: also .venv and the shared cache of guest and sandbox images
# outside the checkout (HARMONIC_TEST_CACHE). Other checkouts on this machine use that cache too: they rebuild it.
distclean: clean
	rm -rf .venv
	@d='$(TEST_CACHE)'; if [[ "$$d" != /?* || "$$d" == / ]]; then echo "distclean: refusing to remove '$$d'" >&2; exit 1; fi
	rm -rf '$(TEST_CACHE)'

test-e2e: bootstrap
	scripts/run-tests.sh -m e2e tests/e2e

# Only the image tests (also in `make test`): a real `packer build` under TCG, then the tarball booted in memory.
image-e2e: bootstrap
	HARMONIC_TEST_IMAGE=1 scripts/run-tests.sh -m e2e tests/e2e/test_packer_image.py

demo:
	scripts/demo.sh

bench: bootstrap  ## issue 7: throughput, RSS, resume, start-up, fleet (about 20 min, root) -> tests/bench/results/
	$(PY) -m tests.bench

bench-quick: bootstrap  ## the same with smaller files, fewer runs, one small fleet (about 5 min)
	$(PY) -m tests.bench --quick
