"""The sandbox demo's Python half runs the whole flow and reports success only when every check passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import demo

pytestmark = pytest.mark.integration


def test_demo_passes_and_summarises(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """demo.run returns 0 and its summary names every step, the byte-for-byte check and the proxied requests."""
    assert demo.run(tmp_path, iso_mib=4, disk_mib=64, block_delay=0) == 0
    out = capfd.readouterr().out
    assert "DEMO PASSED" in out
    assert "FAIL" not in out
    for step in ("preflight", "proxy", "download", "packages", "write", "reboot"):
        assert f"\n      {step} " in out
    assert "byte for byte" in out
    assert "6 requests through the proxy, 6 reached nginx" in out
