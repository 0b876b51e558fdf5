#!/bin/bash
# Build VM, first provisioner: prepare the cloud image to become a MAAS image.
set -euxo pipefail

# apt through the build host's proxy, if it has one (removed again by cleanup.sh).
if [[ -n "${http_proxy:-}" || -n "${https_proxy:-}" ]]; then
  {
    [[ -z "${http_proxy:-}" ]] || echo "Acquire::http::Proxy \"${http_proxy}\";"
    [[ -z "${https_proxy:-}" ]] || echo "Acquire::https::Proxy \"${https_proxy}\";"
  } >/etc/apt/apt.conf.d/90-packer-build-proxy.conf
fi

# The cloud image boots a kernel meant for VMs; MAAS boots the machine with its own kernel of the base series.
# Only what is installed is named (apt-get stops at a package it does not know, e.g. linux-virtual elsewhere).
mapfile -t kernels < <(dpkg-query --show --showformat='${db:Status-Status} ${Package}\n' \
  'linux-virtual' 'linux-image-*' 'linux-headers-*' 2>/dev/null | awk '$1 == "installed" { print $2 }')
if ((${#kernels[@]})); then apt-get remove --purge -y "${kernels[@]}"; fi
apt-get autoremove --purge -yq
