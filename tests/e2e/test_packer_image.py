"""The baked MAAS image built by real Packer (Debian's 1.6.6, under TCG) from packaging/packer's `make all`.

One build per module (tests/e2e/packer_build.py, about 4-5 minutes here), against the stand-in cloud image
(tests/e2e/cloudimg.py); then the tarball it made is checked: the import command, what was installed, and that
the build's login is gone; and it is booted in RAM the way MAAS boots a custom image (tests/e2e/maas_boot.py).
Part of `make test` (8.5 min here, about 13 with an empty cache: within CI's 90); `make image-e2e` runs only these;
HARMONIC_TEST_IMAGE=0 (or HARMONIC_TEST_E2E=0) skips them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from harmonic_installer import __version__
from tests.e2e import cloudimg, maas_boot, packer_build, scenarios, vm
from tests.e2e.conftest import ARTIFACTS

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(5400),
    pytest.mark.skipif(
        os.environ.get("HARMONIC_TEST_IMAGE", "1") == "0",
        reason="HARMONIC_TEST_IMAGE=0: the Packer image tests skipped (about 15 min; CI runs them)",
    ),
]
BUILD_HASH = "$6$harmonicbuild$"  # the build login's password hash (user-data-build)


@pytest.fixture(scope="module")
def installer_build() -> scenarios.InstallerBuild:
    """The project's .deb and zipapp (`make deb pyz`), which the image build takes from dist/."""
    try:
        return scenarios.build_installer()
    except Exception as exc:
        pytest.fail(f"cannot build the installer's .deb and zipapp: {exc}")


@pytest.fixture(scope="module")
def image_build(installer_build: scenarios.InstallerBuild) -> packer_build.PackerBuild:
    """One real `make all PACKER16=1 ACCEL=tcg` (kept under build/e2e/packer-image for the logs)."""
    for tool in ("packer", "qemu-system-x86_64", "mmdebstrap", "socat", "cloud-localds", "objcopy", "mcopy"):
        if shutil.which(tool) is None:
            pytest.fail(f"the image test needs {tool}: run scripts/bootstrap.sh")
    if os.geteuid() != 0:
        pytest.fail("the image test runs as root (mmdebstrap, loop devices)")
    workdir = ARTIFACTS / "packer-image"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cloud = cloudimg.cloud_image()
    result = packer_build.build(workdir, cloud)
    print(f"\npacker build: rc={result.returncode} in {result.duration_s:.0f} s; log {result.log}")
    if result.returncode != 0:
        pytest.fail(f"make all failed (rc={result.returncode}); log {result.log}:\n{result.output[-6000:]}")
    return result


def _members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tarball) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers()}


def _read(tarball: Path, names: list[str]) -> dict[str, bytes]:
    wanted = set(names)
    found: dict[str, bytes] = {}
    with tarfile.open(tarball) as tar:
        for m in tar:
            name = m.name.removeprefix("./")
            if name in wanted and m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                found[name] = f.read()
    return found


def test_every_provisioner_ran_in_the_build_vm(image_build: packer_build.PackerBuild) -> None:
    """setup, the .deb from Packer's HTTP server (SHA-256 checked), CUSTOMIZE_SCRIPT's fetch, cleanup all ran."""
    out = image_build.output
    assert "packer init" not in out  # Debian's Packer 1.6 has none: the PACKER16 rendering was built
    assert re.search(r"Removing linux-image-\S+-amd64", out), "setup.sh removed no kernel"
    assert re.search(r"harmonic-installer_\S+_all\.deb: OK", out), "the .deb's SHA-256 was not checked"
    assert "Setting up harmonic-installer" in out
    assert re.search(rf"(?m): harmonic-install {re.escape(__version__)}$", out), "the wrapper did not run"
    assert re.search(r"customize: fetched config\.toml from 10\.0\.2\.2:\d+", out)
    assert "cloud-init clean --logs" in out
    assert "image-to-tgz: wrote harmonic-installer.tar.gz" in out


def test_import_command_carries_the_tarballs_real_sha256_and_size(image_build: packer_build.PackerBuild) -> None:
    """The printed `boot-resources create` has the SHA-256 and byte size of the tarball on disk."""
    command = image_build.import_command()
    assert command is not None, image_build.output[-3000:]
    digest = hashlib.sha256(image_build.tarball.read_bytes()).hexdigest()
    assert f"sha256='{digest}'" in command
    assert f"size='{image_build.tarball.stat().st_size}'" in command
    assert "base_image='ubuntu/jammy'" in command
    assert "filetype='tgz'" in command


def test_image_holds_the_installer_with_its_unit_enabled_and_no_kernel(
    image_build: packer_build.PackerBuild, installer_build: scenarios.InstallerBuild
) -> None:
    """The pyz is dist's, the unit is enabled, the customize file is baked in, and no kernel is left."""
    members = _members(image_build.tarball)
    link = members["etc/systemd/system/multi-user.target.wants/harmonic-installer.service"]
    assert link.issym()
    assert link.linkname.endswith("/systemd/system/harmonic-installer.service")
    files = _read(
        image_build.tarball, ["usr/lib/harmonic-installer/harmonic-install.pyz", "etc/harmonic-installer/config.toml"]
    )
    assert files["usr/lib/harmonic-installer/harmonic-install.pyz"] == installer_build.pyz.read_bytes()
    assert files["etc/harmonic-installer/config.toml"] == packer_build.CONFIG_TOML.encode()
    assert not [n for n in members if re.fullmatch(r"boot/vmlinuz.*|lib/modules/[^/]+", n)]


def test_build_login_is_gone_from_the_image(image_build: packer_build.PackerBuild) -> None:
    """No root password (not even a locked hash), no SSH drop-in, keys or host keys, no cloud-init state."""
    members = _members(image_build.tarball)
    sshd = sorted(n for n in members if re.fullmatch(r"etc/ssh/sshd_config(\.d/.+)?", n) and members[n].isfile())
    files = _read(image_build.tarball, ["etc/shadow", "etc/machine-id", *sshd])
    root = next(line for line in files["etc/shadow"].decode().splitlines() if line.startswith("root:"))
    assert root.split(":")[1] == "*", root
    assert BUILD_HASH.encode() not in files["etc/shadow"]
    for name in sshd:
        text = files[name].decode()
        assert not re.search(r"(?mi)^\s*(PermitRootLogin\s+yes|PasswordAuthentication\s+yes)", text), name
    assert "etc/ssh/sshd_config.d/00-packer-build.conf" not in members
    assert not [n for n in members if n.startswith("etc/ssh/ssh_host_")]
    assert not [n for n in members if n.startswith("root/.ssh")]
    assert files["etc/machine-id"] == b""
    cloud_state = [n for n in members if n.startswith("var/lib/cloud/") and not n.startswith("var/lib/cloud/scripts")]
    assert not [n for n in cloud_state if members[n].isfile()], cloud_state
    assert not [n for n in members if n.startswith("var/log/cloud-init")]


def _explain(r: scenarios.ScenarioResult) -> str:
    tail = "\n".join(line.text for line in r.vm.lines[-60:])
    return f"outcome={r.vm.outcome} after {r.vm.duration_s:.0f} s; serial log {r.vm.serial_log}\n{tail}"


def test_maas_in_memory_boot_with_the_tag_installs_writes_the_iso_and_reboots(
    image_build: packer_build.PackerBuild,
) -> None:
    """Booted like MAAS (base kernel, root=tar:http...root.tgz into RAM) with install=1: disk = ISO, reboot."""
    workdir = ARTIFACTS / "packer-image-maas-install"
    if workdir.exists():
        shutil.rmtree(workdir)
    r = maas_boot.boot(image_build.tarball, cloudimg.cloud_image(), workdir, install=True)
    print(f"\nin-memory install boot: {r.vm.duration_s:.0f} s in the VM")
    assert r.vm.first(r"rooturl: root filesystem from http://\S+/root\.tgz is in RAM") is not None, _explain(r)
    assert r.vm.outcome == "reboot", _explain(r)
    assert r.disk_holds_iso(), f"the disk does not hold exactly {r.web.iso.path.name}\n{_explain(r)}"
    steps = r.finished_steps()
    for name in scenarios.STEPS:
        assert name in steps, f"no step.finished for {name}\n{_explain(r)}"
    assert "Harmonic cOS installed" in r.vm.serial, _explain(r)
    assert r.vm.first(r"Proceed with installing .* on /dev/sda\?") is not None, "the vendor tool did not ask"
    # MAAS heard it all, with the credentials cloud-init wrote from the preseed (cloud-config-url), as on MAAS.
    # cloud-init reports there too (its own events, as on MAAS); ours nest under harmonic-installer.
    names = r.maas.names()
    ours = [n for n in names if n[1] == "harmonic-installer" or n[1].startswith("harmonic-installer/")]
    assert ours[0] == ("start", "harmonic-installer", None), ours
    assert ours[-1] == ("finish", "harmonic-installer", "SUCCESS"), ours
    for step in scenarios.STEPS:
        if step != "reboot":  # requested after the last report and the flush: never reported
            assert ("finish", f"harmonic-installer/{step}", "SUCCESS") in ours, ours
    assert len(names) > len(ours), names
    assert r.vm.first(r"Datasource DataSourceMAAS \[http://10\.0\.2\.110:5248/MAAS/metadata/\]") is not None
    rack = (workdir / "rack-requests.log").read_text()
    assert f"GET /{maas_boot.IMAGE_PATH} " in rack  # the initramfs fetched the root tarball from the "rack"


def test_maas_in_memory_boot_without_the_tag_does_nothing(image_build: packer_build.PackerBuild) -> None:
    """Without harmonic.install=1: the unit is skipped, nothing is fetched, the disk stays blank, no reboot."""
    workdir = ARTIFACTS / "packer-image-maas-no-install"
    if workdir.exists():
        shutil.rmtree(workdir)
    r = maas_boot.boot(image_build.tarball, cloudimg.cloud_image(), workdir, install=False)
    print(f"\nin-memory boot without the tag: {r.vm.duration_s:.0f} s in the VM")
    assert r.vm.first(r"rooturl: root filesystem from http://\S+/root\.tgz is in RAM") is not None, _explain(r)
    assert r.vm.first(maas_boot.SKIPPED) is not None, _explain(r)
    assert r.vm.outcome == "timeout", _explain(r)  # still up when the test stopped it: no reboot
    assert vm.nonzero_bytes(r.disk) == 0
    assert r.direct_requests == ()
    assert r.proxied_requests == ()
    assert r.finished_steps() == {}
