"""The image tests' fixed decisions, checked without Packer or QEMU: loopback-only build VM, MAAS's command line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.e2e import cloudimg, maas_boot, packer_build

CLOUD = cloudimg.CloudImage(
    Path("/c/cloudimg.qcow2"), "ab" * 32, Path("/c/vmlinuz"), Path("/c/initrd.img"), Path("/c/t")
)


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {k: _unquote(v) for k, v in value.items()}
    return value


def test_build_vm_network_stays_on_loopback(tmp_path: Path) -> None:
    """restrict=on, SSH forwarded from 127.0.0.1 only, Packer's HTTP server on 127.0.0.1 behind a guestfwd."""
    var_file = packer_build._var_file(tmp_path / "t.pkrvars.hcl", CLOUD, tmp_path / "serial.log")
    with var_file.open() as f:
        values = _unquote(hcl2.load(f))
    assert values["http_bind_address"] == "127.0.0.1"
    assert values["cloudimg_url"] == "file:///c/cloudimg.qcow2"
    assert values["cloudimg_checksum"] == f"sha256:{'ab' * 32}"
    (netdev,) = [args[1] for args in values["extra_qemuargs"] if args[0] == "-netdev"]
    options = netdev.split(",")
    assert options[:3] == ["user", "id=user.0", "restrict=on"]  # Packer's own -device expects id user.0
    assert "host=10.0.2.254" in options  # frees 10.0.2.2, where Packer tells the guest its HTTP server is
    assert "hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22" in options
    assert "guestfwd=tcp:10.0.2.2:{{ .HTTPPort }}-cmd:socat - TCP:127.0.0.1:{{ .HTTPPort }}" in options
    assert not [o for o in options if o.startswith(("hostfwd=tcp::", "hostfwd=tcp:0.0.0.0"))]


def test_maas_command_line_has_maas_order_and_the_tag_options_before_bootif() -> None:
    """root=tar:...root.tgz, ip=...BOOTIF, datasource, cloud-config-url, log_*, the tag's options, BOOTIF last."""
    line = maas_boot.kernel_cmdline(["harmonic.install=1", "harmonic.server.url=http://x"])
    assert line[0] == "nomodeset"
    assert line[1] == f"root=tar:http://{maas_boot.RACK_IP}:5248/{maas_boot.IMAGE_PATH}"
    assert line[1].endswith("/root.tgz")  # MAAS names an uploaded tgz root.tgz; the initrd picks gzip by it
    assert line[2:4] == [f"ip=::::{maas_boot.HOSTNAME}:BOOTIF:dhcp", "ip6=off"]
    assert line[4] == "cc:{'datasource_list': ['MAAS']}end_cc"
    assert line[5].startswith("cloud-config-url=http://")
    assert line[6:8] == [f"log_host={maas_boot.RACK_IP}", "log_port=5247"]
    assert line[8:10] == ["harmonic.install=1", "harmonic.server.url=http://x"]
    assert line[-1] == "BOOTIF=01-52-54-00-12-34-56"
    assert "---" not in line  # an ephemeral deploy moves the tag's options into ephemeral_opts


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_rooturl_initramfs_scripts_pass_shellcheck(tmp_path: Path) -> None:
    """The stand-in of cloud-initramfs-rooturl (local-top script and hook) is clean POSIX sh."""
    for name, text in (("rooturl", maas_boot.ROOTURL_SCRIPT), ("hook", maas_boot.ROOTURL_HOOK)):
        (tmp_path / name).write_text(text)
    # SC2154: rootmnt, ROOT, IP and DESTDIR come from initramfs-tools.
    argv = ["shellcheck", "--shell=sh", "--exclude=SC1091,SC2034,SC2154"]
    argv += [str(tmp_path / "rooturl"), str(tmp_path / "hook")]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_stand_in_cloud_image_has_the_cloud_images_layout() -> None:
    """Root in partition 1 labelled cloudimg-rootfs (image-to-tgz.sh reads 1), cloud-init, sshd and a kernel."""
    assert cloudimg.ROOT_LABEL == "cloudimg-rootfs"
    assert {"cloud-init", "openssh-server", "linux-image-amd64", "python3", "curl"} <= set(cloudimg.PACKAGES)
    assert f"root=LABEL={cloudimg.ROOT_LABEL}" in cloudimg.CMDLINE
    assert "ssh.service" in cloudimg.ENABLE
