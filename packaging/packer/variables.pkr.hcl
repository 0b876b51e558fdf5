# Variables of the harmonic-installer image. The Makefile passes SERIES, TIMEOUT and CUSTOMIZE_SCRIPT (and the
# .deb, its SHA-256 and the zipapp it builds from this repository); see README section in docs/deploying.md.

variable "ubuntu_series" {
  type        = string
  default     = "jammy"
  description = "Ubuntu series of the cloud image the image is built from (MAAS base_image ubuntu/<series>)."
}

variable "timeout" {
  type        = string
  default     = "1h"
  description = "How long Packer waits for the build VM (SSH) before giving up."
}

variable "customize_script" {
  type        = string
  default     = "/dev/null"
  description = "Script run as root in the build VM after the installer is set up; PACKER_HTTP_IP/PORT are set."
}

variable "filename" {
  type        = string
  default     = "harmonic-installer.tar.gz"
  description = "The MAAS image (root filesystem tarball) written next to this template."
}

variable "deb_file" {
  type        = string
  description = "harmonic-installer_<version>_all.deb, served from http_directory (the Makefile copies it there)."
}

variable "deb_sha256" {
  type        = string
  description = "SHA-256 of deb_file; the build VM checks it before installing."
}

variable "pyz" {
  type        = string
  description = "harmonic-install.pyz on the build host: prints the MAAS import command at the end."
}

variable "ovmf_code" {
  type        = string
  default     = "/usr/share/OVMF/OVMF_CODE.fd"
  description = "UEFI firmware code for the build VM (its variables file is copied to OVMF_VARS.fd by make)."
}

variable "accelerator" {
  type        = string
  default     = "kvm"
  description = "QEMU accelerator of the build VM: kvm (with -cpu host), or tcg where there is no KVM (slow)."
}

variable "machine_type" {
  type        = string
  default     = "q35"
  description = "QEMU machine type: q35 or pc exist in Ubuntu's and Debian's QEMU (`ubuntu` only in Ubuntu's)."
}

variable "cloudimg_url" {
  type        = string
  default     = ""
  description = "Base image to build from instead of the series' Ubuntu cloud image (a mirror, a file:// URL)."
}

variable "cloudimg_checksum" {
  type        = string
  default     = ""
  description = "Packer iso_checksum of cloudimg_url (sha256:<hex> or file:<SHA256SUMS URL>); required with it."
}

variable "extra_qemuargs" {
  type        = list(list(string))
  default     = []
  description = "More QEMU arguments for the build VM (e.g. its own -netdev, a -serial log)."
}

variable "http_bind_address" {
  type        = string
  default     = "0.0.0.0"
  description = "Address Packer's HTTP server listens on (the build VM reaches it as PACKER_HTTP_IP)."
}

variable "http_directory" {
  type        = string
  default     = "http"
  description = "Directory Packer serves to the build VM over HTTP (PACKER_HTTP_IP:PACKER_HTTP_PORT)."
}

variable "headless" {
  type        = bool
  default     = true
  description = "Run QEMU without a display."
}

variable "ssh_username" {
  type        = string
  default     = "root"
  description = "Build VM login (set by user-data-build; locked again by scripts/cleanup.sh)."
}

# Not `sensitive`: Packer would then print <sensitive> for every "ubuntu" in its output, and the import command
# would read base_image='<sensitive>/jammy'. The value is the seed's published default, valid only in the
# build VM (scripts/cleanup.sh removes it).
variable "ssh_password" {
  type        = string
  default     = "ubuntu"
  description = "Build VM password (the seed's default credentials; only valid while the image is built)."
}

variable "http_proxy" {
  type        = string
  default     = env("http_proxy")
  description = "Proxy for apt in the build VM (from the environment)."
}

variable "https_proxy" {
  type        = string
  default     = env("https_proxy")
  description = "Proxy for apt in the build VM (from the environment)."
}

variable "no_proxy" {
  type        = string
  default     = env("no_proxy")
  description = "Hosts reached directly by the build VM (from the environment)."
}
