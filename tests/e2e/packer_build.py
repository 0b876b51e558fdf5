"""Run the real `make all` of packaging/packer with Debian's Packer (1.6.6) against the stand-in cloud image.

The recipe is the operator's: `make all` in a copy of packaging/packer, with `PACKER16=1` (the template
rendered without its `packer {}` block, see the Makefile) and `ACCEL=tcg`. What differs from an operator's
build is only what the test machine forces, passed as Packer variables in a var file:

- the base image is the local stand-in (tests/e2e/cloudimg.py) checked by its SHA-256;
- the build VM's network stays on loopback: QEMU user networking with `restrict=on`, the SSH port forwarded
  from 127.0.0.1 only, and Packer's HTTP server bound to 127.0.0.1 and reached by the guest through a
  `guestfwd` at 10.0.2.2 (where Packer tells the guest to look: PACKER_HTTP_IP). QEMU refuses a guestfwd on
  its own host address, so that address moves to 10.0.2.254;
- the guest's serial console is written to a file for the test's log.

Every provisioner runs in the VM for real, and the post-processors make the tarball and print the import
command, exactly as `make all` does for an operator.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.cloudimg import CloudImage

REPO = Path(__file__).resolve().parents[2]
PACKER_DIR = REPO / "packaging" / "packer"
TIMEOUT_S = float(os.environ.get("HARMONIC_TEST_PACKER_TIMEOUT", "3600"))
# The build VM's network: no route out (restrict=on), SSH from the host's loopback, Packer's HTTP server
# (on 127.0.0.1) at the address Packer gives the guest. `{{ .SSHHostPort }}` and `{{ .HTTPPort }}` are
# filled in by Packer's QEMU builder.
NETDEV = (
    "user,id=user.0,restrict=on,host=10.0.2.254,"
    "hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22,"
    "guestfwd=tcp:10.0.2.2:{{ .HTTPPort }}-cmd:socat - TCP:127.0.0.1:{{ .HTTPPort }}"
)
# What the CUSTOMIZE_SCRIPT fetches from Packer's HTTP server and bakes into the image.
CONFIG_TOML = "# baked in by the customize script of the image test\n[download]\nattempts = 3\n"
CUSTOMIZE = """#!/bin/bash
# The image test's CUSTOMIZE_SCRIPT: a settings file from Packer's HTTP server (docs/deploying.md's example).
set -euxo pipefail
mkdir -p /etc/harmonic-installer
curl -fsS --noproxy '*' -o /etc/harmonic-installer/config.toml \\
  "http://${PACKER_HTTP_IP}:${PACKER_HTTP_PORT}/config.toml"
echo "customize: fetched config.toml from ${PACKER_HTTP_IP}:${PACKER_HTTP_PORT}"
"""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Packer colours its lines


@dataclass(frozen=True, slots=True)
class PackerBuild:
    """What one `make all` produced."""

    returncode: int
    tarball: Path
    output: str  # make's and Packer's stdout and stderr
    duration_s: float
    log: Path
    serial_log: Path

    def import_command(self) -> str | None:
        """The `maas ... boot-resources create ...` line the last post-processor printed."""
        m = re.search(r"maas \S+ boot-resources create [^\n]*", self.output)
        return m.group(0) if m else None


def _copy_recipe(dst: Path) -> Path:
    """packaging/packer without what a build leaves behind (so the test neither reads nor litters the repo's)."""
    ignore = shutil.ignore_patterns(
        "output-*", "packer16", "packer_cache", "*.tar.gz*", "seeds-build.iso", "OVMF_VARS.fd", "*.deb"
    )
    shutil.copytree(PACKER_DIR, dst, ignore=ignore, symlinks=True)
    return dst


def _var_file(path: Path, cloud: CloudImage, serial_log: Path) -> Path:
    """The Packer variables the test machine needs (HCL2 var file)."""
    qemuargs = [["-netdev", NETDEV], ["-serial", f"file:{serial_log}"]]
    args = ", ".join("[" + ", ".join(f'"{a}"' for a in pair) + "]" for pair in qemuargs)
    path.write_text(
        f'cloudimg_url      = "file://{cloud.qcow2}"\n'
        f'cloudimg_checksum = "sha256:{cloud.sha256}"\n'
        f'http_bind_address = "127.0.0.1"\n'
        f"extra_qemuargs    = [{args}]\n"
    )
    return path


def _make_safe_top(recipe: Path) -> str:
    """The repository as the recipe's TOP, in a form make can use: make splits file names at spaces, so a
    checkout path with spaces is given relative to the recipe (the copy lives inside the checkout), or else
    through a symlink in a short private directory."""
    rel = os.path.relpath(REPO, recipe)
    if " " not in rel:
        return rel
    link = Path(tempfile.mkdtemp(prefix="hi-top-")) / "top"
    link.symlink_to(REPO)
    return str(link)


def build(workdir: Path, cloud: CloudImage, *, timeout: float = TIMEOUT_S) -> PackerBuild:
    """`make all PACKER16=1 ACCEL=tcg` in a copy of packaging/packer; the .deb and pyz must be in dist/."""
    recipe = _copy_recipe(workdir / "packer")
    (recipe / "http" / "config.toml").write_text(CONFIG_TOML)
    customize = workdir / "customize.sh"
    customize.write_text(CUSTOMIZE)
    customize.chmod(0o755)
    serial_log = workdir / "build-vm.serial.log"
    var_file = _var_file(workdir / "test.pkrvars.hcl", cloud, serial_log)
    log = workdir / "make-all.log"
    argv = [
        "make", "-C", str(recipe), "--no-print-directory", "all",
        f"TOP={_make_safe_top(recipe)}", "PACKER16=1", "ACCEL=tcg", "TIMEOUT=30m", "PACKER_LOG=1",
        f"CUSTOMIZE_SCRIPT={customize}", f"PACKER_VARS=-var-file={shlex.quote(str(var_file))}",
    ]  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}},
        "PACKER_LOG_PATH": str(workdir / "packer.log"),
        "PACKER_CACHE_DIR": str(workdir / "packer_cache"),
        "CHECKPOINT_DISABLE": "1",  # Packer's update check would leave loopback
        # Packer 1.6's shell-local post-processor runs its script from TMPDIR unquoted: keep that path free of
        # the checkout's spaces.
        "TMPDIR": tempfile.mkdtemp(prefix="hi-packer-"),
    }
    started = time.monotonic()
    try:
        with log.open("w") as out:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout, check=False)  # fmt: skip
    finally:
        shutil.rmtree(env["TMPDIR"], ignore_errors=True)
    return PackerBuild(
        returncode=proc.returncode,
        tarball=recipe / "harmonic-installer.tar.gz",
        output=_ANSI.sub("", log.read_text(errors="replace")),
        duration_s=time.monotonic() - started,
        log=log,
        serial_log=serial_log,
    )
