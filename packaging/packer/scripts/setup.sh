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

# The cloud image boots a kernel meant for VMs; MAAS installs the kernel the machine needs when it deploys.
apt-get remove --purge -y linux-virtual 'linux-image-*'
apt-get autoremove --purge -yq
