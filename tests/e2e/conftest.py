"""Fixtures for the VM tests: the cached base image, a per-test work directory kept under build/e2e/."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e import scenarios, vm

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("HARMONIC_TEST_E2E_ARTIFACTS", REPO / "build" / "e2e"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """VM tests run with the rest of the suite (as in CI); HARMONIC_TEST_E2E=0 skips them, visibly, for quick runs."""
    if os.environ.get("HARMONIC_TEST_E2E", "1") != "0":
        return
    skip = pytest.mark.skip(reason="HARMONIC_TEST_E2E=0: VM tests skipped (CI runs them)")
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def base_image() -> vm.Image:
    """The cached base image (built on first use)."""
    missing = [t for t in ("qemu-system-x86_64", "mmdebstrap", "socat", "mkfs.ext4") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"VM tests need {', '.join(missing)}: run scripts/bootstrap.sh")
    if os.geteuid() != 0:
        pytest.fail("VM tests build their image as root (mmdebstrap --mode=root, chroot dpkg)")
    return vm.base_image()


@pytest.fixture(scope="session")
def installer_build() -> scenarios.InstallerBuild:
    """The project's .deb and zipapp, built once per session (`make deb pyz`)."""
    try:
        return scenarios.build_installer()
    except Exception as exc:  # a missing build step is a failure of the suite, not a skip
        pytest.fail(f"cannot build the installer's .deb and zipapp for the VM tests: {exc}")


@pytest.fixture
def e2e_dir(request: pytest.FixtureRequest) -> Path:
    """A fresh work directory for one test, kept afterwards (serial logs, proxy logs) for CI artifacts."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = ARTIFACTS / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
