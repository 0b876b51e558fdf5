#!/usr/bin/env bash
# The sandbox demo (docs/sandbox.md): on a fresh Debian 12 machine, as root, set everything up and run a
# complete `harmonic-install -p -i` against stand-in vendor artifacts, with a loop device as the disk, in an
# isolated root whose network namespace has only `lo`. Shows the install live, checks the disk byte for byte,
# prints a summary, and cleans up (loop device, mounts, namespaces, processes) even on failure or Ctrl-C.
#
#   scripts/sandbox-demo.sh [--iso-mib N] [--disk-mib N] [--block-delay SECONDS_PER_MIB]
#
# Environment: HARMONIC_TEST_CACHE (default /var/cache/harmonic-installer-tests) holds the cached root;
# KEEP=1 keeps the work directory (logs, web root, sandbox layers) after a successful run too.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
  echo "sandbox-demo: must run as root (loop devices, namespaces, chroot)" >&2
  exit 2
fi

scripts/bootstrap.sh

work="$(mktemp -d "${TMPDIR:-/tmp}/harmonic-sandbox-demo.XXXXXX")"

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Belt and braces: the demo detaches its loop device itself; anything still attached to a file of ours goes.
  while read -r dev; do
    [[ -n "$dev" ]] && losetup --detach "$dev" 2>/dev/null || true
  done < <(losetup --noheadings --output NAME,BACK-FILE 2>/dev/null | awk -v w="$work" 'index($2, w) == 1 {print $1}')
  # Mounts and processes live in the session's namespaces and die with it; check that nothing leaked.
  if grep -q " $work" /proc/mounts; then
    echo "sandbox-demo: unmounting leftovers under $work" >&2
    grep " $work" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount --lazy || true
  fi
  if [[ $rc -eq 0 && "${KEEP:-0}" != 1 ]]; then
    rm -rf "$work"
  else
    echo "sandbox-demo: work directory kept: $work" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the foreground: Ctrl-C reaches the demo, which passes it to the installer and unwinds (exit 130).
.venv/bin/python -m tests.support.demo "$work" "$@"
