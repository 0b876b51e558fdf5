"""One UEFI server across its boots (issue 11): the install, the disk's boot, MAAS powering the server on again.

A `Server` is a UEFI machine (OVMF, its own NVRAM kept across its boots, the network-boot stand-in first in the
firmware's order: vm.Uefi) with one target disk, as close to a server under MAAS as QEMU allows:

- `network_boot()` stands for a power-on by MAAS, which forces a one-time network boot: the in-memory OS comes
  up (here from -kernel/-initrd) and runs the installer, from the baked unit or from the user-data. The web
  server, the proxy and the MAAS stand-in run for this boot only, so their logs are this boot's.
- `firmware_boot()` stands for the reboot that follows, which MAAS does not turn into a network boot: no kernel,
  no in-memory OS; the firmware boots by BootNext or else by its order, whose first entry is the network-boot
  stand-in. Each bootable disk prints one marker line and powers off (tests/support/bootable.py), so the serial
  log says which one the firmware chose: `HARMONIC-COS-STANDIN <release>` (the target disk) or `NETBOOT-STANDIN`.

What the host cannot see from outside (dpkg's database, the stand-in vendor tool's log, the firmware's boot
entries as the guest sees them) the guest prints at shutdown as `E2E-REPORT ...` lines, from a small unit of the
test layer (`e2e-guest.service`). The same unit turns `e2e.standin.KEY=VALUE` kernel parameters into the stand-in
tool's conf file (/etc/ostree-standin.conf), so one image serves a tool that creates its own boot entry and one
that does not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e import scenarios, vm
from tests.support import bootable, standin
from tests.support.maas_server import running
from tests.support.nginx import serve

FIRMWARE_TIMEOUT_S = 300.0
WIPE_MIB = 4

GUEST_SCRIPT = r"""#!/bin/sh
# e2e guest helper (tests/e2e/lifecycle.py).
#   start:  the stand-in vendor tool's knobs from the kernel command line (e2e.standin.KEY=VALUE) into its conf file
#   report: at shutdown, what the host cannot see from outside, as E2E-REPORT lines on the serial console
set -u
case "${1:-}" in
start)
  : >/etc/ostree-standin.conf
  for arg in $(cat /proc/cmdline); do
    case "$arg" in e2e.standin.*=*) echo "${arg#e2e.standin.}" >>/etc/ostree-standin.conf ;; esac
  done
  (wc -l </var/log/dpkg.log || echo 0) >/run/e2e-dpkg-log-lines 2>/dev/null
  sed 's/^/E2E-REPORT conf /' /etc/ostree-standin.conf
  ;;
report)
  echo "E2E-REPORT begin"
  dpkg-query -W -f='E2E-REPORT dpkg ${db:Status-Abbrev} ${Package} ${Version}\n' \
    ostree-upgrade-bootstrap ostree-upgrade 2>/dev/null
  tail -n +$(( $(cat /run/e2e-dpkg-log-lines 2>/dev/null || echo 0) + 1 )) /var/log/dpkg.log 2>/dev/null \
    | sed 's/^/E2E-REPORT dpkg.log /'
  [ -f /var/log/ostree-standin.log ] && sed 's/^/E2E-REPORT tool /' /var/log/ostree-standin.log
  efibootmgr -v 2>&1 | sed 's/^/E2E-REPORT efi /'
  echo "E2E-REPORT end"
  ;;
esac
exit 0
"""

GUEST_UNIT = """[Unit]
Description=e2e guest helper: stand-in tool knobs at start, a report on the serial console at shutdown
Before=harmonic-installer.service cloud-final.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/e2e-guest start
ExecStop=/usr/local/sbin/e2e-guest report
StandardOutput=journal+console
StandardError=journal+console
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
"""

_GUEST_FILES = {"usr/local/sbin/e2e-guest": GUEST_SCRIPT, "etc/systemd/system/e2e-guest.service": GUEST_UNIT}


def layer(build: scenarios.InstallerBuild, kind: scenarios.Kind) -> vm.Layer:
    """The image of a lifecycle server: the guest helper, plus the project's .deb and enabled unit when baked."""
    modes = {"usr/local/sbin/e2e-guest": 0o755}
    if kind == "baked":
        return vm.Layer(
            files=_GUEST_FILES, modes=modes, debs=(build.deb,), enable=(scenarios.UNIT, "e2e-guest.service")
        )
    return vm.Layer(files=_GUEST_FILES, modes=modes, enable=("e2e-guest.service",))


def sha256_file(path: Path) -> str:
    """SHA-256 of a whole file (the target disk), hex."""
    return standin.sha256_file(path)


@dataclass(frozen=True, slots=True)
class GuestReport:
    """The E2E-REPORT lines the guest printed at shutdown."""

    complete: bool  # begin and end both seen
    dpkg: tuple[str, ...]  # "ii ostree-upgrade 2.0.41" per vendor package known to dpkg
    dpkg_log: tuple[str, ...]  # lines dpkg added to /var/log/dpkg.log during this boot
    tool: tuple[str, ...]  # the stand-in vendor tool's log (/var/log/ostree-standin.log)
    efi: tuple[str, ...]  # `efibootmgr -v` at shutdown

    @classmethod
    def parse(cls, lines: Sequence[vm.SerialLine]) -> GuestReport:
        """Collect the report from a boot's serial lines."""
        parts: dict[str, list[str]] = {"dpkg": [], "dpkg.log": [], "tool": [], "efi": []}
        begin = end = False
        for line in lines:
            at = line.text.find("E2E-REPORT ")
            if at < 0:
                continue
            kind, _, rest = line.text[at + len("E2E-REPORT ") :].partition(" ")
            begin |= kind == "begin"
            end |= kind == "end"
            if kind in parts:
                parts[kind].append(" ".join(rest.split()))
        return cls(
            begin and end,
            tuple(parts["dpkg"]),
            tuple(parts["dpkg.log"]),
            tuple(parts["tool"]),
            tuple(parts["efi"]),
        )

    def installed_packages(self) -> set[str]:
        """Vendor packages dpkg reports as installed (ii)."""
        return {p.split()[1] for p in self.dpkg if p.startswith("ii ") and len(p.split()) >= 2}

    def tool_wrote(self) -> list[str]:
        """The stand-in tool's "wrote N bytes to DISK" log lines."""
        return [line for line in self.tool if " wrote " in line]


_LAST_WORD = re.compile(r"harmonic-install: \S")  # the program's one-line verdict (the journal prefix has a pid)


def explain(result: vm.VmResult, history: str = "", lines: int = 60) -> str:
    """Why a boot failed a check: outcome, QEMU's stderr, the last serial lines (and the boots before it)."""
    tail = "\n".join(x.text for x in result.lines[-lines:])
    head = f"outcome={result.outcome} rc={result.returncode} after {result.duration_s:.0f} s"
    head += f"; serial log {result.serial_log}"
    stderr = result.qemu_stderr.strip() or "(empty)"
    before = f"\nboots so far: {history}" if history else ""
    last = [x.text for x in result.lines if _LAST_WORD.search(x.text)]
    said = f"\nthe installer's last word: {last[-1]}" if last else ""
    return f"{head}{before}{said}\nQEMU stderr: {stderr}\nlast serial lines:\n{tail}"


@dataclass(frozen=True, slots=True)
class NetworkBoot:
    """One network boot of the server (the in-memory OS) as the host saw it."""

    name: str
    vm: vm.VmResult
    web: standin.WebRoot
    requests: tuple[str, ...]  # nginx access log of this boot
    maas_events: tuple[dict[str, object], ...]
    disk_before: str
    disk_after: str
    history: str

    def events(self) -> list[dict[str, object]]:
        """The installer's log lines on the serial console, read back (log.find_line)."""
        return scenarios.log_events(self.vm.lines)

    def event(self, name: str) -> dict[str, object] | None:
        """The last event called `name`, if any."""
        found = [e for e in self.events() if e.get("event") == name]
        return found[-1] if found else None

    def report(self) -> GuestReport:
        """What the guest reported at shutdown."""
        return GuestReport.parse(self.vm.lines)

    def paths(self, method: str = "GET") -> list[str]:
        """URL paths requested from the web server during this boot with `method`."""
        return scenarios.request_paths([r for r in self.requests if f'"{method} ' in r])

    def artifact_requests(self) -> list[str]:
        """GETs of a deb or the ISO (what an already-installed host must not fetch; a HEAD transfers no byte)."""
        iso = {"/apollo/latest", f"/{self.web.iso.url_path}"}
        return [p for p in self.paths() if p in iso or p.endswith((".deb", ".iso"))]

    def explain(self) -> str:
        """The failure message for a check on this boot."""
        return f"[{self.name}] " + explain(self.vm, self.history)


@dataclass(frozen=True, slots=True)
class FirmwareBoot:
    """One power-on without network boot: which disk the firmware booted."""

    name: str
    vm: vm.VmResult
    history: str

    @property
    def booted(self) -> str | None:
        """The marker line the booted disk's OS printed, if any."""
        line = self.vm.first(rf"^({bootable.APOLLO_MARKER} \S+|{bootable.NETBOOT_MARKER})$")
        return line.text if line else None

    @property
    def loaded(self) -> str | None:
        """OVMF's `BdsDxe: loading Boot#### "label" from ...` line for the entry it booted."""
        line = self.vm.first(r"BdsDxe: loading Boot[0-9A-F]{4} ")
        return line.text[line.text.find("BdsDxe:") :] if line else None

    @property
    def entry(self) -> str | None:
        """The Boot#### the firmware loaded."""
        m = re.search(r"BdsDxe: loading (Boot[0-9A-F]{4})", self.loaded or "")
        return m.group(1) if m else None

    def explain(self) -> str:
        """The failure message for a check on this boot."""
        return f"[{self.name}] booted {self.booted!r} via {self.loaded!r}\n" + explain(self.vm, self.history, 30)


_END = r"harmonic-install: FAILED|reboot: Restarting system|reboot: Power down|Kernel panic"


def _run_installer(spec: vm.VmSpec, workdir: Path, *, timeout: float, name: str) -> vm.VmResult:
    """One network boot: wait for the guest to reboot; after a FAILED installer, press the power button at once.

    A failed run leaves the in-memory OS up (for an operator to inspect), so without the power button a failing
    test would wait for the whole timeout.
    """
    with vm.Vm(spec, workdir, name=name) as machine:
        try:
            end = machine.wait_for(_END, timeout=timeout)
        except TimeoutError:
            return machine.wait(timeout=1)
        if "FAILED" in end.text:
            time.sleep(3)  # let systemd and cloud-init log the end of the run
            return machine.power_off(timeout=300)
        return machine.wait(timeout=60)


@dataclass
class Server:
    """A UEFI server with one target disk, booted again and again with the same disk and NVRAM."""

    workdir: Path
    base: vm.Image
    build: scenarios.InstallerBuild
    kind: scenarios.Kind = "baked"
    image: vm.Image = field(init=False)
    disk: Path = field(init=False)
    uefi: vm.Uefi = field(init=False)
    power_on: vm.VmResult = field(init=False)
    boots: list[NetworkBoot | FirmwareBoot] = field(init=False, default_factory=list)
    _seed: Path | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.image = vm.layered_image(self.base, layer(self.build, self.kind))
        self.disk = vm.blank_disk(self.workdir / "sda.img", scenarios.DISK_MIB)
        netboot = bootable.netboot_image(vm.cache_dir(), self.base.kernel)
        self.uefi, self.power_on = vm.uefi_machine(self.workdir, netboot.path, image=self.image, disk=self.disk)
        if bootable.NETBOOT_MARKER not in self.power_on.serial:
            raise AssertionError(
                "the first power-on did not reach the network-boot stand-in\n" + explain(self.power_on)
            )

    def history(self) -> str:
        """One entry per boot so far: name, what it ended with, how long it took."""
        parts = [f"power-on {self.power_on.duration_s:.0f} s"]
        for b in self.boots:
            what = b.booted if isinstance(b, FirmwareBoot) else b.vm.outcome
            parts.append(f"{b.name} {what} {b.vm.duration_s:.0f} s")
        return ", ".join(parts)

    def apollo(self, release: str) -> bootable.BootImage:
        """The stand-in Apollo image of `release` (cached)."""
        return bootable.apollo_image(vm.cache_dir(), self.base.kernel, release)

    def web_tree(self, name: str, release: str = standin.DEFAULT_RELEASE) -> standin.WebRoot:
        """A web server tree whose "ISO" is the bootable stand-in Apollo image of `release`."""
        root = self.workdir / name
        web = standin.build_web_root(root, release=release, image=self.apollo(release).path)
        if self.kind == "ephemeral":
            (root / "scripts").mkdir(exist_ok=True)
            (root / scenarios.PYZ_URL_PATH).write_bytes(self.build.pyz.read_bytes())
        return web

    def network_boot(
        self,
        web: standin.WebRoot,
        *,
        cmdline: Sequence[str] = (),
        standin_knobs: Mapping[str, str] | None = None,
        redirect_latest: bool = False,
        timeout: float = scenarios.TIMEOUT_S,
    ) -> NetworkBoot:
        """Power on with a network boot: the in-memory OS runs the installer; return once the guest shuts down.

        Args:
            web: the web server's tree for this boot.
            cmdline: more kernel parameters (e.g. harmonic.install.reimage=1, as a MAAS tag would add).
            standin_knobs: the stand-in vendor tool's conf for this boot (e.g. CREATE_BOOT_ENTRY=1).
            redirect_latest: answer /apollo/latest with a 302 to the ISO's name (instead of the symlink).
        """
        name = f"{len(self.boots) + 1}-net"
        knobs = [f"e2e.standin.{k}={v}" for k, v in (standin_knobs or {}).items()]
        before = sha256_file(self.disk)
        extra = web.latest_redirect() if redirect_latest else ""
        with serve(web.root, extra_server=extra) as nginx, running() as maas:
            server_url = f"http://{vm.WEB_IP}"
            if self.kind == "ephemeral" and self._seed is None:
                # MAAS hands the same user-data (and instance) to every network boot of a deployed machine.
                self._seed = scenarios.nocloud_seed(self.workdir, scenarios.user_data(server_url, self.build.pyz))
            endpoint = maas.endpoint(scenarios.MAAS_HOST_PORT)
            spec = vm.VmSpec(
                image=self.image,
                disk=self.disk,
                forwards=[
                    vm.Forward(vm.WEB_IP, 80, nginx.port),
                    vm.Forward(scenarios.MAAS_IP, scenarios.MAAS_PORT, maas.port),
                ],
                cmdline=[
                    *scenarios.kernel_cmdline(server_url, baked=self.kind == "baked"),
                    *maas.kernel_params(endpoint),
                    *knobs,
                    *cmdline,
                ],
                seed=self._seed,
                uefi=self.uefi,
                boot="network",
            )
            result = _run_installer(spec, self.workdir, timeout=timeout, name=name)
            requests = tuple(nginx.requests())
            events = tuple(maas.received())
        boot = NetworkBoot(name, result, web, requests, events, before, sha256_file(self.disk), self.history())
        self.boots.append(boot)
        return boot

    def firmware_boot(self, timeout: float = FIRMWARE_TIMEOUT_S) -> FirmwareBoot:
        """Power on with no network boot: the firmware boots a disk by BootNext or its order."""
        name = f"{len(self.boots) + 1}-fw"
        spec = vm.VmSpec(image=self.image, disk=self.disk, uefi=self.uefi, boot="firmware")
        result = vm.run(spec, self.workdir, timeout=timeout, name=name)
        boot = FirmwareBoot(name, result, self.history())
        self.boots.append(boot)
        return boot

    def wipe(self, mib: int = WIPE_MIB) -> None:
        """Zero the disk's first MiBs from the host (the partition table and the start of the ESP)."""
        with self.disk.open("r+b") as fh:
            fh.write(b"\0" * (mib * 1024 * 1024))

    def disk_holds(self, image: bootable.BootImage) -> bool:
        """The disk starts with exactly the image's bytes and holds nothing else."""
        data = image.path.read_bytes()
        with self.disk.open("rb") as fh:
            head = fh.read(len(data))
        return head == data and vm.nonzero_bytes(self.disk) == len(data) - data.count(0)
