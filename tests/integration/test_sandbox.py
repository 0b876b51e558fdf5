"""The isolated root itself: network and device isolation, the proxy's allow-list, real dpkg and the stand-in
tool on a loop device, and nothing left behind on the host."""

from __future__ import annotations

import _thread
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.loopdev import MiB, attached_to, first_difference, is_zero, loop_device
from tests.support.sandbox import Command, Proxy, Sandbox, WebServer
from tests.support.standin import DebSpec, WebRoot, build_deb, build_web_root

pytestmark = pytest.mark.integration

ISO_SIZE = 4 * MiB + 2048


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> WebRoot:
    """The stand-in web root shared by this module's tests."""
    return build_web_root(tmp_path_factory.mktemp("sandbox-web") / "www", iso_size=ISO_SIZE)


def _py(code: str) -> Command:
    return Command(("python3", "-c", code))


def _host_mounts_under(path: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if str(path) in line.split()[1]]


def test_only_loopback_and_only_the_given_device(tmp_path: Path) -> None:
    """Inside, non-loopback addresses are unreachable at once and /dev holds only the given loop device."""
    with loop_device(tmp_path, size=4 * MiB) as disk:
        result = Sandbox(tmp_path / "sb").run(
            [
                _py(
                    "import socket\n"
                    "try:\n socket.create_connection(('192.0.2.1', 80), timeout=5); print('connected')\n"
                    "except OSError as e: print('refused', e.errno)"
                ),
                Command(("sh", "-c", "ls /dev; ls /sys/class/net")),
            ],
            devices=disk.nodes(),
        )
    net, dev = result.commands
    assert net.stdout.strip() == "refused 101"  # ENETUNREACH: no route at all, not a timeout
    assert net.duration_s < 3
    names = dev.stdout.split()
    assert disk.name in names
    assert "lo" in names
    assert not [n for n in names if n.startswith(("sd", "vd", "nvme", "eth", "en"))]


def test_proxy_forwards_only_to_the_web_server(tmp_path: Path, web: WebRoot) -> None:
    """Through tinyproxy the web server answers and is logged; any other host is refused with 403."""
    fetch = (
        "import urllib.request as u, urllib.error as e\n"
        "o = u.build_opener(u.ProxyHandler({'http': 'http://127.0.0.1:3128'}))\n"
        "for url in ('http://127.0.0.2:8080/packages/SHA256SUMS', 'http://127.0.0.3:8080/packages/SHA256SUMS'):\n"
        "    try: print(o.open(url).status)\n"
        "    except e.HTTPError as x: print(x.code)\n"
    )
    result = Sandbox(tmp_path / "sb").run([_py(fetch)], web=WebServer(web.root), proxy=Proxy())
    assert result.commands[0].stdout.split() == ["200", "403"]
    assert result.proxied_requests() == [
        "GET http://127.0.0.2:8080/packages/SHA256SUMS HTTP/1.1",
        "GET http://127.0.0.3:8080/packages/SHA256SUMS HTTP/1.1",
    ]
    assert any('"GET /packages/SHA256SUMS HTTP/1.1" 200' in line for line in result.web_access)
    assert len(result.web_access) == 1


def test_real_dpkg_and_the_standin_tool_write_the_loop_device(tmp_path: Path, web: WebRoot) -> None:
    """dpkg installs both stand-in debs in the root; ostree-production answered 'y' writes the ISO to the disk."""
    sandbox = Sandbox(tmp_path / "sb")
    debs = " ".join(f"/media/root-rw/{d.name}" for d in web.debs)
    iso = f"/data/{web.iso.name}"
    for deb in web.debs:
        sandbox.write(f"/media/root-rw/{deb.name}", deb.path.read_bytes())
    sandbox.write(iso, web.iso.path.read_bytes())
    with loop_device(tmp_path, size=8 * MiB) as disk:
        result = sandbox.run(
            [
                Command(("sh", "-c", f"dpkg -i {debs}"), stop_on_failure=True),
                Command(("dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n", "ostree-upgrade*")),
                Command(("ostree-production", "list-isos")),
                Command(("ostree-production", "-D", disk.path, "from", iso), stdin="y\n"),
            ],
            devices=disk.nodes(),
        )
        install, query, listing, write = result.commands
        assert install.returncode == 0, install.stdout + install.stderr
        assert query.stdout.splitlines() == [
            "ostree-upgrade 2.0.41 install ok installed",
            "ostree-upgrade-bootstrap 2.0.41 install ok installed",
        ]
        assert web.iso.name in listing.stdout
        assert write.returncode == 0, write.stdout
        assert first_difference(disk.path, web.iso.path) is None
    assert b"ostree-upgrade 2.0.41 configured" in sandbox.read("/var/log/ostree-standin-dpkg.log")
    # A second sandbox starts from the clean cache: nothing of the first one's install is there.
    fresh = Sandbox(tmp_path / "sb2").run([Command(("dpkg-query", "-W", "ostree-upgrade"))])
    assert fresh.commands[0].returncode == 1


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        (DebSpec("ostree-upgrade", "2.0.41", depends=("ostree-nonexistent",)), "unpacked"),
        (DebSpec("ostree-upgrade", "2.0.41", postinst_exit=4), "half-configured"),
    ],
)
def test_broken_debs_fail_in_real_dpkg(tmp_path: Path, spec: DebSpec, status: str) -> None:
    """A missing dependency or a failing postinst makes dpkg -i fail and leaves the package not installed."""
    deb = build_deb(spec, tmp_path / "debs")
    sandbox = Sandbox(tmp_path / "sb")
    sandbox.write(f"/media/root-rw/{deb.name}", deb.read_bytes())
    result = sandbox.run(
        [
            Command(("dpkg", "-i", f"/media/root-rw/{deb.name}")),
            Command(("dpkg-query", "-W", "-f", "${db:Status-Status}", "ostree-upgrade")),
        ]
    )
    install, query = result.commands
    assert install.returncode == 1
    assert query.stdout == status


def test_nothing_is_left_on_the_host(tmp_path: Path, web: WebRoot) -> None:
    """After a session (even one killed by its timeout) no mount, process or loop device of it remains."""
    sandbox = Sandbox(tmp_path / "sb")
    with loop_device(tmp_path, size=4 * MiB) as disk:
        result = sandbox.run(
            [Command(("sleep", "600"))], web=WebServer(web.root), proxy=Proxy(), devices=disk.nodes(), timeout=5
        )
        assert result.commands == ()  # killed before it could report
        assert is_zero(disk.path, 4 * MiB)
    assert attached_to(disk.backing) == []
    assert _host_mounts_under(tmp_path) == []
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == ""


def test_an_interrupted_caller_passes_sigint_to_the_command(tmp_path: Path) -> None:
    """Ctrl-C in the process calling Sandbox.run reaches the command inside (unshare alone would swallow it)."""
    sandbox = Sandbox(tmp_path / "sb")
    catch = "import time\ntry:\n time.sleep(120)\nexcept KeyboardInterrupt:\n print('got SIGINT'); raise SystemExit(9)"
    timer = threading.Timer(2, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            sandbox.run([_py(catch)])
    finally:
        timer.cancel()
    assert time.monotonic() - started < 20
    results = json.loads((tmp_path / "sb/session-1/results.json").read_text())
    assert results["status"] == 130
    assert results["commands"][0]["returncode"] == 9
    assert (tmp_path / "sb/session-1/cmd-0.stdout").read_text() == "got SIGINT\n"
