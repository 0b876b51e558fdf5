"""cli: the operator subcommands (maas-import-command, user-data, deploy-command) print what maas.py renders."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import yaml

from harmonic_installer import cli, config, plan
from harmonic_installer.errors import ExitCode

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV4YW1wbGVrZXlleGFtcGxla2V5ZXhhbXBsZWtleQ operator@example"


class Boom:
    """A deps factory that must not be called: operator commands touch no disk and no network."""

    def __call__(self, settings: config.Settings) -> plan.Deps:
        raise AssertionError("deps were built by an operator command")


def _main(argv: list[str]) -> int:
    return cli.main(argv, deps_factory=Boom())


def test_maas_import_command_prints_one_command_per_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two images give two boot-resources commands, with the profile and series asked for."""
    a, b = tmp_path / "harmonic-installer.tar.gz", tmp_path / "other.tar.gz"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    assert _main(["maas-import-command", str(a), str(b), "--profile", "ops", "--series", "noble"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("maas ops boot-resources create name='custom/harmonic-installer' ")
    assert f"sha256='{hashlib.sha256(b'a').hexdigest()}'" in lines[0]
    assert "base_image='ubuntu/noble'" in lines[1]


def test_maas_import_command_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing image is exit 2 and one line on stderr, nothing on stdout."""
    assert _main(["maas-import-command", str(tmp_path / "missing.tar.gz")]) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1


def test_user_data_hashes_the_local_pyz_and_the_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--pyz gives the SHA-256 checked on the target; the root password appears only as a SHA-512 crypt hash."""
    pyz = tmp_path / "harmonic-install.pyz"
    pyz.write_bytes(b"zipapp")
    keys = tmp_path / "keys.pub"
    keys.write_text(f"# team keys\n{KEY}\n\n")
    argv = ["user-data", "--server-url", "http://127.0.0.1:8080", "--pyz", str(pyz), "--ssh-key-file", str(keys)]
    argv += ["--insecure-root-password", "s3cret-pw", "--disk", "/dev/sdb", "--installer-arg=-v"]
    assert _main(argv) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(out)
    script = data["write_files"][0]["content"]
    assert hashlib.sha256(b"zipapp").hexdigest() in script
    assert "--server-url http://127.0.0.1:8080 -p --disk=/dev/sdb -v -i --reboot-left-to=cloud-init" in script
    assert data["ssh_authorized_keys"] == [KEY]
    assert "s3cret-pw" not in out
    assert data["chpasswd"]["users"][0]["password"].startswith("$6$")


def test_user_data_direct_runs_the_installer_without_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    """--direct drops -p; --pyz-sha256 is taken as given."""
    sha = "ab" * 32
    argv = ["user-data", "--server-url", "http://127.0.0.1:8080", "--pyz-sha256", sha, "--direct"]
    assert _main(argv) == 0
    script = yaml.safe_load(capsys.readouterr().out)["write_files"][0]["content"]
    assert "--server-url http://127.0.0.1:8080 -i --reboot-left-to=cloud-init" in script
    assert sha in script


@pytest.mark.parametrize(
    "argv",
    [
        ["user-data", "--server-url", "http://127.0.0.1:8080"],
        ["user-data", "--pyz-sha256", "ab" * 32],
        ["user-data", "--server-url", "http://127.0.0.1:8080", "--pyz-sha256", "ab" * 32, "--pyz", "/nonexistent"],
        ["user-data", "--server-url", "http://127.0.0.1:8080", "--pyz-sha256", "xyz"],
        ["user-data", "--server-url", "http://127.0.0.1:8080", "--pyz", "/nonexistent.pyz"],
    ],
)
def test_user_data_refuses_to_render_without_a_verifiable_pyz(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """No server, no hash, both hash sources, a bad hash or an unreadable pyz: exit 2, nothing printed."""
    assert _main(argv) == ExitCode.USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("harmonic-install: ")


def test_deploy_command_encodes_the_user_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The file's bytes travel base64-encoded, one deploy command per machine."""
    ud = tmp_path / "user-data.yaml"
    ud.write_bytes(b"#cloud-config\nruncmd: []\n")
    assert _main(["deploy-command", "abc123", "def456", "--user-data", str(ud)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[4] for line in lines] == ["abc123", "def456"]
    assert base64.b64decode(lines[0].split("user_data=", 1)[1]) == ud.read_bytes()


def test_deploy_command_resolves_hostnames_with_machines_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--machines-json maps hostnames to system IDs; an unknown hostname is exit 2."""
    machines = tmp_path / "machines.json"
    machines.write_text('[{"system_id": "bfxr33", "hostname": "vcmts-01", "fqdn": "vcmts-01.maas"}]')
    ud = tmp_path / "user-data.yaml"
    ud.write_text("#cloud-config\n")
    base = ["deploy-command", "--user-data", str(ud), "--machines-json", str(machines)]
    assert _main([*base, "vcmts-01"]) == 0
    assert " machine deploy bfxr33 " in capsys.readouterr().out
    assert _main([*base, "vcmts-99"]) == ExitCode.USAGE
    assert "vcmts-99" in capsys.readouterr().err
