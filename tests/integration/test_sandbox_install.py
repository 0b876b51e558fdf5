"""The whole `harmonic-install -p -i` flow with real parts: nginx, tinyproxy, dpkg, the stand-in vendor tool and
a loop device as the disk, in an isolated root whose network namespace has only `lo`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.loopdev import MiB, first_difference, is_zero, loop_device, read_device
from tests.support.sandbox import Command, Proxy, Sandbox, SessionResult, WebServer, installer_command
from tests.support.standin import WebRoot, build_web_root, copy_tree, corrupt

pytestmark = pytest.mark.integration

DISK_SIZE = 256 * MiB
STEPS = ["preflight", "proxy", "download", "packages", "write", "reboot"]
QUERY = Command(("dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\\n", "ostree-upgrade*"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> WebRoot:
    """The stand-in web root (16 MiB + 6 KiB ISO), built once for the module."""
    return build_web_root(tmp_path_factory.mktemp("install-web") / "www")


def _rc(result: SessionResult) -> int | None:
    return result.commands[0].returncode if result.commands else None


def _report(result: SessionResult) -> dict[str, Any]:
    stdout = result.commands[0].stdout
    try:
        report: dict[str, Any] = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON report on stdout:\n{stdout}\n--- stderr ---\n{result.commands[0].stderr[-4000:]}")
    return report


def _installed(result: SessionResult) -> list[str]:
    return [line for line in result.commands[1].stdout.splitlines() if line.endswith(" ii ")]


def _explain(result: SessionResult) -> str:
    first = result.commands[0] if result.commands else None
    if first is None:
        return f"the session ran no command (status {result.status}):\n{result.driver_stderr}"
    return f"rc={first.returncode}\n--- stdout ---\n{first.stdout[-3000:]}\n--- stderr ---\n{first.stderr[-6000:]}"


@pytest.mark.parametrize("latest", ["redirect", "symlink"])
def test_proxied_install_writes_the_iso_and_installs_the_packages(tmp_path: Path, built: WebRoot, latest: str) -> None:
    """-p -i exits 0: both debs installed by dpkg, the disk holds the ISO byte for byte, every request went
    through the proxy, and the JSON report lists every step with the verified artifacts."""
    web = WebServer(built.root, extra_server=built.latest_redirect() if latest == "redirect" else "")
    proxy = Proxy()
    sandbox = Sandbox(tmp_path / "sb")
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        result = sandbox.run(
            [installer_command(web, proxy, disk.path), QUERY], web=web, proxy=proxy, devices=disk.nodes()
        )
        assert _rc(result) == 0, _explain(result)
        assert first_difference(disk.path, built.iso.path) is None
        assert read_device(disk.path, MiB, offset=built.iso.size) == bytes(MiB)

    assert _installed(result) == ["ostree-upgrade 2.0.41 ii ", "ostree-upgrade-bootstrap 2.0.41 ii "]

    proxied = result.proxied_requests()
    for artifact in (*built.debs, built.iso):
        path = "apollo/latest" if artifact is built.iso else artifact.url_path
        assert any(f" {web.url}/{path} " in line for line in proxied), (path, proxied)
    assert any("/packages/SHA256SUMS" in line for line in proxied)
    assert any("/apollo/SHA256SUMS" in line for line in proxied)
    assert len(result.web_access) == len(proxied)  # nothing reached nginx but through the proxy

    report = _report(result)
    assert report["outcome"] == "installed"
    assert report["exit_code"] == 0
    assert [s["name"] for s in report["steps"]] == STEPS
    assert {s["name"]: s["status"] for s in report["steps"]} == {
        "preflight": "ok",
        "proxy": "ok",
        "download": "ok",
        "packages": "ok",
        "write": "ok",
        "reboot": "skipped",
    }
    by_sha = {a["sha256"]: a for a in report["artifacts"]}
    for path, (_, sha) in built.expected().items():
        assert sha in by_sha, path
    assert by_sha[built.iso.sha256]["path"] == f"/data/{built.iso.name}"

    answers = sandbox.read("/var/log/ostree-standin.log").decode()
    assert "answer='y'" in answers
    assert f"wrote {built.iso.size} bytes to {disk.path}" in answers


def test_iso_corrupted_after_checksums_exits_4_and_changes_nothing(tmp_path: Path, built: WebRoot) -> None:
    """An ISO that no longer matches SHA256SUMS: exit 4, the disk still all zeros, no package installed."""
    broken = copy_tree(built, tmp_path / "www")
    corrupt(broken.iso.path)
    web, proxy = WebServer(broken.root), Proxy()
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        result = Sandbox(tmp_path / "sb").run(
            [installer_command(web, proxy, disk.path), QUERY], web=web, proxy=proxy, devices=disk.nodes()
        )
        assert _rc(result) == 4, _explain(result)
        assert is_zero(disk.path, DISK_SIZE)
    assert _installed(result) == []
    report = _report(result)
    assert report["outcome"] == "failed"
    assert report["failed_step"] == "download"
    assert {s["name"]: s["status"] for s in report["steps"]}["write"] == "not run"


def test_a_second_confirmation_prompt_is_answered(tmp_path: Path, built: WebRoot) -> None:
    """When the vendor tool asks a second question ("The disk will be wiped. Continue?") the install still
    completes: the installer answers each prompt."""
    web, proxy = WebServer(built.root), Proxy()
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.write("/etc/ostree-standin.conf", "EXTRA_PROMPT=The disk will be wiped. Continue?\n")
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        result = sandbox.run([installer_command(web, proxy, disk.path)], web=web, proxy=proxy, devices=disk.nodes())
        assert _rc(result) == 0, _explain(result)
        assert first_difference(disk.path, built.iso.path) is None
    assert "The disk will be wiped. Continue?" in sandbox.read("/var/log/ostree-standin.log").decode()


def test_vendor_tool_failing_mid_write_exits_6_and_leaves_no_bootable_start(tmp_path: Path, built: WebRoot) -> None:
    """ostree-production failing after 3 MiB: exit 6, and the start of the disk is wiped, not half an image."""
    web, proxy = WebServer(built.root), Proxy()
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.write("/etc/ostree-standin.conf", f"FAIL_AFTER_BYTES={3 * MiB}\nEXIT_CODE=5\n")
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        result = sandbox.run([installer_command(web, proxy, disk.path)], web=web, proxy=proxy, devices=disk.nodes())
        assert _rc(result) == 6, _explain(result)
        assert read_device(disk.path, MiB) == bytes(MiB)
        assert read_device(disk.path, MiB, offset=2 * MiB) != bytes(MiB)  # the tool did write before failing
    assert _report(result)["failed_step"] == "write"
