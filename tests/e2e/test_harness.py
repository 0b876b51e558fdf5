"""The VM harness itself, with a trivial oneshot unit instead of the installer.

The probe unit proves what the scenarios rely on: the guest boots the cached image, systemd runs a oneshot
unit after network-online.target, the unit reaches the host's nginx through guestfwd (several connections in
a row), cannot reach the host any other way, writes /dev/sda (the virtio-scsi disk), and its
`SuccessAction=reboot` ends QEMU, which the host tells apart from a poweroff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e import vm
from tests.support import bootable
from tests.support.nginx import serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

PROBE_SCRIPT = r"""#!/bin/sh
# e2e probe: fetch a payload from the host's nginx through guestfwd and write it to /dev/sda.
set -u
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^e2e\.$1=//p"; }
echo "e2e-probe: started after $(cut -d' ' -f1 /proc/uptime) s of uptime"
# The host's own address on the user network (10.0.2.2) must be unreachable with restrict=on.
if curl -sS --connect-timeout 5 -m 10 -o /dev/null "http://10.0.2.2:$(arg hostport)/payload.bin"; then
  echo "e2e-probe: host-direct=reachable"
else
  echo "e2e-probe: host-direct=unreachable"
fi
curl -fsS -o /run/first.txt http://10.0.2.100/first.txt || { echo "e2e-probe: FAILED first"; exit 1; }
curl -fsS -o /run/payload.bin http://10.0.2.100/payload.bin || { echo "e2e-probe: FAILED payload"; exit 1; }
curl -fsS -o /run/second.txt http://10.0.2.100/second.txt || { echo "e2e-probe: FAILED second"; exit 1; }
echo "e2e-probe: first=$(cat /run/first.txt) second=$(cat /run/second.txt)"
echo "e2e-probe: sda=$(cat /sys/block/sda/device/model | tr -d ' ') data=$(findmnt -no FSTYPE /data)"
dd if=/run/payload.bin of=/dev/sda bs=1M conv=fsync status=none || { echo "e2e-probe: FAILED dd"; exit 1; }
echo "e2e-probe: wrote $(stat -c %s /run/payload.bin) bytes to /dev/sda"
"""

PROBE_UNIT = """[Unit]
Description=e2e probe (harness self-test)
Wants=network-online.target
After=network-online.target
ConditionKernelCommandLine=e2e.probe=1
SuccessAction=reboot

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/e2e-probe
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""

PROBE_LAYER = vm.Layer(
    files={"usr/local/sbin/e2e-probe": PROBE_SCRIPT, "etc/systemd/system/e2e-probe.service": PROBE_UNIT},
    modes={"usr/local/sbin/e2e-probe": 0o755},
    enable=("e2e-probe.service",),
)


def test_probe_unit_fetches_through_guestfwd_writes_sda_and_reboots(base_image: vm.Image, e2e_dir: Path) -> None:
    """A oneshot unit fetches files from host nginx via guestfwd only, writes /dev/sda, and the guest reboots."""
    image = vm.layered_image(base_image, PROBE_LAYER)
    www = e2e_dir / "www"
    www.mkdir()
    payload = os.urandom(3 * 1024 * 1024 + 123)
    (www / "payload.bin").write_bytes(payload)
    (www / "first.txt").write_text("one\n")
    (www / "second.txt").write_text("two\n")
    disk = vm.blank_disk(e2e_dir / "sda.img", 64)
    with serve(www) as web:
        spec = vm.VmSpec(
            image=image,
            disk=disk,
            forwards=[vm.Forward(vm.WEB_IP, 80, web.port)],
            cmdline=["e2e.probe=1", f"e2e.hostport={web.port}"],
        )
        result = vm.run(spec, e2e_dir, timeout=600)
        requests = web.requests()

    started = result.first(r"e2e-probe: started")
    print(f"\nprobe unit started at {started.t if started else None!r} s, QEMU exited after {result.duration_s:.1f} s")
    assert result.outcome == "reboot", result.explain()
    assert "e2e-probe: host-direct=unreachable" in result.serial
    assert "e2e-probe: first=one second=two" in result.serial
    assert "e2e-probe: sda=QEMUHARDDISK data=tmpfs" in result.serial
    assert f"e2e-probe: wrote {len(payload)} bytes to /dev/sda" in result.serial
    paths = [r.split('"')[1].split()[1] for r in requests]
    assert paths == ["/first.txt", "/payload.bin", "/second.txt"]
    data = disk.read_bytes()
    assert data[: len(payload)] == payload
    assert vm.nonzero_bytes(disk) == len(payload) - payload.count(0)


def test_powerdown_is_told_apart_from_reboot(base_image: vm.Image, e2e_dir: Path) -> None:
    """Without the probe, the guest idles; the ACPI power button powers it off and the run reads 'poweroff'."""
    image = vm.layered_image(base_image, PROBE_LAYER)
    disk = vm.blank_disk(e2e_dir / "sda.img", 16)
    spec = vm.VmSpec(image=image, disk=disk, cmdline=["e2e.probe=0"])
    with vm.Vm(spec, e2e_dir) as machine:
        machine.wait_for(r"login:", timeout=600)
        result = machine.power_off(timeout=300)
    assert result.outcome == "poweroff", result.explain()
    assert "e2e-probe:" not in result.serial
    assert vm.nonzero_bytes(disk) == 0


UEFI_PROBE_SCRIPT = r"""#!/bin/sh
# e2e UEFI probe: show the firmware's boot entries; with e2e.uefi=bootnext, set BootNext to the target disk's.
set -u
action=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^e2e\.uefi=//p')
echo "e2e-uefi: efivarfs=$(findmnt -no FSTYPE /sys/firmware/efi/efivars)"
efibootmgr -v | sed 's/^/e2e-uefi: /'
if [ "$action" = bootnext ]; then
  entry=$(efibootmgr | sed -n 's/^Boot\([0-9A-F]\{4\}\)\* UEFI QEMU QEMU HARDDISK.*/\1/p' | head -n1)
  [ -n "$entry" ] || { echo "e2e-uefi: FAILED no boot entry for the target disk"; exit 1; }
  efibootmgr -q -n "$entry" || { echo "e2e-uefi: FAILED efibootmgr -n $entry"; exit 1; }
  echo "e2e-uefi: BootNext set to $entry"
fi
echo "e2e-uefi: done ($(efibootmgr | sed -n 's/^BootNext: /BootNext=/p'))"
"""

UEFI_PROBE_UNIT = """[Unit]
Description=e2e UEFI probe (harness self-test)
ConditionKernelCommandLine=e2e.uefi
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/e2e-uefi-probe
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""

UEFI_PROBE_LAYER = vm.Layer(
    files={"usr/local/sbin/e2e-uefi-probe": UEFI_PROBE_SCRIPT, "etc/systemd/system/e2e-uefi.service": UEFI_PROBE_UNIT},
    modes={"usr/local/sbin/e2e-uefi-probe": 0o755},
    enable=("e2e-uefi.service",),
)


def test_uefi_bootnext_boots_the_disk_once(base_image: vm.Image, e2e_dir: Path) -> None:
    """OVMF: a BootNext set from the in-memory OS boots the target disk once; without one, the netboot stand-in.

    Also measures (docs/e2e.md) what a network boot (-kernel) does to a pending BootNext: boot 2 starts with one
    pending and, as measured on Debian 12's OVMF, leaves it for the next firmware boot. Boots: 1 network (set
    BootNext to the target disk), 2 network (show it), 3 firmware (the disk), 4 firmware (the stand-in again).
    """
    missing = bootable.missing_tools()
    assert not missing, f"run scripts/bootstrap.sh: missing {missing}"
    image = vm.layered_image(base_image, UEFI_PROBE_LAYER)
    apollo = bootable.apollo_image(vm.cache_dir(), base_image.kernel, "release-probe")
    netboot = bootable.netboot_image(vm.cache_dir(), base_image.kernel)
    disk = e2e_dir / "sda.img"
    disk.write_bytes(apollo.path.read_bytes())
    with disk.open("r+b") as fh:
        fh.truncate(64 * 1024 * 1024)
    machine, first = vm.uefi_machine(e2e_dir, netboot.path, image=image, disk=disk)
    assert first.outcome == "poweroff", _why(first)
    assert bootable.NETBOOT_MARKER in first.serial, _why(first)
    timings: list[str] = [f"power-on {first.duration_s:.0f} s"]

    def boot(name: str, mode: vm.Boot, action: str = "") -> vm.VmResult:
        spec = vm.VmSpec(image=image, disk=disk, uefi=machine, boot=mode, cmdline=[f"e2e.uefi={action}"])
        result = vm.run(spec, e2e_dir, timeout=600, name=name)
        timings.append(f"{name} {result.duration_s:.0f} s")
        assert result.outcome == "poweroff", _why(result)
        return result

    set_next = boot("1-net-set", "network", "bootnext")
    show = boot("2-net-show", "network", "show")
    fw1 = boot("3-fw", "firmware")
    fw2 = boot("4-fw", "firmware")
    print("\nuefi probe: " + ", ".join(timings))
    assert "e2e-uefi: efivarfs=efivarfs" in set_next.serial, _why(set_next)
    order = set_next.first(r"e2e-uefi: BootOrder: 0001,0002")
    assert order is not None, f"netboot stand-in not first\n{_why(set_next)}"
    done = set_next.first(r"e2e-uefi: BootNext set to [0-9A-F]{4}$")
    assert done is not None, _why(set_next)
    entry = done.text.rsplit(" ", 1)[-1]
    # Measured on Debian 12's OVMF (edk2 2022.11): booting QEMU's -kernel does not consume a pending BootNext.
    assert show.first(rf"e2e-uefi: done \(BootNext={entry}\)$") is not None, f"BootNext gone\n{_why(show)}"
    assert apollo.line in fw1.serial, f"BootNext did not reach the disk\n{_why(fw1)}"
    assert fw1.first(rf"BdsDxe: loading Boot{entry} ") is not None, _why(fw1)
    assert bootable.NETBOOT_MARKER not in fw1.serial
    assert bootable.NETBOOT_MARKER in fw2.serial, f"BootNext was not one-shot\n{_why(fw2)}"
    assert apollo.line not in fw2.serial


def _why(result: vm.VmResult) -> str:
    """Why a boot failed a check: outcome, QEMU's stderr and the last serial lines."""
    tail = "\n".join(line.text for line in result.lines[-40:])
    head = f"outcome={result.outcome} rc={result.returncode} after {result.duration_s:.0f} s"
    return f"{head}\nQEMU stderr: {result.qemu_stderr}\n{tail}"
