#!/bin/bash
# Build VM: install harmonic-installer_<version>_all.deb from Packer's HTTP directory and enable its unit.
# The unit only runs where the kernel command line has harmonic.install=1 (never in this build VM).
set -euxo pipefail
: "${PACKER_HTTP_IP:?}" "${PACKER_HTTP_PORT:?}" "${HARMONIC_DEB:?}" "${HARMONIC_DEB_SHA256:?}"

deb="/tmp/${HARMONIC_DEB}"
curl --fail --silent --show-error --noproxy '*' --retry 5 --output "$deb" \
  "http://${PACKER_HTTP_IP}:${PACKER_HTTP_PORT}/${HARMONIC_DEB}"
echo "${HARMONIC_DEB_SHA256}  ${deb}" | sha256sum --check --strict -
dpkg --install "$deb"
rm -f "$deb"
systemctl enable harmonic-installer.service
systemctl is-enabled harmonic-installer.service
/usr/sbin/harmonic-install --version
