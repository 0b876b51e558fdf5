# harmonic-installer MAAS image: the Ubuntu cloud image with harmonic-installer_<version>_all.deb installed and
# harmonic-installer.service enabled. Build it with `make all` (see the Makefile and docs/deploying.md).
# Same layout as canonical/packer-maas ubuntu-cloudimg: a NoCloud seed gives the build VM a login, provisioners
# run over SSH, and a post-processor turns the disk into the root-filesystem tarball MAAS imports.

packer {
  required_version = ">= 1.7.0"
  required_plugins {
    qemu = {
      version = "~> 1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

locals {
  cloudimg_base = "https://cloud-images.ubuntu.com/${var.ubuntu_series}/current"
  # The base image: Ubuntu's cloud image of the series, unless cloudimg_url names another (a local mirror).
  cloudimg_url      = var.cloudimg_url != "" ? var.cloudimg_url : "${local.cloudimg_base}/${var.ubuntu_series}-server-cloudimg-amd64.img"
  cloudimg_checksum = var.cloudimg_checksum != "" ? var.cloudimg_checksum : "file:${local.cloudimg_base}/SHA256SUMS"
  # `-cpu host` needs KVM; under TCG QEMU's default CPU model is used.
  qemu_cpu_args = var.accelerator == "kvm" ? [["-cpu", "host"]] : []
  proxy_env = [
    "http_proxy=${var.http_proxy}",
    "https_proxy=${var.https_proxy}",
    "no_proxy=${var.no_proxy}",
  ]
}

source "qemu" "harmonic-installer" {
  iso_url           = local.cloudimg_url
  iso_checksum      = local.cloudimg_checksum
  disk_image        = true
  use_backing_file  = true
  format            = "qcow2"
  disk_size         = "4G"
  cpus              = 2
  memory            = 2048
  headless          = var.headless
  http_directory    = var.http_directory
  http_bind_address = var.http_bind_address
  boot_wait         = "2s"
  # Packer passes `-machine type=<machine_type>,accel=<accelerator>`: Ubuntu's QEMU and Debian's both have
  # pc and q35 (the `ubuntu` machine type is Ubuntu's only).
  accelerator  = var.accelerator
  machine_type = var.machine_type
  qemu_img_args {
    create = ["-F", "qcow2"]
  }
  qemuargs = concat(local.qemu_cpu_args, [
    ["-drive", "if=pflash,format=raw,readonly=on,file=${var.ovmf_code}"],
    ["-drive", "if=pflash,format=raw,file=OVMF_VARS.fd"],
    ["-drive", "file=output-harmonic-installer/packer-harmonic-installer,format=qcow2"],
    ["-drive", "file=seeds-build.iso,format=raw"],
  ], var.extra_qemuargs)
  ssh_username           = var.ssh_username
  ssh_password           = var.ssh_password
  ssh_timeout            = var.timeout
  ssh_handshake_attempts = 500
  shutdown_command       = "shutdown -P now"
}

build {
  name    = "harmonic-installer"
  sources = ["source.qemu.harmonic-installer"]

  # Reset cloud-init and drop the cloud image's virtual kernel (MAAS installs the right one).
  provisioner "shell" {
    environment_vars = concat(local.proxy_env, ["DEBIAN_FRONTEND=noninteractive"])
    scripts          = ["${path.root}/scripts/setup.sh"]
  }

  # The .deb from Packer's HTTP directory, checked against its SHA-256, installed; the unit enabled.
  provisioner "shell" {
    environment_vars = [
      "PACKER_HTTP_IP=${build.PackerHTTPIP}",
      "PACKER_HTTP_PORT=${build.PackerHTTPPort}",
      "HARMONIC_DEB=${var.deb_file}",
      "HARMONIC_DEB_SHA256=${var.deb_sha256}",
    ]
    scripts = ["${path.root}/scripts/install-harmonic-installer.sh"]
  }

  # The operator's CUSTOMIZE_SCRIPT (default /dev/null: nothing), with Packer's HTTP server at hand.
  provisioner "shell" {
    environment_vars = concat(local.proxy_env, [
      "DEBIAN_FRONTEND=noninteractive",
      "PACKER_HTTP_IP=${build.PackerHTTPIP}",
      "PACKER_HTTP_PORT=${build.PackerHTTPPort}",
    ])
    expect_disconnect = true
    scripts           = [var.customize_script]
  }

  # Lock the build login again, remove what the build VM left behind (host keys, machine-id, cloud-init state).
  provisioner "shell" {
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    scripts          = ["${path.root}/scripts/cleanup.sh"]
  }

  post-processors {
    post-processor "shell-local" {
      inline = [
        "${path.root}/scripts/image-to-tgz.sh output-harmonic-installer/packer-harmonic-installer ${var.filename}",
      ]
      inline_shebang = "/bin/bash -e"
    }
    post-processor "shell-local" {
      inline = [
        "echo 'MAAS IMPORT: copy ${var.filename} to the MAAS server, then run there:'",
        "python3 -I -S '${var.pyz}' maas-import-command --series ${var.ubuntu_series} ${var.filename}",
      ]
      inline_shebang = "/bin/bash -e"
    }
  }
}
