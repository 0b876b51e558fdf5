#!/usr/bin/env bash
# `make demo`: on a fresh Debian 12 machine (as root), install what is needed, build the installer's .deb and
# zipapp, boot a VM from the baked image with its serial console shown live, and print a summary of what the
# installer downloaded, verified, installed and wrote. See docs/e2e.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $EUID -ne 0 ]]; then
  echo "demo: run as root (mmdebstrap, chroot dpkg and QEMU's image handling need it)" >&2
  exit 2
fi
scripts/bootstrap.sh
exec .venv/bin/python -m tests.e2e.demo "$@"
