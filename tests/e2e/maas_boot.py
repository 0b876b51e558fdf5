"""Boot a custom image's root tarball in memory the way MAAS deploys it with `ephemeral_deploy=true`.

What MAAS does (canonical/maas, read for this; paths in that tree):
- `src/maasserver/rpc/boot.py`, `get_boot_config_for_machine`: for `osystem=custom` the boot OS and series are
  the image's `base_image` (`install_image.split_base_image()`, e.g. ubuntu/jammy), and for a custom ephemeral
  deployment the image's subarchitecture is used as it is. `get_config` then takes the kernel and initrd from
  that base series' boot resource (`get_boot_filenames(arch, subarch, kernel_osystem, kernel_release)`,
  "the image was a custom ubuntu image or another image with base_image ubuntu and we'll use it to select the
  right kernel") and the root file from the custom image (`xinstall_path`), stored as `root.tgz`
  (`src/maasserver/forms/__init__.py`, `get_uploaded_filename`: "Root tarball images need to have a proper
  extension to work for ephemeral deployments").
- `src/provisioningserver/kernel_opts.py`, `compose_purpose_opts`: a `.tgz`/`.txz` root becomes
  `root=tar:http://<rack>:5248/images/<path>/root.tgz` (a squashfs `root=squash:...` plus overlayroot), with
  `ip=::::<hostname>:BOOTIF:dhcp ip6=off`, `cc:{'datasource_list': ['MAAS']}end_cc`, `cloud-config-url=<preseed>`,
  then `log_host`/`log_port`, then `ephemeral_opts`.
- `get_config` again: `extra_kernel_opts = machine.get_effective_kernel_options(...)` (the global kernel_opts, or
  those of the machine's tags) and, for an ephemeral deployment, they are moved into `ephemeral_opts` (no `---`
  separator). The UEFI GRUB template (`src/provisioningserver/templates/uefi/config.commissioning.template`,
  which xinstall links to) appends `BOOTIF=01-${net_default_mac}`.
- In the initrd, Ubuntu's cloud-initramfs-rooturl (`scripts/local-top/rooturl`) sees `root=tar:http...`,
  brings the network up, mounts a tmpfs, streams the tarball into it with `wget -O - | tar -xpz`, and hands it to
  initramfs-tools as the root (`ROOTFSTYPE=root_url`, `ROOTFLAGS=-o move`).

Here the base series' kernel and initrd are the stand-in cloud image's (tests/e2e/cloudimg.py: Debian 12), its
initrd rebuilt with a local-top script that does what cloud-initramfs-rooturl does (Debian has no such
package). The rack's image server (:5248/images/) and the preseed and metadata MAAS serves are static files on a
real nginx on loopback, reached through guestfwd; the guest has no disk but the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from pathlib import Path

from tests.e2e import scenarios, vm
from tests.e2e.cloudimg import CloudImage
from tests.support.maas_server import MaasServer, running
from tests.support.nginx import serve

RACK_IP = "10.0.2.110"  # the rack controller: images and metadata on :5248
RACK_PORT = 5248
HOSTNAME = "harmonic-node"
SYSTEM_ID = "abc123"
MAC = "52:54:00:12:34:56"  # QEMU's default for the first NIC
IMAGE_PATH = "images/custom/amd64/generic/harmonic-installer/uploaded/root.tgz"

# Our stand-in for cloud-initramfs-rooturl's local-top script (same contract: root=tar:URL or root=squash:URL).
ROOTURL_SCRIPT = r"""#!/bin/sh
# Test stand-in for Ubuntu's cloud-initramfs-rooturl: root=tar:http://.../root.tgz (or squash:http://...)
# becomes a tmpfs (or a loop-mounted squashfs) filled over HTTP, handed to initramfs-tools as the root.
PREREQ=""
case "$1" in prereqs) echo "$PREREQ"; exit 0 ;; esac
. /scripts/functions
case "$ROOT" in
tar:http://* | squash:http://*) ;;
*) exit 0 ;;
esac
# MAAS passes ip=::::<host>:BOOTIF:dhcp. Ubuntu's initramfs-tools reads the device BOOTIF as "the NIC whose MAC
# is in BOOTIF="; Debian's takes it for a name: leave the device out so it looks the MAC up itself.
case "$IP" in
*:BOOTIF:*) IP="$(echo "$IP" | sed 's/:BOOTIF:/::/')" ;;
esac
configure_networking || exit 1
url="${ROOT#*:}"
target="${rootmnt}.tmp"
mkdir -p "$target"
case "$ROOT" in
tar:*)
	mount -t tmpfs -o mode=0755 root_url "$target" || panic "rooturl: cannot mount a tmpfs for the root"
	case "$url" in
	*.tgz | *.tar.gz) z=z ;;
	*.txz | *.tar.xz) z=J ;;
	*) z= ;;
	esac
	echo "rooturl: unpacking $url into RAM"
	wget -q -O - "$url" | tar -C "$target" -xp${z}f - || panic "rooturl: cannot fetch and unpack $url"
	[ -x "$target/sbin" ] || panic "rooturl: $url holds no root filesystem"
	echo "rooturl: root filesystem from $url is in RAM"
	;;
squash:*)
	wget -q -O "$target.img" "$url" || panic "rooturl: cannot fetch $url"
	mount -t squashfs -o loop "$target.img" "$target" || panic "rooturl: cannot mount $url"
	;;
esac
{
	echo 'ROOTFSTYPE="root_url"'
	echo 'ROOTFLAGS="-o move"'
	echo "ROOT=\"$target\""
} >/conf/param.conf
"""


# And for its initramfs hook: GNU tar (busybox's does not read every member GNU tar writes: sparse files,
# PAX headers for ACLs and xattrs), and the squashfs module.
ROOTURL_HOOK = r"""#!/bin/sh
PREREQ=""
case "$1" in prereqs) echo "$PREREQ"; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
rm -f "${DESTDIR}/usr/bin/tar"  # busybox's applet link, if its hook ran first
copy_exec /usr/bin/tar
manual_add_modules squashfs
"""


def rooturl_initrd(cloud: CloudImage) -> Path:
    """The base series' initrd with the rooturl script (cached next to the image, by the script's hash)."""
    key = hashlib.sha256((ROOTURL_SCRIPT + ROOTURL_HOOK).encode()).hexdigest()[:12]
    final = cloud.qcow2.parent / f"initrd.rooturl-{key}"
    with vm._locked(cloud.qcow2.parent / ".initrd.rooturl.lock"):
        if final.exists():
            return final
        conf = cloud.tree / "tmp" / "initramfs-rooturl"
        if conf.exists():
            shutil.rmtree(conf)
        shutil.copytree(cloud.tree / "etc" / "initramfs-tools", conf, symlinks=True)
        script = conf / "scripts" / "local-top" / "rooturl"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(ROOTURL_SCRIPT)
        script.chmod(0o755)
        hook = conf / "hooks" / "rooturl"
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(ROOTURL_HOOK)
        hook.chmod(0o755)
        (kernel_version,) = [p.name for p in (cloud.tree / "lib" / "modules").iterdir()]
        try:
            vm._run(
                ["chroot", str(cloud.tree), "mkinitramfs", "-d", "/tmp/initramfs-rooturl", "-o", "/tmp/initrd.rooturl",
                 kernel_version],
                env={**vm._CHROOT_ENV},
            )  # fmt: skip
            shutil.move(cloud.tree / "tmp" / "initrd.rooturl", final)
            for stale in final.parent.glob("initrd.rooturl-*"):  # made from an earlier script
                if stale != final:
                    stale.unlink()
        finally:
            shutil.rmtree(conf, ignore_errors=True)
    return final


def preseed(metadata_url: str, maas: MaasServer, endpoint: str) -> str:
    """What MAAS serves at cloud-config-url for an ephemeral boot: the MAAS datasource and the reporting hook."""
    keys = (
        f"    consumer_key: {maas.consumer_key}\n"
        f"    token_key: {maas.token_key}\n"
        f"    token_secret: {maas.token_secret}\n"
    )
    return (
        "#cloud-config\n"
        f"datasource:\n  MAAS:\n    metadata_url: {metadata_url}\n{keys}"
        f"reporting:\n  maas:\n    type: webhook\n    endpoint: {endpoint}\n{keys}"
    )


def rack_tree(root: Path, tarball: Path, *, maas: MaasServer, endpoint: str) -> None:
    """The rack's files under an nginx root: the image, the preseed, the node's meta-data (MAAS API 2012-03-01)."""
    image = root / IMAGE_PATH
    image.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    try:
        image.hardlink_to(tarball)
    except OSError:
        shutil.copy2(tarball, image)
    base = f"http://{RACK_IP}:{RACK_PORT}/MAAS/metadata/"
    (root / "MAAS" / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "MAAS" / "metadata" / "preseed").write_text(preseed(base, maas, endpoint))
    meta = root / "MAAS" / "metadata" / "2012-03-01" / "meta-data"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "instance-id").write_text(SYSTEM_ID)
    (meta / "local-hostname").write_text(HOSTNAME)
    (meta / "public-keys").write_text("")
    (root / "MAAS" / "metadata" / "2012-03-01" / "user-data").write_text("#cloud-config\n{}\n")


def kernel_cmdline(tag_kernel_opts: list[str]) -> list[str]:
    """MAAS's command line for an ephemeral custom-image boot (kernel_opts.py order), then BOOTIF from GRUB."""
    return [
        "nomodeset",
        f"root=tar:http://{RACK_IP}:{RACK_PORT}/{IMAGE_PATH}",
        f"ip=::::{HOSTNAME}:BOOTIF:dhcp",
        "ip6=off",
        "cc:{'datasource_list': ['MAAS']}end_cc",
        f"cloud-config-url=http://{RACK_IP}:{RACK_PORT}/MAAS/metadata/preseed",
        f"log_host={RACK_IP}",
        "log_port=5247",
        *tag_kernel_opts,
        f"BOOTIF=01-{MAC.replace(':', '-')}",
    ]


# The unit's "skipped" line, on the console through journald (systemd.journald.forward_to_console=1).
SKIPPED = r"harmonic-installer\.service.*skipped because of an unmet condition check \(ConditionKernelCommandLine="
TIMEOUT_S = 1800.0
NOTHING_HAPPENS_S = 45.0


def boot(
    tarball: Path, cloud: CloudImage, workdir: Path, *, install: bool, timeout: float = TIMEOUT_S, live: bool = False
) -> scenarios.ScenarioResult:
    """Network-boot `tarball` into RAM with MAAS's command line; the tag's kernel_opts carry harmonic.* settings.

    With `install` (harmonic.install=1 among them) wait for QEMU to exit: the unit reboots the guest. Without,
    wait for the unit's "skipped" line and NOTHING_HAPPENS_S more, then stop QEMU (outcome "timeout").
    """
    initrd = rooturl_initrd(cloud)
    web = scenarios.web_tree(workdir / "www", None)
    disk = vm.blank_disk(workdir / "sda.img", scenarios.DISK_MIB)
    empty_root = workdir / "no-root.img"  # vm.Vm always attaches a root drive: here a blank one (/dev/vda)
    with empty_root.open("wb") as fh:
        fh.truncate(1 << 20)
    timings: dict[str, float] = {}
    with scenarios.servers(web.root, workdir) as (direct, proxied, proxy), running() as maas:
        endpoint = maas.endpoint(scenarios.MAAS_HOST_PORT)
        rack_tree(workdir / "rack", tarball, maas=maas, endpoint=endpoint)
        with serve(workdir / "rack") as rack:
            server_url = f"http://{vm.WEB_IP}"
            # The tag's kernel_opts: what an operator sets (docs/deploying.md), and the test's console.
            tag = ["console=ttyS0", "systemd.journald.forward_to_console=1"]
            tag += scenarios.kernel_cmdline(server_url, baked=install)
            spec = vm.VmSpec(
                image=vm.Image("maas-ephemeral", empty_root, cloud.kernel, initrd, None),
                disk=disk,
                forwards=[
                    vm.Forward(vm.WEB_IP, 80, direct.port),
                    vm.Forward(vm.PROXY_IP, scenarios.PROXY_PORT, proxy.port),
                    vm.Forward(scenarios.MAAS_IP, scenarios.MAAS_PORT, maas.port),
                    vm.Forward(RACK_IP, RACK_PORT, rack.port),
                ],
                cmdline=kernel_cmdline(tag),
                memory_mib=3072,
            )
            t0 = time.monotonic()
            name = "maas-install" if install else "maas-no-install"
            with vm.Vm(spec, workdir, live=live, name=name) as machine:
                if install:
                    result = machine.wait(timeout=timeout)
                else:
                    with contextlib.suppress(TimeoutError):
                        machine.wait_for(SKIPPED, timeout=timeout)
                    # Then give a wrongly started unit time to show itself; QEMU is stopped after that. (No
                    # power button: the image has no modules for MAAS's kernel, so no ACPI button driver;
                    # Ubuntu's initrd copies its modules in, cloud-initramfs-copymods, not replicated here.)
                    result = machine.wait(timeout=NOTHING_HAPPENS_S)
            timings["vm_s"] = time.monotonic() - t0
            rack_requests = tuple(rack.requests())
        (workdir / "rack-requests.log").write_text("".join(f"{line}\n" for line in rack_requests))
        return scenarios.ScenarioResult(
            scenario=scenarios.Scenario("baked"),
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
