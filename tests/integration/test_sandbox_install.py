"""The whole `harmonic-install -p -i` flow with real parts: nginx, tinyproxy, dpkg, the stand-in vendor tool and
a loop device as the disk, in an isolated root whose network namespace has only `lo`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.loopdev import MiB, first_difference, is_zero, loop_device, read_device
from tests.support.sandbox import Command, Proxy, Sandbox, SessionResult, WebServer, installer_command
from tests.support.standin import UPGRADE, DebSpec, WebRoot, build_web_root, copy_tree, corrupt, refresh_sums

pytestmark = pytest.mark.integration

DISK_SIZE = 256 * MiB
STEPS = ["preflight", "record", "proxy", "download", "packages", "write", "firmware", "reboot"]
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
        "record": "ok",  # no UEFI in the sandbox: no record, installed as before
        "proxy": "ok",
        "download": "ok",
        "packages": "ok",
        "write": "ok",
        "firmware": "ok",
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


def test_sigterm_during_the_write_exits_143_and_a_rerun_completes(tmp_path: Path, built: WebRoot) -> None:
    """SIGTERM while ostree-production writes: exit 143 and a wiped disk start; the next run in the same boot
    reuses the verified downloads and installed packages and completes the disk."""
    web, proxy = WebServer(built.root), Proxy()
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.write("/etc/ostree-standin.conf", "BLOCK_DELAY=0.3\n")
    first = installer_command(web, proxy, "DISK")
    script = (
        '"$@" & pid=$!; '
        "until grep -qs answer= /var/log/ostree-standin.log; do sleep 0.1; done; "  # the write has begun
        "sleep 1; kill -TERM $pid; wait $pid"
    )
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        interrupted = Command(("sh", "-c", script, "sh", *(disk.path if a == "DISK" else a for a in first.argv)))
        rerun = installer_command(web, proxy, disk.path, env={"OSTREE_STANDIN_BLOCK_DELAY": "0"})
        result = sandbox.run([interrupted, rerun], web=web, proxy=proxy, devices=disk.nodes())
        assert _rc(result) == 143, _explain(result)
        assert len(result.commands) == 2
        second = result.commands[1]
        assert second.returncode == 0, second.stderr[-4000:]
        assert first_difference(disk.path, built.iso.path) is None
    report = json.loads(result.commands[0].stdout)
    assert report["failed_step"] == "write"
    statuses = {s["name"]: s["status"] for s in json.loads(second.stdout)["steps"]}
    assert statuses["packages"] == "skipped"
    assert all(a["reused"] for a in json.loads(second.stdout)["artifacts"])
    wrote = [ln for ln in sandbox.read("/var/log/ostree-standin.log").decode().splitlines() if " wrote " in ln]
    assert len(wrote) == 1


def _broken_web(tmp_path: Path, kind: str) -> WebRoot:
    if kind == "missing dependency":
        return build_web_root(tmp_path / "www", iso_size=2 * MiB, upgrade=DebSpec(UPGRADE, depends=("ostree-gone",)))
    if kind == "failing postinst":
        return build_web_root(tmp_path / "www", iso_size=2 * MiB, upgrade=DebSpec(UPGRADE, postinst_exit=3))
    web = build_web_root(tmp_path / "www", iso_size=2 * MiB)
    corrupt(web.debs[1].path)
    return refresh_sums(web)  # the checksum matches the broken file: only dpkg can notice


@pytest.mark.parametrize("kind", ["missing dependency", "failing postinst", "corrupt archive with matching sum"])
def test_broken_vendor_debs_exit_5_and_leave_the_disk_alone(tmp_path: Path, kind: str) -> None:
    """dpkg failing (missing dependency, failing postinst, corrupt archive): exit 5, the write never runs."""
    broken = _broken_web(tmp_path, kind)
    web, proxy = WebServer(broken.root), Proxy()
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        result = Sandbox(tmp_path / "sb").run(
            [installer_command(web, proxy, disk.path)], web=web, proxy=proxy, devices=disk.nodes()
        )
        assert _rc(result) == 5, _explain(result)
        assert is_zero(disk.path, 4 * MiB)
    report = _report(result)
    assert report["failed_step"] == "packages"
    assert {s["name"]: s["status"] for s in report["steps"]}["write"] == "not run"


def test_a_hanging_vendor_tool_is_stopped_by_the_write_timeout(tmp_path: Path, built: WebRoot) -> None:
    """ostree-production hanging after its first block: write.timeout_s stops it, exit 6, the disk start wiped."""
    web, proxy = WebServer(built.root), Proxy()
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.write("/etc/ostree-standin.conf", "HANG=write\n")
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        command = installer_command(web, proxy, disk.path, env={"HARMONIC_WRITE_TIMEOUT_S": "3"}, timeout=120)
        result = sandbox.run([command], web=web, proxy=proxy, devices=disk.nodes())
        assert _rc(result) == 6, _explain(result)
        assert read_device(disk.path, MiB) == bytes(MiB)
    assert result.commands[0].duration_s < 60
    assert "hanging at write" in sandbox.read("/var/log/ostree-standin.log").decode()


@pytest.mark.parametrize(("knobs", "rc"), [("NO_PROMPT=1\n", 0), ("FAIL_AT_START=1\nEXIT_CODE=2\n", 6)])
def test_vendor_tool_variants(tmp_path: Path, built: WebRoot, knobs: str, rc: int) -> None:
    """A tool that asks nothing still gets the ISO written (exit 0); one that fails at once gives exit 6."""
    web, proxy = WebServer(built.root), Proxy()
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.write("/etc/ostree-standin.conf", knobs)
    with loop_device(tmp_path, size=DISK_SIZE) as disk:
        result = sandbox.run([installer_command(web, proxy, disk.path)], web=web, proxy=proxy, devices=disk.nodes())
        assert _rc(result) == rc, _explain(result)
        if rc == 0:
            assert first_difference(disk.path, built.iso.path) is None
        else:
            assert is_zero(disk.path, built.iso.size)


def test_a_disk_with_a_mounted_partition_is_refused_before_any_download(tmp_path: Path, built: WebRoot) -> None:
    """A target whose partition is mounted inside the root: exit 3, no request to the server, disk unchanged."""
    web, proxy = WebServer(built.root), Proxy()
    with loop_device(tmp_path, size=DISK_SIZE, partitions=["size=16MiB", ","]) as disk:
        subprocess.run(["mkfs.ext4", "-q", disk.partitions[0]], check=True)
        # Mounting ext4 updates its superblock; what the installer must not touch is the partition table at
        # both ends (an image write starts at byte 0; a failed write's wipe clears the first and last MiB).
        ends = (read_device(disk.path, MiB), read_device(disk.path, MiB, offset=DISK_SIZE - MiB))
        mount = Command(("sh", "-c", f"mkdir -p /mnt/old && mount {disk.partitions[0]} /mnt/old"), stop_on_failure=True)
        result = Sandbox(tmp_path / "sb").run(
            [mount, installer_command(web, proxy, disk.path)], web=web, proxy=proxy, devices=disk.nodes()
        )
        assert len(result.commands) == 2, result.commands[0].stderr
        installer = result.commands[1]
        assert installer.returncode == 3, installer.stderr[-4000:]
        assert "/mnt/old" in installer.stderr
        assert (read_device(disk.path, MiB), read_device(disk.path, MiB, offset=DISK_SIZE - MiB)) == ends
        assert ends[0] != bytes(MiB)
    assert result.web_access == ()


def test_no_such_disk_means_not_a_target_and_nothing_is_fetched(tmp_path: Path, built: WebRoot) -> None:
    """--disk naming a device that does not exist: exit 0 (not a target host) and not one request made."""
    web, proxy = WebServer(built.root), Proxy()
    sandbox = Sandbox(tmp_path / "sb")
    result = sandbox.run([installer_command(web, proxy, "/dev/sdz"), QUERY], web=web, proxy=proxy)
    assert _rc(result) == 0, _explain(result)
    assert _report(result)["outcome"] == "not-a-target"
    assert result.web_access == ()
    assert result.proxy_log
    assert result.proxied_requests() == []
    assert _installed(result) == []
    assert sandbox.host_path("/data") is None
