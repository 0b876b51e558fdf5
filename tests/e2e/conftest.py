"""Fixtures for the VM tests: the cached base image, a per-test work directory kept under build/e2e/."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e import vm

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("HARMONIC_E2E_ARTIFACTS", REPO / "build" / "e2e"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """VM tests take minutes: they run when asked for (`-m e2e` or HARMONIC_E2E=1), and are skipped otherwise."""
    if "e2e" in (config.option.markexpr or "") or os.environ.get("HARMONIC_E2E") == "1":
        return
    skip = pytest.mark.skip(reason="boots a VM: run with `-m e2e` (or HARMONIC_E2E=1)")
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


@pytest.fixture
def e2e_dir(request: pytest.FixtureRequest) -> Path:
    """A fresh work directory for one test, kept afterwards (serial logs, proxy logs) for CI artifacts."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    path = ARTIFACTS / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
