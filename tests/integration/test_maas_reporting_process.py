"""MAAS reporting from a real `harmonic-install` process: settings from the kernel command line, events posted
from the background thread, and an exit that a slow or absent MAAS delays by at most the flush timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harmonic_installer.log import find_line
from tests.support.maas_server import MaasServer, closed_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARENT = "harmonic-installer"


def _run(tmp_path: Path, params: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m harmonic_installer -i` on a disk that does not exist (not a target: exit 0, nothing done)."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz ro harmonic.install=1 " + " ".join(params) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARMONIC_")}
    env.update(
        HARMONIC_CMDLINE_FILE=str(cmdline),
        HARMONIC_MAAS_TIMEOUT_S="0.5",
        HARMONIC_MAAS_FLUSH_TIMEOUT_S="2",
        PYTHONPATH=str(REPO),
    )
    argv = [sys.executable, "-m", "harmonic_installer", "-i", "--disk", "/dev/disk/by-id/no-such-disk"]
    argv += ["--state-dir", str(tmp_path / "state"), "--server-url", "http://127.0.0.1:9"]
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    return result, time.monotonic() - started


def _events(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The names of the events the run logged (its readable log lines on stderr, read back)."""
    lines = (find_line(line) for line in result.stderr.splitlines())
    return [line.message for line in lines if line is not None]


def test_kernel_parameters_point_a_real_run_at_maas(tmp_path: Path) -> None:
    """harmonic.maas.* on the kernel command line: the run's events arrive signed and nested before exit."""
    with MaasServer() as maas:
        result, _ = _run(tmp_path, maas.kernel_params())
        assert result.returncode == 0, result.stderr[-3000:]
        assert maas.names() == [
            ("start", PARENT, None),
            ("start", f"{PARENT}/preflight", None),
            ("finish", f"{PARENT}/preflight", "SUCCESS"),
            ("finish", PARENT, "WARN"),
        ]
        assert maas.rejections == []
        maas.assert_well_formed()
    assert "report.summary" in _events(result)
    assert maas.token_secret not in result.stderr


@pytest.mark.parametrize("how", ["down", "slow"])
def test_absent_or_slow_maas_delays_the_exit_at_most_the_flush_timeout(tmp_path: Path, how: str) -> None:
    """MAAS refusing connections or not answering: same exit code, exit within the 2 s flush timeout (+ start-up)."""
    with MaasServer(delay_s=5.0 if how == "slow" else 0.0) as maas:
        endpoint = maas.url if how == "slow" else f"http://127.0.0.1:{closed_port()}/MAAS/metadata/status/x"
        result, took = _run(tmp_path, maas.kernel_params(endpoint))
    assert result.returncode == 0, result.stderr[-3000:]
    assert took < 2.0 + 5.0, took  # flush timeout + a generous start-up allowance on a loaded machine
    assert "report.dropped" in _events(result)
    assert "report.summary" in _events(result)
