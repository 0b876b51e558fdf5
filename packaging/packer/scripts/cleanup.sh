#!/bin/bash
# Build VM, last provisioner: undo what the build needed, so the image holds no build login or state.
set -euxo pipefail

# The build login (user-data-build): root gets no password at all again (`*`, as in the cloud image: a merely
# locked hash could be unlocked), the SSH drop-in, keys and host keys go.
usermod --password '*' root
rm -f /etc/ssh/sshd_config.d/00-packer-build.conf /etc/apt/apt.conf.d/90-packer-build-proxy.conf
rm -rf /root/.ssh /root/.cache
rm -f /etc/ssh/ssh_host_*

# MAAS configures the network and cloud-init runs again on the deployed machine.
rm -f /etc/netplan/50-cloud-init.yaml
cloud-init clean --logs
truncate --size 0 /etc/machine-id

apt-get autoremove --purge -yq
apt-get clean -yq
