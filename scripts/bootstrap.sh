#!/usr/bin/env bash
# Set up everything the test suite and the demo need on a fresh Debian 12 machine (run as root):
# the Debian packages (nginx, tinyproxy, mmdebstrap, qemu, ...) and a Python 3.10 virtual environment
# at .venv installed from the hash-pinned lock. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# First the one thing this script cannot install from Debian: Python 3.10 (found, or downloaded with uv where
# GitHub is reachable). Without it, stop now with the one line that says what to do.
PY="$(scripts/find-python310.sh --obtain)"

APT_PACKAGES=(
  nginx-light tinyproxy socat            # integration tests: web server, HTTP proxy, guestfwd connector
  mmdebstrap e2fsprogs uidmap            # isolated root filesystems (sandbox and VM image)
  qemu-system-x86 qemu-utils             # end-to-end tests in a VM
  ovmf                                   # UEFI firmware for the VM tests (OVMF_CODE_4M.fd, OVMF_VARS_4M.fd)
  systemd-boot-efi busybox-static        # stand-in Apollo image: a unified kernel image with a busybox initramfs
  gdisk dosfstools mtools                # stand-in Apollo image and network-boot stand-in: GPT, FAT ESP, mcopy
  cloud-image-utils                      # cloud-localds (NoCloud seed)
  dpkg-dev lintian gpgv gnupg            # .deb build and lint, SHA256SUMS signatures
  util-linux kmod fdisk                  # losetup, blockdev, sfdisk (partitioned loop disks)
  genisoimage iproute2                   # stand-in Apollo ISO; network namespaces for the sandbox
  systemd                                # systemd-analyze verify (unit lint)
  cloud-init                             # cloud-init schema (user-data lint), real cloud-final.service for verify
  shellcheck                             # lint of packaging/ and Packer shell scripts
  make                                   # make deb / pyz from the VM tests
  curl wget time gnuplot-nox             # make bench: the tools compared, /usr/bin/time, the PNG charts
  packer ovmf                            # make image-e2e: Debian's Packer 1.6 (QEMU builder), UEFI firmware
  systemd-boot-efi binutils dosfstools mtools  # make image-e2e: the stand-in cloud image's ESP and UKI
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Installed only for its schema checker and unit files: keep it from configuring this machine at its next
  # boot (a host that already had cloud-init is left alone).
  if [[ " ${missing[*]} " == *" cloud-init "* ]]; then touch /etc/cloud/cloud-init.disabled; fi
fi
# The Debian nginx and tinyproxy packages start system-wide servers (ports 80 and 8888); the tests start their own.
for svc in nginx tinyproxy; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
done

if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  echo "bootstrap: creating .venv with $PY"
  rm -rf .venv
  "$PY" -m venv .venv
fi
stamp=.venv/.lock-sha256
want="$(sha256sum requirements/dev.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "bootstrap: installing Python dependencies from requirements/dev.lock"
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/dev.lock \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  # The project itself: on sys.path through a .pth file, plus the console script (no build backend needed).
  site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$PWD" >"$site/harmonic-installer-dev.pth"
  echo "$want" >"$stamp"
fi
# The console script. A `#!` line cannot hold a path with spaces (the checkout may be anywhere): a sh launcher.
# shellcheck disable=SC2016  # expanded by the launcher, not here
launcher='#!/bin/sh
exec "$(dirname -- "$0")/python" -m harmonic_installer "$@"'
if [[ "$(cat .venv/bin/harmonic-install 2>/dev/null)" != "$launcher" ]]; then
  printf '%s\n' "$launcher" >.venv/bin/harmonic-install
  chmod +x .venv/bin/harmonic-install
fi
# The runtime wheels, so `make pyz` and the packaging tests can build offline (packaging/build_pyz.py).
wheels_stamp=.cache/wheels/.lock-sha256
want_wheels="$(sha256sum requirements/runtime.lock | cut -d' ' -f1)"
if [[ "$(cat "$wheels_stamp" 2>/dev/null)" != "$want_wheels" ]]; then
  echo "bootstrap: downloading the runtime wheels into .cache/wheels"
  "$PY" packaging/build_pyz.py --fetch-only 2> >(grep -v "^+ " >&2)
  echo "$want_wheels" >"$wheels_stamp"
fi
echo "bootstrap: ready ($(.venv/bin/python --version))"
