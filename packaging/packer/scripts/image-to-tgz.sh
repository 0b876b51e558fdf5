#!/bin/bash
# Turn the Packer disk image into the MAAS tgz image: a gzip'd tar of the root filesystem.
# Usage (as root: loop device and mount): image-to-tgz.sh DISK_IMAGE OUTPUT.tar.gz [ROOT_PARTITION]
# The disk is read through a read-only loop device at the partition's offset (no partition scanning, so it
# also works where udev does not create partition nodes); the tar keeps owners, modes, ACLs and xattrs.
set -euo pipefail

image="${1:?usage: image-to-tgz.sh DISK_IMAGE OUTPUT.tar.gz [ROOT_PARTITION]}"
output="${2:?usage: image-to-tgz.sh DISK_IMAGE OUTPUT.tar.gz [ROOT_PARTITION]}"
partition="${3:-1}"

if [[ "$(id -u)" -ne 0 ]]; then
  echo "image-to-tgz: needs root for the loop device and the mount (run make with sudo)" >&2
  exit 1
fi
if [[ ! -f "$image" ]]; then
  echo "image-to-tgz: $image not found: the Packer build did not produce a disk" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/harmonic-tgz.XXXXXX")"
loop=""
cleanup() {
  if mountpoint -q "$work/root"; then umount "$work/root"; fi
  if [[ -n "$loop" ]]; then losetup --detach "$loop"; fi
  rm -rf "$work"
}
trap cleanup EXIT

qemu-img convert -O raw "$image" "$work/disk.raw"
read -r start sectors < <(partx --noheadings --raw --output START,SECTORS --nr "$partition" "$work/disk.raw")
if [[ -z "${sectors:-}" ]]; then
  echo "image-to-tgz: $image has no partition $partition" >&2
  exit 1
fi
loop="$(losetup --find --show --read-only --offset "$((start * 512))" --sizelimit "$((sectors * 512))" \
  "$work/disk.raw")"
mkdir "$work/root"
mount -o ro,noload "$loop" "$work/root"

compress=(gzip -6 --no-name)
if command -v pigz >/dev/null; then compress=(pigz -6 --no-name); fi
tar --create --sparse --numeric-owner --preserve-permissions --acls --xattrs --one-file-system \
  -C "$work/root" . | "${compress[@]}" >"$output.part"
mv "$output.part" "$output"
echo "image-to-tgz: wrote $output ($(stat -c %s "$output") bytes)"
