"""The end-to-end scenarios, shared by the tests (tests/e2e/test_scenarios.py) and `make demo`.

One scenario = a stand-in web server tree (tests/support/standin.py) served by a real nginx, a real tinyproxy,
a blank target disk, and one boot of the guest that runs the installer either from the baked image (the
project's .deb installed, its unit enabled, settings on the kernel command line) or from a NoCloud seed
carrying the user-data rendered by `harmonic-install user-data`. Everything is judged from the host after
QEMU exits: the disk's bytes, the serial console, the web server's and the proxy's logs.

The guest's network (QEMU user networking, restrict=on):
    10.0.2.100:80    -> nginx on 127.0.0.1 (the web server, reached directly: inside no_proxy 10.0.2.0/24)
    10.0.2.101:3128  -> tinyproxy on 127.0.0.1, which forwards only to 127.0.0.2
    127.0.0.2:<port>    a second nginx on the host serving the same tree; inside the guest that address is
                        the guest's own loopback, so it can only be reached through the proxy.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harmonic_installer.log import find_line
from tests.e2e import vm
from tests.e2e.proxy import Proxy, tinyproxy
from tests.support import standin
from tests.support.maas_api import MaasApi
from tests.support.maas_server import MaasServer, running
from tests.support.nginx import Nginx, serve

REPO = Path(__file__).resolve().parents[2]
PYZ_URL_PATH = "scripts/harmonic-install.pyz"  # where the user-data fetches the zipapp (userdata.PYZ_URL_PATH)
UNIT = "harmonic-installer.service"
STEPS = ("preflight", "record", "proxy", "download", "packages", "write", "firmware", "reboot")
ISO_SIZE = 24 * 1024 * 1024 + 3 * 2048  # "some tens of MiB", and not a whole number of MiB
DISK_MIB = 96
PROXY_PORT = 3128
NO_PROXY = "localhost,127.0.0.1,10.0.2.0/24"
TIMEOUT_S = float(os.environ.get("HARMONIC_TEST_E2E_TIMEOUT", "900"))

Kind = Literal["baked", "ephemeral"]


# ---------------------------------------------------------------------------------------------------------
# What the installer ships: the .deb (baked image) and the zipapp (ephemeral deploy).


@dataclass(frozen=True, slots=True)
class InstallerBuild:
    """The project's own artifacts under test."""

    deb: Path
    pyz: Path


def build_installer(*, make: bool = True) -> InstallerBuild:
    """Build (`make deb pyz`) and locate dist/harmonic-installer_<ver>_all.deb and dist/harmonic-install.pyz.

    HARMONIC_TEST_E2E_DEB / HARMONIC_TEST_E2E_PYZ point at prebuilt files instead (CI artifacts).
    """
    deb_env, pyz_env = os.environ.get("HARMONIC_TEST_E2E_DEB"), os.environ.get("HARMONIC_TEST_E2E_PYZ")
    if make and not (deb_env and pyz_env):
        subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "deb", "pyz"], check=True)
    debs = sorted(glob.glob(str(REPO / "dist" / "harmonic-installer_*_all.deb")), key=os.path.getmtime)
    deb = Path(deb_env) if deb_env else (Path(debs[-1]) if debs else None)
    pyz = Path(pyz_env) if pyz_env else REPO / "dist" / "harmonic-install.pyz"
    if deb is None or not deb.exists():
        raise FileNotFoundError("no dist/harmonic-installer_*_all.deb: `make deb` did not produce one")
    if not pyz.exists():
        raise FileNotFoundError(f"no {pyz}: `make pyz` did not produce it")
    return InstallerBuild(deb, pyz)


def baked_layer(build: InstallerBuild) -> vm.Layer:
    """The baked image: the project's .deb installed with dpkg and its unit enabled (as Packer would)."""
    return vm.Layer(debs=(build.deb,), enable=(UNIT,))


# ---------------------------------------------------------------------------------------------------------
# The web server tree.


def web_tree(root: Path, build: InstallerBuild | None, *, corrupt_iso: bool = False) -> standin.WebRoot:
    """Stand-in debs, ISO and SHA256SUMS (+ the zipapp under scripts/); optionally an ISO that fails its sum."""
    web = standin.build_web_root(root, iso_size=ISO_SIZE)
    if build is not None:
        (root / "scripts").mkdir(exist_ok=True)
        (root / PYZ_URL_PATH).write_bytes(build.pyz.read_bytes())
    if corrupt_iso:
        standin.corrupt(web.iso.path)  # after SHA256SUMS was written: the download must fail to verify
    return web


# ---------------------------------------------------------------------------------------------------------
# One scenario run.


@dataclass(frozen=True, slots=True)
class Scenario:
    """How the guest is started and which server it is told to use."""

    kind: Kind
    via_proxy: bool = False  # server on 127.0.0.2 (reachable only through the proxy) instead of 10.0.2.100
    expect_failure: bool = False  # wait for the installer's FAILED line, then press the power button
    live: bool = False  # copy the serial console to our stdout as it arrives
    latest_redirect: bool = False  # the proxied server answers apollo/latest with nginx `return 302` (issue 12)
    python3: Literal["3.10", "3.11"] = "3.10"  # the guest's /usr/bin/python3: the target's 3.10, or Debian's 3.11


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """Everything observed about one run, from the host."""

    scenario: Scenario
    vm: vm.VmResult
    disk: Path
    web: standin.WebRoot
    direct_requests: tuple[str, ...]  # nginx reached through guestfwd 10.0.2.100
    proxied_requests: tuple[str, ...]  # nginx on 127.0.0.2, only reachable through tinyproxy
    proxy_log: tuple[str, ...]  # request lines tinyproxy handled
    server_url: str
    maas: MaasServer  # the stand-in MAAS status endpoint the installer reported to (stopped; events kept)
    timings: dict[str, float] = field(default_factory=dict)

    def events(self) -> list[dict[str, object]]:
        """The installer's log lines found on the serial console, read back (log.find_line)."""
        return log_events(self.vm.lines)

    def python_version(self) -> str | None:
        """The Python the installer ran on in the guest (its `install.started` event), e.g. '3.10.13'."""
        started = [e for e in self.events() if e.get("event") == "install.started"]
        return str(started[0].get("python")) if started else None

    def finished_steps(self) -> dict[str, dict[str, object]]:
        """step name -> its `step.finished` (or `step.failed`) event."""
        steps: dict[str, dict[str, object]] = {}
        for e in self.events():
            if e.get("event") in ("step.finished", "step.failed") and isinstance(e.get("step"), str):
                steps[str(e["step"])] = e
        return steps

    def disk_holds_iso(self) -> bool:
        """The disk starts with exactly the ISO's bytes and holds nothing else."""
        iso = self.web.iso.path.read_bytes()
        with self.disk.open("rb") as fh:
            head = fh.read(len(iso))
        return head == iso and vm.nonzero_bytes(self.disk) == len(iso) - iso.count(0)


def log_events(lines: Sequence[vm.SerialLine]) -> list[dict[str, object]]:
    """The installer's log lines among serial lines, read back with log.find_line (past a journal+console or
    cloud-init prefix) as dicts shaped like JSON log records; `_t`: when the line was seen."""
    found = []
    for line in lines:
        parsed = find_line(line.text)
        if parsed is not None:
            found.append({**parsed.as_event(), "_t": line.t})
    return found


def kernel_cmdline(server_url: str, *, baked: bool) -> list[str]:
    """Installer settings on the kernel command line (the MAAS way to pass per-machine options)."""
    args = [
        f"harmonic.server.url={server_url}",
        f"harmonic.proxy.url=http://{vm.PROXY_IP}:{PROXY_PORT}",
        f"harmonic.proxy.no_proxy={NO_PROXY}",
        "harmonic.disk.device=/dev/sda",
        "harmonic.download.attempts=3",
        "harmonic.download.backoff_max_s=2",
    ]
    return (["harmonic.install=1"] if baked else []) + args


def user_data(server_url: str, pyz: Path) -> str:
    """The cloud-config rendered by `harmonic-install user-data` for this server and zipapp."""
    exe = REPO / ".venv" / "bin" / "harmonic-install"
    argv = [str(exe), "user-data", "--server-url", server_url, "--pyz", str(pyz)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return out.stdout


def nocloud_seed(workdir: Path, user_data_text: str) -> Path:
    """A NoCloud seed disk (cloud-localds): the user-data and a fresh instance id."""
    (workdir / "user-data").write_text(user_data_text)
    (workdir / "meta-data").write_text(f"instance-id: e2e-{uuid.uuid4().hex[:12]}\nlocal-hostname: harmonic-e2e\n")
    seed = workdir / "seed.img"
    subprocess.run(
        ["cloud-localds", str(seed), str(workdir / "user-data"), str(workdir / "meta-data")],
        check=True,
    )
    return seed


@contextlib.contextmanager
def servers(root: Path, workdir: Path, *, proxied_extra: str = "") -> Iterator[tuple[Nginx, Nginx, Proxy]]:
    """The direct web server (127.0.0.1), the proxied one (127.0.0.2, plus `proxied_extra` in its server
    block) and tinyproxy, all on loopback."""
    with (
        serve(root) as direct,
        serve(root, host="127.0.0.2", extra_server=proxied_extra) as proxied,
        tinyproxy(workdir / "proxy", allow=("127.0.0.2",)) as proxy,
    ):
        yield direct, proxied, proxy


def run_scenario(
    scenario: Scenario,
    workdir: Path,
    *,
    base: vm.Image,
    build: InstallerBuild,
    web: standin.WebRoot,
    timeout: float = TIMEOUT_S,
    rest_maas: tuple[MaasApi, str] | None = None,
) -> ScenarioResult:
    """Boot the guest for one scenario and return what the host saw.

    With `rest_maas` (a stand-in MAAS REST API and the machine's system_id) the installer reports to that
    server's status endpoint instead, so its events reach the REST API's event log (`result.maas` stays empty).
    """
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    baked = scenario.kind == "baked"
    image = vm.layered_image(base, baked_layer(build)) if baked else base
    timings["image_s"] = time.monotonic() - t0
    disk = vm.blank_disk(workdir / "sda.img", DISK_MIB)
    proxied_extra = web.latest_redirect() if scenario.latest_redirect else ""
    with servers(web.root, workdir, proxied_extra=proxied_extra) as (direct, proxied, proxy), running() as maas:
        server_url = f"http://{proxied.host}:{proxied.port}" if scenario.via_proxy else f"http://{vm.WEB_IP}"
        seed = None
        if not baked:
            seed = nocloud_seed(workdir, user_data(server_url, build.pyz))
        spec = vm.VmSpec(
            image=image,
            disk=disk,
            forwards=[
                vm.Forward(vm.WEB_IP, 80, direct.port),
                vm.Forward(vm.PROXY_IP, PROXY_PORT, proxy.port),
                vm.Forward(MAAS_IP, MAAS_PORT, rest_maas[0].port if rest_maas else maas.port),
            ],
            # MAAS gives the ephemeral OS its reporting endpoint; here it comes as harmonic.maas.* parameters.
            cmdline=kernel_cmdline(server_url, baked=baked)
            + (
                rest_maas[0].kernel_params(rest_maas[1], MAAS_HOST_PORT)
                if rest_maas
                else maas.kernel_params(maas.endpoint(MAAS_HOST_PORT))
            )
            + ([vm.GUEST_PYTHON_SWITCH] if scenario.python3 == "3.11" else []),
            seed=seed,
        )
        t1 = time.monotonic()
        with vm.Vm(spec, workdir, live=scenario.live, name=scenario.kind) as machine:
            if scenario.expect_failure:
                with contextlib.suppress(TimeoutError):
                    machine.wait_for(r"harmonic-install: FAILED", timeout=timeout)
                    time.sleep(3)  # let systemd and cloud-init log the unit's end
                maas.wait_for(_parent_finished, timeout=30)  # the final FAIL leaves before the power button
                result = machine.power_off(timeout=300)
            else:
                result = machine.wait(timeout=timeout)
        timings["vm_s"] = time.monotonic() - t1
        return ScenarioResult(
            scenario=scenario,
            vm=result,
            disk=disk,
            web=web,
            direct_requests=tuple(direct.requests()),
            proxied_requests=tuple(proxied.requests()),
            proxy_log=tuple(proxy.requests()),
            server_url=server_url,
            maas=maas,
            timings=timings,
        )


MAAS_IP = "10.0.2.103"  # the stand-in MAAS, forwarded to a loopback port on the host
MAAS_PORT = 5248
MAAS_HOST_PORT = f"{MAAS_IP}:{MAAS_PORT}"


def _parent_finished(events: list[dict[str, object]]) -> bool:
    return any(e.get("event_type") == "finish" and e.get("name") == "harmonic-installer" for e in events)


def request_paths(lines: Sequence[str]) -> list[str]:
    """URL paths of nginx access-log lines ('GET /packages/x.deb HTTP/1.1' -> '/packages/x.deb')."""
    paths = []
    for line in lines:
        m = re.search(r'"[A-Z]+ (\S+) HTTP/[\d.]+"', line)
        if m:
            paths.append(m.group(1))
    return paths
