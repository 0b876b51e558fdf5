"""Issue 11 in a VM: a server is installed once, boots Harmonic cOS from its disk, and later network boots leave it.

Each test is one UEFI server (tests/e2e/lifecycle.py: OVMF, its own NVRAM kept across boots, the network-boot
stand-in first in the firmware's order) booted several times with the same disk: network boots (the in-memory OS,
as MAAS's forced PXE boot gives it) and firmware boots (the reboot that follows: BootNext, else the order). The
"ISO" on the web server is a bootable stand-in Apollo image whose OS prints `HARMONIC-COS-STANDIN <release>`, so a
firmware boot that reaches the disk shows it on the serial console, and one that does not shows `NETBOOT-STANDIN`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import scenarios, vm
from tests.e2e.lifecycle import FirmwareBoot, NetworkBoot, Server
from tests.support import bootable, standin

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

RELEASE = standin.DEFAULT_RELEASE
NEWER = "release-3.22.1.0-2+auto4"
VENDOR_LABEL = "CableOS"  # the stand-in tool's default BOOT_ENTRY_LABEL (the installer's own entry: "Harmonic cOS")
VENDOR_ENTRY = {"CREATE_BOOT_ENTRY": "1"}
REIMAGE = "harmonic.install.reimage=1"


@pytest.fixture
def server(base_image: vm.Image, installer_build: scenarios.InstallerBuild, e2e_dir: Path) -> Server:
    """A new UEFI server (fresh NVRAM, blank disk, baked image) after its first power-on."""
    missing = bootable.missing_tools()
    if missing:
        pytest.fail(f"the UEFI VM tests need {', '.join(missing)}: run scripts/bootstrap.sh")
    return Server(e2e_dir, base_image, installer_build, "baked")


def _boot_next(boot: NetworkBoot) -> str:
    """The Boot#### the installer set BootNext to (its firmware.boot_next_set event)."""
    event = boot.event("firmware.boot_next_set")
    assert event is not None, f"no firmware.boot_next_set event\n{boot.explain()}"
    return str(event.get("entry"))


def assert_installed(server: Server, boot: NetworkBoot, image: bootable.BootImage) -> str:
    """A network boot that installed `image`: downloaded, dpkg, one vendor write, the disk holds it, BootNext set.

    Returns the Boot#### BootNext points at.
    """
    assert boot.vm.outcome == "reboot", boot.explain()
    assert server.disk_holds(image), f"the disk does not hold exactly {image.line}'s image\n{boot.explain()}"
    paths = boot.paths()
    wanted = {"/apollo/latest", *(f"/{d.url_path}" for d in boot.web.debs)}
    assert wanted <= set(paths), f"not downloaded: {wanted - set(paths)}; requests: {paths}"
    report = boot.report()
    assert report.complete, f"no complete E2E-REPORT at shutdown\n{boot.explain()}"
    assert report.installed_packages() == set(boot.web.packages), report.dpkg
    assert any(" install " in line for line in report.dpkg_log), report.dpkg_log
    wrote = report.tool_wrote()
    assert len(wrote) == 1, report.tool
    assert "/dev/sda" in wrote[0], report.tool
    assert boot.event("firmware.record_saved") is not None, f"no firmware.record_saved\n{boot.explain()}"
    return _boot_next(boot)


def assert_already_installed(boot: NetworkBoot) -> str:
    """A network boot of an installed server: nothing fetched, no dpkg, no vendor write, the disk unchanged."""
    assert boot.vm.outcome == "reboot", boot.explain()
    assert boot.disk_after == boot.disk_before, f"the disk changed\n{boot.explain()}"
    assert boot.artifact_requests() == [], f"fetched {boot.artifact_requests()}\n{boot.explain()}"
    assert boot.vm.first(r"already installed") is not None, boot.explain()
    report = boot.report()
    assert report.complete, f"no complete E2E-REPORT at shutdown\n{boot.explain()}"
    assert report.dpkg == (), f"vendor packages installed: {report.dpkg}"
    assert report.dpkg_log == (), f"dpkg ran: {report.dpkg_log}"
    assert report.tool == (), f"the vendor tool ran: {report.tool}"
    return _boot_next(boot)


def assert_booted_disk(fw: FirmwareBoot, image: bootable.BootImage, entry: str) -> None:
    """The firmware booted the target disk through the entry BootNext named, and its OS is `image`'s."""
    assert fw.vm.outcome == "poweroff", fw.explain()
    assert fw.booted == image.line, f"expected {image.line!r}\n{fw.explain()}"
    assert fw.entry == entry, f"the firmware loaded {fw.entry}, BootNext was {entry}\n{fw.explain()}"


def test_vendor_entry_boots_then_reimage_on_request(server: Server) -> None:
    """Vendor tool makes its own entry: the disk boots through it; later only the re-image flag re-images.

    Boots: 1 network (install, the tool creates "CableOS", BootNext to it), 2 firmware (the disk boots through it),
    3 network with harmonic.install.reimage=1 and a newer release on the server (re-imaged), 4 firmware (the newer
    release boots).
    """
    first = server.apollo(RELEASE)
    install = server.network_boot(server.web_tree("www-1", RELEASE), standin_knobs=VENDOR_ENTRY)
    entry = assert_installed(server, install, first)
    created = [line for line in install.report().tool if "boot entry created" in line]
    assert created, f"the tool created no entry: {install.report().tool}"
    assert entry in created[0], f"BootNext is {entry}, not the tool's entry: {created[0]}"
    assert VENDOR_LABEL in created[0], created[0]
    fw = server.firmware_boot()
    assert_booted_disk(fw, first, entry)
    assert VENDOR_LABEL in (fw.loaded or ""), fw.explain()

    newer = server.apollo(NEWER)
    newer_web = server.web_tree("www-2", NEWER)
    again = server.network_boot(newer_web, standin_knobs=VENDOR_ENTRY, cmdline=[REIMAGE], redirect_latest=True)
    assert again.event("firmware.record_ignored") is not None, again.explain()
    entry = assert_installed(server, again, newer)
    assert_booted_disk(server.firmware_boot(), newer, entry)
    print(f"\nvendor entry + re-image: {server.history()}")


def test_no_vendor_entry_power_on_leaves_disk_and_wipe_reinstalls(server: Server) -> None:
    """No vendor entry: the installer's entry boots the disk; a power-on changes nothing; a wiped disk is reinstalled.

    Boots: 1 network (install, BootNext to an entry the installer created for the ESP), 2 firmware (the disk boots),
    3 network with a newer release on the server (already installed: logged, but no ISO or deb request, no dpkg,
    no vendor write, the disk byte-identical), 4 firmware (the installed release boots), then the host zeroes the
    disk's first MiBs, 5 network (installed again), 6 firmware.
    """
    image = server.apollo(RELEASE)
    web = server.web_tree("www-1", RELEASE)
    install = server.network_boot(web)
    entry = assert_installed(server, install, image)
    assert not any("boot entry created" in line for line in install.report().tool)
    assert install.event("firmware.boot_entry_created") is not None, install.explain()
    assert_booted_disk(server.firmware_boot(), image, entry)

    power_on = server.network_boot(server.web_tree("www-2", NEWER), redirect_latest=True)
    assert power_on.event("firmware.record_found") is not None, power_on.explain()
    entry = assert_already_installed(power_on)
    newer = power_on.event("release.newer_available")
    assert newer is not None, f"the newer release on the server was not logged\n{power_on.explain()}"
    assert NEWER in str(newer.get("offered")), newer
    assert_booted_disk(server.firmware_boot(), image, entry)

    server.wipe()
    reinstall = server.network_boot(web)
    assert reinstall.event("firmware.record_found") is None, reinstall.explain()
    assert reinstall.event("firmware.record_mismatch") is not None, reinstall.explain()
    entry = assert_installed(server, reinstall, image)
    assert_booted_disk(server.firmware_boot(), image, entry)
    print(f"\nno vendor entry, power-on, wipe: {server.history()}")


def test_ephemeral_user_data_installs_once(
    base_image: vm.Image, installer_build: scenarios.InstallerBuild, e2e_dir: Path
) -> None:
    """User-data path (cloud-init runs the zipapp on every network boot): installed once, then left alone.

    Boots: 1 network (install), 2 firmware (the disk boots), 3 network (already installed), 4 firmware.
    """
    server = Server(e2e_dir, base_image, installer_build, "ephemeral")
    image = server.apollo(RELEASE)
    web = server.web_tree("www", RELEASE)
    install = server.network_boot(web)
    entry = assert_installed(server, install, image)
    assert_booted_disk(server.firmware_boot(), image, entry)
    power_on = server.network_boot(web)
    entry = assert_already_installed(power_on)
    assert_booted_disk(server.firmware_boot(), image, entry)
    print(f"\nephemeral: {server.history()}")
