"""packaging/packer: the HCL2 template, its Makefile, the build VM's seed and the in-VM scripts (no Packer run)."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from harmonic_installer import __version__
from tests.unit.test_maas import openssl_hash

ROOT = Path(__file__).resolve().parents[2]
PACKER_DIR = ROOT / "packaging" / "packer"


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    return value


def _load(name: str) -> dict[str, Any]:
    with (PACKER_DIR / name).open() as f:
        template: dict[str, Any] = _unquote(hcl2.load(f))
    return template


def _variables() -> dict[str, dict[str, Any]]:
    variables: dict[str, dict[str, Any]] = {}
    for name in ("variables.pkr.hcl", "harmonic-installer.pkr.hcl"):
        for block in _load(name).get("variable", []):
            variables.update(block)
    return variables


def _build() -> dict[str, Any]:
    builds: list[dict[str, Any]] = _load("harmonic-installer.pkr.hcl")["build"]
    (build,) = builds
    return build


def _provisioners() -> list[tuple[str, dict[str, Any]]]:
    return [next(iter(p.items())) for p in _build()["provisioner"]]


def _make_n(*overrides: str) -> str:
    result = subprocess.run(
        ["make", "-n", "-B", "-C", str(PACKER_DIR), "all", *overrides],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "PACKER_LOG"}},
    )
    assert "packer build" in result.stdout, result.stderr
    return result.stdout


def _packer_build_command(make_output: str) -> str:
    """The `packer build` command of `make -n` output, continuation lines included."""
    lines = make_output[make_output.index("packer build") :].splitlines()
    end = next(i for i, line in enumerate(lines) if not line.endswith("\\"))
    return "\n".join(lines[: end + 1])


def _packer_build_vars(make_output: str) -> dict[str, str]:
    command = _packer_build_command(make_output)
    command = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", command.replace("\\\n", " "))  # $(sha256sum ...)
    words = shlex.split(command)  # as the shell splits it: a quoted path with spaces stays one word
    return dict(w.split("=", 1) for v, w in itertools.pairwise(words) if v == "-var")


def test_template_declares_the_seeds_variables_with_its_defaults() -> None:
    """ubuntu_series=jammy, timeout=1h, customize_script=/dev/null, the build login root/ubuntu (not censored)."""
    variables = _variables()
    defaults = {name: spec.get("default") for name, spec in variables.items()}
    assert defaults["ubuntu_series"] == "jammy"
    assert defaults["timeout"] == "1h"
    assert defaults["customize_script"] == "/dev/null"
    assert defaults["filename"] == "harmonic-installer.tar.gz"
    assert (defaults["ssh_username"], defaults["ssh_password"]) == ("root", "ubuntu")
    # Not sensitive: Packer would censor every "ubuntu" in its output, base_image='ubuntu/jammy' included.
    assert "sensitive" not in variables["ssh_password"]


def test_template_builds_from_the_ubuntu_cloud_image_of_the_series() -> None:
    """The qemu source boots the series' cloud image, checked against Ubuntu's SHA256SUMS, unless overridden."""
    template = _load("harmonic-installer.pkr.hcl")
    (source,) = template["source"]
    qemu = source["qemu"]["harmonic-installer"]
    local = template["locals"][0]
    assert qemu["disk_image"] is True
    assert qemu["iso_url"] == "${local.cloudimg_url}"
    assert qemu["iso_checksum"] == "${local.cloudimg_checksum}"
    assert local["cloudimg_base"] == "https://cloud-images.ubuntu.com/${var.ubuntu_series}/current"
    assert local["cloudimg_url"] == (
        '${var.cloudimg_url != "" ? var.cloudimg_url : '
        '"${local.cloudimg_base}/${var.ubuntu_series}-server-cloudimg-amd64.img"}'
    )
    assert local["cloudimg_checksum"] == (
        '${var.cloudimg_checksum != "" ? var.cloudimg_checksum : "file:${local.cloudimg_base}/SHA256SUMS"}'
    )
    variables = _variables()
    assert (variables["cloudimg_url"]["default"], variables["cloudimg_checksum"]["default"]) == ("", "")
    assert qemu["ssh_timeout"] == "${var.timeout}"
    assert '["-drive", "file=seeds-build.iso,format=raw"]' in qemu["qemuargs"]


def test_machine_type_and_accelerator_are_variables_that_debians_qemu_knows() -> None:
    """KVM and q35 by default; no `ubuntu` machine type anywhere; `-cpu host` only when the accelerator is KVM."""
    template = _load("harmonic-installer.pkr.hcl")
    qemu = template["source"][0]["qemu"]["harmonic-installer"]
    variables = _variables()
    assert (qemu["accelerator"], qemu["machine_type"]) == ("${var.accelerator}", "${var.machine_type}")
    assert (variables["accelerator"]["default"], variables["machine_type"]["default"]) == ("kvm", "q35")
    assert template["locals"][0]["qemu_cpu_args"] == '${var.accelerator == "kvm" ? [["-cpu", "host"]] : []}'
    assert qemu["qemuargs"].startswith("${concat(local.qemu_cpu_args, [")
    assert qemu["qemuargs"].endswith("], var.extra_qemuargs)}")
    text = (PACKER_DIR / "harmonic-installer.pkr.hcl").read_text()
    assert "ubuntu,accel" not in text
    assert '"-machine"' not in text  # Packer builds -machine from machine_type and accelerator


def test_packer16_rendering_drops_only_the_packer_block(tmp_path: Path) -> None:
    """`make packer16` writes the same template without `packer {}` (Debian's Packer 1.6 cannot read it)."""
    work = tmp_path / "packer"
    shutil.copytree(PACKER_DIR, work, ignore=shutil.ignore_patterns("packer16", "output-*", "*.deb"))
    subprocess.run(["make", "-s", "-C", str(work), "packer16"], check=True, capture_output=True)
    original = (PACKER_DIR / "harmonic-installer.pkr.hcl").read_text()
    rendered = (work / "packer16" / "harmonic-installer.pkr.hcl").read_text()
    block = original[original.index("packer {") : original.index("\n}\n", original.index("packer {")) + 3]
    assert "required_plugins" in block
    assert rendered == original.replace(block, "")
    assert (work / "packer16" / "variables.pkr.hcl").read_text() == (PACKER_DIR / "variables.pkr.hcl").read_text()
    assert (work / "packer16" / "scripts").resolve() == (work / "scripts").resolve()


def test_make_n_all_passes_the_seed_defaults_to_packer() -> None:
    """`make -n all` shows `packer build` with SERIES, TIMEOUT, CUSTOMIZE_SCRIPT defaults and PACKER_LOG=0."""
    out = _make_n()
    assert "packer init ." in out
    assert "PACKER_LOG=0 packer build" in out
    assert _packer_build_command(out).splitlines()[-1].strip() == "."  # the template directory, last
    passed = _packer_build_vars(out)
    assert (passed["accelerator"], passed["machine_type"]) == ("kvm", "q35")
    assert passed["ubuntu_series"] == "jammy"
    assert passed["timeout"] == "1h"
    assert passed["customize_script"] == "/dev/null"
    assert passed["deb_file"] == f"harmonic-installer_{__version__}_all.deb"
    assert passed["pyz"] == str(ROOT / "dist" / "harmonic-install.pyz")


def test_make_n_all_passes_overrides_through(tmp_path: Path) -> None:
    """SERIES, TIMEOUT, CUSTOMIZE_SCRIPT (made absolute) and PACKER_LOG given to make reach packer."""
    script = tmp_path / "custom.sh"
    out = _make_n("SERIES=noble", "TIMEOUT=2h", f"CUSTOMIZE_SCRIPT={script}", "PACKER_LOG=1", "PACKER=/opt/packer")
    assert "PACKER_LOG=1 /opt/packer build" in out
    passed = _packer_build_vars(out)
    assert (passed["ubuntu_series"], passed["timeout"], passed["customize_script"]) == ("noble", "2h", str(script))


def test_make_n_all_for_debians_packer_builds_the_rendering_without_init() -> None:
    """PACKER16=1 ACCEL=tcg MACHINE=pc: no `packer init`, build from packer16/, accelerator and type passed."""
    out = _make_n("PACKER16=1", "ACCEL=tcg", "MACHINE=pc", "PACKER_VARS=-var-file=/t/x.pkrvars.hcl")
    assert "packer init" not in out
    assert "awk " in out  # the rendering is made first
    passed = _packer_build_vars(out)
    assert (passed["accelerator"], passed["machine_type"]) == ("tcg", "pc")
    assert "-var-file=/t/x.pkrvars.hcl" in out
    assert _packer_build_command(out).splitlines()[-1].strip() == "packer16"


def test_makefile_and_template_agree_on_variables() -> None:
    """Every -var the Makefile passes is declared, and every variable without a default is passed."""
    variables = _variables()
    passed = set(_packer_build_vars(_make_n()))
    assert passed <= set(variables)
    assert {name for name, spec in variables.items() if "default" not in spec} <= passed


def test_make_all_builds_the_seed_and_copies_the_deb_into_packers_http_directory() -> None:
    """The NoCloud seed comes from user-data-build, and the .deb is served from http/."""
    out = _make_n()
    assert "cloud-localds seeds-build.iso user-data-build meta-data" in out
    assert (
        f"cp ../../dist/harmonic-installer_{__version__}_all.deb http/harmonic-installer_{__version__}_all.deb" in out
    )
    assert _variables()["http_directory"]["default"] == "http"


def test_customize_hook_runs_the_operators_script_with_packers_http_address() -> None:
    """CUSTOMIZE_SCRIPT is really run (unlike the original), after the install and before cleanup."""
    provisioners = _provisioners()
    scripts = [spec.get("scripts") for _, spec in provisioners]
    hook = scripts.index(["${var.customize_script}"])
    install = scripts.index(["${path.root}/scripts/install-harmonic-installer.sh"])
    cleanup = scripts.index(["${path.root}/scripts/cleanup.sh"])
    assert install < hook < cleanup
    kind, spec = provisioners[hook]
    assert kind == "shell"
    env = spec["environment_vars"]
    assert "PACKER_HTTP_IP=${build.PackerHTTPIP}" in env
    assert "PACKER_HTTP_PORT=${build.PackerHTTPPort}" in env


def test_post_processors_make_the_tgz_then_print_the_import_command() -> None:
    """The tgz is made from the Packer disk first; then our pyz prints the MAAS import command for it."""
    (chain,) = _build()["post-processors"]
    steps = [next(iter(p.items())) for p in chain["post-processor"]]
    assert [kind for kind, _ in steps] == ["shell-local", "shell-local"]
    assert steps[0][1]["inline"] == [
        "${path.root}/scripts/image-to-tgz.sh output-harmonic-installer/packer-harmonic-installer ${var.filename}"
    ]
    assert (
        "python3 -I -S '${var.pyz}' maas-import-command --series ${var.ubuntu_series} ${var.filename}"
        in steps[1][1]["inline"]
    )


def _run_install_script(tmp_path: Path, deb_sha256: str) -> tuple[int, list[str]]:
    """Run install-harmonic-installer.sh with stand-ins for curl, dpkg, systemctl and the wrapper; return calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    served = tmp_path / "served.deb"
    served.write_bytes(b"deb")
    fake = {
        "curl": f'echo curl "$@" >> {calls}; while [ "$1" != --output ]; do shift; done; cp {served} "$2"',
        "dpkg": f'echo dpkg "$@" >> {calls}',
        "systemctl": f'echo systemctl "$@" >> {calls}',
    }
    for name, body in fake.items():
        (bindir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bindir / name).chmod(0o755)
    script = (PACKER_DIR / "scripts" / "install-harmonic-installer.sh").read_text()
    script = script.replace("/usr/sbin/harmonic-install --version", f"echo wrapper >> {calls}")
    script = script.replace('deb="/tmp/', f'deb="{tmp_path}/')
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "PACKER_HTTP_IP": "127.0.0.1",
        "PACKER_HTTP_PORT": "8123",
        "HARMONIC_DEB": "harmonic-installer_1_all.deb",
        "HARMONIC_DEB_SHA256": deb_sha256,
    }
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=False)
    return result.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_build_vm_installs_the_checked_deb_from_packers_http_server_and_enables_the_unit(tmp_path: Path) -> None:
    """The .deb comes from http://PACKER_HTTP_IP:PORT/, passes its SHA-256, is installed, the unit enabled."""
    rc, calls = _run_install_script(tmp_path, hashlib.sha256(b"deb").hexdigest())
    assert rc == 0
    assert calls[0].startswith("curl ")
    assert calls[0].endswith("http://127.0.0.1:8123/harmonic-installer_1_all.deb")
    assert calls[1] == f"dpkg --install {tmp_path}/harmonic-installer_1_all.deb"
    assert calls[2:] == [
        "systemctl enable harmonic-installer.service",
        "systemctl is-enabled harmonic-installer.service",
        "wrapper",
    ]


def test_build_vm_refuses_a_deb_with_the_wrong_sha256(tmp_path: Path) -> None:
    """A .deb that does not match deb_sha256 stops the build before dpkg runs."""
    rc, calls = _run_install_script(tmp_path, "0" * 64)
    assert rc != 0
    assert [c.split()[0] for c in calls] == ["curl"]


def test_build_login_is_the_seeds_root_ubuntu_and_cleanup_removes_it() -> None:
    """user-data-build lets Packer in as root/ubuntu (hashed); cleanup.sh locks root and drops the SSH drop-in."""
    text = (PACKER_DIR / "user-data-build").read_text()
    data = yaml.safe_load(text)
    (root,) = data["users"]
    hashed = root["hashed_passwd"]
    salt = hashed.split("$")[2]
    assert openssl_hash("ubuntu", salt) == hashed
    assert not {"passwd", "plain_text_passwd", "password", "chpasswd"} & (set(root) | set(data))
    (dropin,) = data["write_files"]
    assert "PermitRootLogin yes" in dropin["content"]
    cleanup = (PACKER_DIR / "scripts" / "cleanup.sh").read_text()
    assert "usermod --password '*' root" in cleanup  # no hash left behind, not even a locked one
    assert "ssh_pwauth" not in data  # cloud-init would rewrite the image's own sshd_config
    assert dropin["path"] in cleanup
    assert "cloud-init clean --logs" in cleanup


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is not installed")
def test_build_seed_is_valid_cloud_config() -> None:
    """cloud-init's schema check accepts the build VM's user-data."""
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(PACKER_DIR / "user-data-build")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_packaging_shell_scripts_pass_shellcheck() -> None:
    """Every shell script under packaging/ passes shellcheck."""
    scripts = sorted(str(p) for p in (ROOT / "packaging").rglob("*.sh"))
    assert len(scripts) >= 5
    result = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
