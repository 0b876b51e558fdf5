"""The harness's fixed decisions, checked without booting: restricted network, TCG, cache keys, outcomes."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e import lifecycle, scenarios, vm

IMAGE = vm.Image("t", Path("/c/root.img"), Path("/c/vmlinuz"), Path("/c/initrd.img"), None)


def _netdev(argv: list[str]) -> str:
    return argv[argv.index("-netdev") + 1]


def test_guest_network_is_restricted_to_socat_guestfwd_forwards(tmp_path: Path) -> None:
    """The guest gets user networking with restrict=on and one `cmd:socat` guestfwd per forward, nothing else."""
    spec = vm.VmSpec(
        image=IMAGE,
        disk=tmp_path / "sda.img",
        forwards=[vm.Forward(vm.WEB_IP, 80, 40001), vm.Forward(vm.PROXY_IP, 3128, 40002)],
    )
    argv = vm.qemu_argv(spec, tmp_path / "qmp")
    netdev = _netdev(argv)
    assert netdev.split(",")[:3] == ["user", "id=net0", "restrict=on"]
    assert netdev.split(",")[3:] == [
        "guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:40001",
        "guestfwd=tcp:10.0.2.101:3128-cmd:socat - TCP:127.0.0.1:40002",
    ]
    assert argv.count("-netdev") == 1
    assert not any("hostfwd" in a for a in argv)


def test_root_is_a_snapshot_and_the_target_is_sda_on_virtio_scsi(tmp_path: Path) -> None:
    """The cached root image is never written (-snapshot); the target disk is a writable scsi-hd on virtio-scsi."""
    argv = vm.qemu_argv(vm.VmSpec(image=IMAGE, disk=tmp_path / "sda.img"), tmp_path / "qmp")
    assert "-snapshot" in argv
    assert "-no-reboot" in argv
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0].startswith(f"file={IMAGE.root},if=virtio")
    assert f"file={tmp_path / 'sda.img'},if=none,id=target,format=raw,snapshot=off" in drives[1]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert "virtio-scsi-pci,id=scsi0" in devices
    assert any(d.startswith("scsi-hd,drive=target") for d in devices)


def test_tcg_unless_kvm_is_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TCG by default (KVM hangs on the project's machines); HARMONIC_TEST_E2E_KVM=1 switches to KVM."""
    spec = vm.VmSpec(image=IMAGE, disk=tmp_path / "sda.img")
    monkeypatch.delenv("HARMONIC_TEST_E2E_KVM", raising=False)
    argv = vm.qemu_argv(spec, tmp_path / "qmp")
    assert argv[argv.index("-accel") + 1] == "tcg"
    monkeypatch.setenv("HARMONIC_TEST_E2E_KVM", "1")
    argv = vm.qemu_argv(spec, tmp_path / "qmp")
    assert argv[argv.index("-accel") + 1] == "kvm"


@pytest.mark.parametrize(
    ("serial", "rc", "outcome"),
    [
        ("...\n[   94.39] reboot: Restarting system", 0, "reboot"),
        ("...\n[   23.77] reboot: Power down", 0, "poweroff"),
        (
            "[ 3.1] Kernel panic - not syncing: VFS: Unable to mount root fs\n[ 3.2] reboot: Restarting system",
            0,
            "panic",
        ),
        ("harmonic-e2e login:", None, "timeout"),
        ("qemu-system-x86_64: -drive ...: Could not open", 1, "qemu-exit"),
    ],
)
def test_outcome_is_read_from_the_kernels_last_words(serial: str, rc: int | None, outcome: str) -> None:
    """Reboot, poweroff, panic, timeout and a QEMU failure are told apart from the serial console."""
    assert vm.classify(serial, rc) == outcome


def test_recipe_change_gives_a_new_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changing the package list (or any recipe part) changes the image's cache key; the same recipe keeps it."""
    before = vm._digest(vm.recipe())
    assert vm._digest(vm.recipe()) == before
    monkeypatch.setattr(vm, "PACKAGES", (*vm.PACKAGES, "less"))
    assert vm._digest(vm.recipe()) != before


def test_layer_key_follows_the_debs_bytes(tmp_path: Path) -> None:
    """A rebuilt .deb with the same name gives a new layer image; the same bytes reuse the cached one."""
    deb = tmp_path / "harmonic-installer_0.1.0_all.deb"
    deb.write_bytes(b"one")
    first = vm.Layer(debs=(deb,), enable=(scenarios.UNIT,)).digest()
    assert vm.Layer(debs=(deb,), enable=(scenarios.UNIT,)).digest() == first
    deb.write_bytes(b"two")
    assert vm.Layer(debs=(deb,), enable=(scenarios.UNIT,)).digest() != first


def test_baked_kernel_command_line_carries_the_unit_gate_and_the_settings() -> None:
    """The baked guest gets harmonic.install=1 (the unit's condition); the ephemeral one does not."""
    baked = scenarios.kernel_cmdline("http://10.0.2.100", baked=True)
    assert baked[0] == "harmonic.install=1"
    assert "harmonic.server.url=http://10.0.2.100" in baked
    assert "harmonic.proxy.no_proxy=localhost,127.0.0.1,10.0.2.0/24" in baked
    assert "harmonic.install=1" not in scenarios.kernel_cmdline("http://10.0.2.100", baked=False)


def test_mounts_left_inside_a_build_directory_are_found() -> None:
    """Mount points below a directory are listed (so an interrupted build is unmounted before rm -rf)."""
    assert "/proc" in vm._mounts_under(Path("/"))
    assert vm._mounts_under(Path("/proc/self/fdinfo")) == []


def test_qmp_socket_is_short_and_private_whatever_the_checkout_path(tmp_path: Path) -> None:
    """The QMP socket fits sun_path (<= 107 bytes) from a 300-byte work dir with spaces; kill() removes its dir."""
    workdir = tmp_path / ("a checkout path, with spaces and commas " * 8) / "build" / "e2e" / "test_x"
    assert len(os.fsencode(workdir)) > 300
    machine = vm.Vm(vm.VmSpec(image=IMAGE, disk=workdir / "sda.img"), workdir)
    sock = machine.qmp_socket
    assert len(os.fsencode(sock)) <= vm.SOCKET_PATH_MAX
    assert workdir not in sock.parents
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert machine.qmp_socket == sock  # one directory per run
    machine.kill()
    assert not sock.parent.exists()


def test_paths_with_commas_are_escaped_in_qemu_options(tmp_path: Path) -> None:
    """A comma in a disk or socket path is doubled inside QEMU's option lists, so the path stays one value."""
    spec = vm.VmSpec(image=IMAGE, disk=Path("/tmp/a dir, with a comma/sda.img"), seed=Path("/x,y/seed.img"))
    argv = vm.qemu_argv(spec, Path("/run/hi-vm-1,2/qmp"))
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[1].startswith("file=/tmp/a dir,, with a comma/sda.img,if=none,")
    assert drives[2].startswith("file=/x,,y/seed.img,if=virtio,")
    assert argv[argv.index("-qmp") + 1] == "unix:/run/hi-vm-1,,2/qmp,server=on,wait=off"


def test_a_failed_run_is_explained_with_qemus_stderr_and_the_serial_tail(tmp_path: Path) -> None:
    """explain() gives the outcome, QEMU's stderr (where QEMU says why it stopped) and the last serial lines."""
    lines = tuple(vm.SerialLine(float(i), f"line {i}") for i in range(100))
    result = vm.VmResult("qemu-exit", 1, 0.2, lines, tmp_path / "vm.serial.log", "qemu: UNIX socket path too long\n")
    text = result.explain(serial_lines=5)
    assert "outcome=qemu-exit rc=1" in text
    assert "qemu: UNIX socket path too long" in text
    assert text.endswith("line 95\nline 96\nline 97\nline 98\nline 99")
    assert "line 94" not in text
    empty = vm.VmResult("qemu-exit", 1, 0.2, (), tmp_path / "vm.serial.log", "").explain()
    assert "QEMU stderr: (empty)" in empty
    assert "serial console: (nothing)" in empty


def test_the_guest_gets_the_hosts_python310_without_tests_or_gui() -> None:
    """The image's recipe names the host's 3.10; what is copied has the interpreter, libpython, ssl, no tests."""
    spec = vm.recipe()["python310"]
    assert isinstance(spec, dict)
    assert str(spec["version"]).startswith("3.10.")
    prefix = Path(str(spec["prefix"]))
    rels = {str(f.relative_to(prefix)) for f in vm._python310_files(prefix)}
    assert "bin/python3.10" in rels
    assert "lib/python3.10/os.py" in rels
    assert any(r.startswith("lib/python3.10/lib-dynload/_ssl.") for r in rels)
    assert not any(
        r.startswith(("lib/python3.10/test/", "lib/python3.10/tkinter/", "lib/python3.10/site-packages/")) for r in rels
    )


def test_the_guests_cloud_init_config_passes_cloud_inits_schema(tmp_path: Path) -> None:
    """The image's cloud.cfg.d file is valid cloud-config (cloud-init warns on every boot otherwise)."""
    path = tmp_path / "90-e2e.cfg"
    path.write_text("#cloud-config\n" + vm._BASE_FILES["etc/cloud/cloud.cfg.d/90-e2e.cfg"])
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_explain_without_serial_lines_gives_only_the_outcome_and_qemus_stderr(tmp_path: Path) -> None:
    """explain(serial_lines=0) (the demo, whose console was shown live) adds no serial line at all."""
    lines = (vm.SerialLine(1.0, "serial text"),)
    text = vm.VmResult("qemu-exit", 1, 0.2, lines, tmp_path / "s.log", "qemu: boom\n").explain(serial_lines=0)
    assert "qemu: boom" in text
    assert "serial text" not in text


def _uefi(tmp_path: Path) -> vm.Uefi:
    return vm.Uefi(nvram=tmp_path / "OVMF_VARS.fd", netboot_disk=tmp_path / "netboot.img")


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_uefi_network_boot_is_q35_ovmf_with_the_netboot_stand_in_first(tmp_path: Path) -> None:
    """UEFI network boot: q35, OVMF code read-only, this machine's NVRAM written, netboot disk before the target."""
    spec = vm.VmSpec(image=IMAGE, disk=tmp_path / "sda.img", uefi=_uefi(tmp_path), boot="network")
    argv = vm.qemu_argv(spec, tmp_path / "qmp")
    assert argv[argv.index("-machine") + 1] == "q35"
    drives = _opt(argv, "-drive")
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={vm.OVMF_CODE}" in drives
    assert f"if=pflash,format=raw,unit=1,snapshot=off,file={tmp_path / 'OVMF_VARS.fd'}" in drives
    devices = _opt(argv, "-device")
    assert any(d.startswith("nvme,drive=netboot") and d.endswith("bootindex=1") for d in devices), devices
    assert any(d.startswith("scsi-hd,drive=target") and d.endswith("bootindex=2") for d in devices), devices
    assert "-kernel" in argv
    assert argv.count("-netdev") == 1
    assert any(d.startswith(f"file={IMAGE.root},if=virtio") for d in drives)


def test_firmware_boot_has_no_kernel_no_root_image_and_no_network(tmp_path: Path) -> None:
    """A power-on without network boot: no -kernel, no in-memory OS image, no NIC; the firmware picks a disk."""
    spec = vm.VmSpec(
        image=IMAGE,
        disk=tmp_path / "sda.img",
        forwards=[vm.Forward(vm.WEB_IP, 80, 40001)],
        seed=tmp_path / "seed.img",
        uefi=_uefi(tmp_path),
        boot="firmware",
    )
    argv = vm.qemu_argv(spec, tmp_path / "qmp")
    for flag in ("-kernel", "-initrd", "-append", "-netdev"):
        assert flag not in argv
    drives = " ".join(_opt(argv, "-drive"))
    assert str(IMAGE.root) not in drives
    assert "seed.img" not in drives
    assert "sda.img" in drives
    assert "netboot.img" in drives


def test_firmware_boot_without_uefi_is_refused(tmp_path: Path) -> None:
    """A firmware boot needs the UEFI machine (its NVRAM and order): without one the harness refuses."""
    with pytest.raises(ValueError, match="UEFI"):
        vm.qemu_argv(vm.VmSpec(image=IMAGE, disk=tmp_path / "sda.img", boot="firmware"), tmp_path / "qmp")


def _lines(*texts: str) -> tuple[vm.SerialLine, ...]:
    return tuple(vm.SerialLine(float(i), t) for i, t in enumerate(texts))


def test_guest_report_is_read_from_the_serial_console() -> None:
    """The E2E-REPORT lines a guest prints at shutdown give dpkg's view, the tool's log and the boot entries."""
    report = lifecycle.GuestReport.parse(
        _lines(
            "[  90.1] e2e-guest[401]: E2E-REPORT begin",
            "E2E-REPORT dpkg ii  ostree-upgrade-bootstrap 2.0.41",
            "E2E-REPORT dpkg ii  ostree-upgrade 2.0.41",
            "E2E-REPORT dpkg.log 2026-12-06 22:00:01 install ostree-upgrade:all <none> 2.0.41",
            "E2E-REPORT tool 2026-12-06T22:00:05 pid=9 wrote 24140288 bytes to /dev/sda",
            "E2E-REPORT efi BootNext: 0004",
            "E2E-REPORT end",
        )
    )
    assert report.complete
    assert report.installed_packages() == {"ostree-upgrade-bootstrap", "ostree-upgrade"}
    assert report.tool_wrote() == ["2026-12-06T22:00:05 pid=9 wrote 24140288 bytes to /dev/sda"]
    assert report.efi == ("BootNext: 0004",)
    empty = lifecycle.GuestReport.parse(_lines("E2E-REPORT begin", "E2E-REPORT efi BootOrder: 0001"))
    assert not empty.complete
    assert empty.installed_packages() == set()
    assert empty.tool == ()


def test_firmware_boot_reads_the_marker_and_the_entry_ovmf_loaded(tmp_path: Path) -> None:
    """Which disk a firmware boot reached is read from the marker line and OVMF's `BdsDxe: loading` line."""
    result = vm.VmResult(
        "poweroff",
        0,
        12.0,
        _lines(
            'BdsDxe: loading Boot0004 "Harmonic cOS" from HD(1,GPT,AA7B...)/\\EFI\\BOOT\\BOOTX64.EFI',
            "EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path",
            "HARMONIC-COS-STANDIN release-3.21.3.0-7+auto15",
            "[    3.3] reboot: Power down",
        ),
        tmp_path / "fw.serial.log",
        "",
    )
    fw = lifecycle.FirmwareBoot("2-fw", result, "")
    assert fw.booted == "HARMONIC-COS-STANDIN release-3.21.3.0-7+auto15"
    assert fw.entry == "Boot0004"
    netboot = lifecycle.FirmwareBoot("3-fw", dataclasses.replace(result, lines=_lines("NETBOOT-STANDIN")), "")
    assert netboot.booted == "NETBOOT-STANDIN"
    assert netboot.entry is None


def test_lifecycle_layers_baked_and_ephemeral(tmp_path: Path) -> None:
    """The baked lifecycle image has the .deb and its unit enabled; the ephemeral one only the guest helper."""
    deb = tmp_path / "harmonic-installer_0.1.0_all.deb"
    deb.write_bytes(b"deb")
    build = scenarios.InstallerBuild(deb, tmp_path / "harmonic-install.pyz")
    baked, ephemeral = lifecycle.layer(build, "baked"), lifecycle.layer(build, "ephemeral")
    assert scenarios.UNIT in baked.enable
    assert baked.debs == (deb,)
    assert scenarios.UNIT not in ephemeral.enable
    assert ephemeral.debs == ()
    assert "e2e-guest.service" in baked.enable
    assert "e2e-guest.service" in ephemeral.enable
    assert baked.digest() != ephemeral.digest()


def test_a_failed_boot_explains_itself(tmp_path: Path) -> None:
    """A failing check's message carries the outcome, QEMU's stderr, the installer's verdict and the serial tail."""
    lines = _lines(
        "harmonic-install[373]: harmonic-install: FAILED at step download: no checksum (exit 4)",
        *(f"line {i}" for i in range(100)),
    )
    result = vm.VmResult("poweroff", 0, 42.0, lines, tmp_path / "3-net.serial.log", "qemu: warning: something\n")
    text = lifecycle.explain(result, "power-on 12 s, 1-net reboot 150 s")
    assert "outcome=poweroff rc=0 after 42 s" in text
    assert "QEMU stderr: qemu: warning: something" in text
    assert "the installer's last word: harmonic-install[373]: harmonic-install: FAILED at step download" in text
    assert "boots so far: power-on 12 s, 1-net reboot 150 s" in text
    assert text.endswith("line 99")
    assert "line 39\n" not in text  # only the last 60 lines
