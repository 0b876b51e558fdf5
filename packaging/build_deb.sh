#!/usr/bin/env bash
# Build dist/harmonic-installer_<version>_all.deb from dist/harmonic-install.pyz with plain dpkg-deb:
#   /usr/lib/harmonic-installer/harmonic-install.pyz   the zipapp (make pyz)
#   /usr/sbin/harmonic-install                         wrapper: the system python3 in isolated mode
#   /lib/systemd/system/harmonic-installer.service     the oneshot unit (installed, not enabled)
#   /usr/share/doc/harmonic-installer/{copyright,changelog.gz}, /usr/share/man/man8/harmonic-install.8.gz,
#   /usr/share/lintian/overrides/harmonic-installer (one tag that cannot apply, with its reason)
# Reproducible: every mtime is SOURCE_DATE_EPOCH (default: the last commit's time), owners are root.
#
# Usage: packaging/build_deb.sh [PYZ [OUTPUT_DIR]]
set -euo pipefail
cd "$(dirname "$0")/.."

PYZ="${1:-dist/harmonic-install.pyz}"
OUT_DIR="${2:-dist}"
PACKAGE=harmonic-installer
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' harmonic_installer/__init__.py)"
MAINTAINER="${DEB_MAINTAINER:-harmonic-installer maintainers <harmonic-installer@example.com>}"
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
  SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 1735689600)"
fi
export SOURCE_DATE_EPOCH

[[ -n "$VERSION" ]] || { echo "build_deb: no __version__ in harmonic_installer/__init__.py" >&2; exit 1; }
[[ -f "$PYZ" ]] || { echo "build_deb: $PYZ not found (run: make pyz)" >&2; exit 1; }

umask 022
stage="$(mktemp -d "${TMPDIR:-/tmp}/harmonic-deb.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
doc="$root/usr/share/doc/$PACKAGE"
mkdir -p "$root/DEBIAN" "$root/usr/lib/$PACKAGE" "$root/usr/sbin" "$root/lib/systemd/system" "$doc" \
  "$root/usr/share/man/man8"

install -m 0755 "$PYZ" "$root/usr/lib/$PACKAGE/harmonic-install.pyz"
cat >"$root/usr/sbin/harmonic-install" <<EOF
#!/bin/sh
# Run the harmonic-install zipapp with the system Python, isolated from PYTHON* variables and user site.
exec /usr/bin/python3 -I -S /usr/lib/$PACKAGE/harmonic-install.pyz "\$@"
EOF
chmod 0755 "$root/usr/sbin/harmonic-install"
install -m 0644 systemd/harmonic-installer.service "$root/lib/systemd/system/harmonic-installer.service"
gzip -9n <packaging/deb/harmonic-install.8 >"$root/usr/share/man/man8/harmonic-install.8.gz"

date_rfc2822="$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
gzip -9n >"$doc/changelog.gz" <<EOF
$PACKAGE ($VERSION) unstable; urgency=medium

  * Release $VERSION. See CHANGELOG.md in the source repository.

 -- $MAINTAINER  $date_rfc2822
EOF

# The copyright file lists the project and every library bundled inside the zipapp, read from the wheels'
# metadata (their licence texts are inside the zipapp, under *.dist-info/).
python3 - "$PYZ" >"$doc/copyright" <<'EOF'
import sys, zipfile
from email.parser import HeaderParser

print("harmonic-installer: installs Harmonic cOS from a MAAS ephemeral environment.\n")
print("Copyright (C) 2024-2026 The harmonic-installer authors. License: Proprietary.\n")
print("harmonic-install.pyz bundles these Python libraries, unmodified, each under its own licence;")
print("the licence texts are inside the archive, in each library's *.dist-info directory:\n")
with zipfile.ZipFile(sys.argv[1]) as zf:
    for name in sorted(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")):
        meta = HeaderParser().parsestr(zf.read(name).decode("utf-8", "replace"))
        licence = meta.get("License-Expression") or ""
        if not licence:
            classifiers = [c.rsplit("::", 1)[1].strip() for c in meta.get_all("Classifier", [])
                           if c.startswith("License ::") and c.count("::") >= 2]
            licence = ", ".join(classifiers) or (meta.get("License") or "see the licence file").splitlines()[0]
        print(f" {meta['Name']} {meta['Version']}: {licence}")
print("""
On Debian systems, the complete texts of the GNU Lesser General Public License version 2.1, the Apache
License version 2.0 and the Mozilla Public License version 2.0 can be found in
/usr/share/common-licenses/LGPL-2.1, /usr/share/common-licenses/Apache-2.0 and
/usr/share/common-licenses/MPL-2.0.""")
EOF

# Lintian overrides for tags that cannot apply (each with its reason).
mkdir -p "$root/usr/share/lintian/overrides"
cat >"$root/usr/share/lintian/overrides/$PACKAGE" <<'EOF'
# The unit only makes sense under systemd: it reboots through SuccessAction= in the MAAS ephemeral Ubuntu.
harmonic-installer: package-supports-alternative-init-but-no-init.d-script [lib/systemd/system/harmonic-installer.service]
EOF

installed_size="$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<EOF
Package: $PACKAGE
Version: $VERSION
Architecture: all
Maintainer: $MAINTAINER
Installed-Size: $installed_size
Depends: python3 (>= 3.10), libudev1
Section: admin
Priority: optional
Description: installs Harmonic cOS (CableOS) from a MAAS ephemeral environment
 harmonic-install downloads the vendor packages and the Apollo ISO from a
 local web server, verifies their checksums, installs the packages and
 writes Harmonic cOS to the target disk with ostree-production, then
 reboots.
 .
 The package ships the installer as one Python zipapp, a wrapper in
 /usr/sbin and a systemd unit that runs it once per boot when the kernel
 command line has harmonic.install=1. The package does not enable the unit.
EOF
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
  >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT_DIR"
deb="$OUT_DIR/${PACKAGE}_${VERSION}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "build_deb: wrote $deb ($(stat -c %s "$deb") bytes)"
