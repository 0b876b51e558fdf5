"""harmonic_installer.maas: import and deploy commands, user-data, the YAML emitter and SHA-512 crypt."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harmonic_installer import config, maas, userdata
from harmonic_installer.errors import ConfigError, ExitCode

PYZ_SHA = hashlib.sha256(b"pyz").hexdigest()
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV4YW1wbGVrZXlleGFtcGxla2V5ZXhhbXBsZWtleQ operator@example"


def openssl_hash(password: str, salt: str) -> str:
    """A SHA-512 crypt hash made as the docs tell operators to (`openssl passwd -6`), password on stdin."""
    result = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def _image(tmp_path: Path, name: str = "harmonic-installer.tar.gz", data: bytes = b"image bytes") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------- import command


def test_import_command_has_the_seeds_format_with_real_sha256_and_size(tmp_path: Path) -> None:
    """The command is the seed's loop output: custom/<name>, title, tgz, the file's sha256 and byte size."""
    path = _image(tmp_path)
    sha = hashlib.sha256(b"image bytes").hexdigest()
    assert maas.import_commands([path]) == [
        "maas admin boot-resources create name='custom/harmonic-installer' title='Harmonic Installer' "
        f"architecture='amd64/generic' filetype='tgz' sha256='{sha}' size='11' base_image='ubuntu/jammy' "
        "content@='harmonic-installer.tar.gz'"
    ]


def test_import_commands_one_per_image_with_profile_and_series(tmp_path: Path) -> None:
    """Each image gets its own command, in order, with the chosen profile and base series."""
    a = _image(tmp_path, "alpha.tar.gz", b"a")
    b = _image(tmp_path, "beta-two.tgz", b"bb")
    lines = maas.import_commands([a, b], profile="ops", series="noble")
    assert [shlex.split(line)[:3] for line in lines] == [["maas", "ops", "boot-resources"]] * 2
    words = [dict(w.split("=", 1) for w in shlex.split(line)[4:]) for line in lines]
    assert [(w["name"], w["title"], w["size"], w["base_image"]) for w in words] == [
        ("custom/alpha", "Alpha", "1", "ubuntu/noble"),
        ("custom/beta-two", "Beta Two", "2", "ubuntu/noble"),
    ]
    assert words[1]["content@"] == "beta-two.tgz"


def test_import_command_quotes_titles_and_file_names_as_single_shell_words(tmp_path: Path) -> None:
    """A quote or space in the title or file name stays inside its shell word."""
    path = _image(tmp_path, "it's a build.tar.gz")
    (line,) = maas.import_commands([path], name="ok-name", title="Bob's $(image) `x`")
    words = dict(w.split("=", 1) for w in shlex.split(line)[4:])
    assert words["title"] == "Bob's $(image) `x`"
    assert words["content@"] == "it's a build.tar.gz"
    assert words["name"] == "custom/ok-name"


@pytest.mark.parametrize(
    ("kwargs", "file_name"),
    [
        ({"profile": "admin; rm -rf /"}, "x.tar.gz"),
        ({"series": "Jammy Jellyfish"}, "x.tar.gz"),
        ({"architecture": "amd64"}, "x.tar.gz"),
        ({}, "x.iso"),
        ({}, "bad name.tar.gz"),
        ({"name": "a/b"}, "x.tar.gz"),
    ],
)
def test_import_command_rejects_bad_input_as_usage_error(
    tmp_path: Path, kwargs: dict[str, str], file_name: str
) -> None:
    """Unsafe profile, series, architecture, names and unknown image types are refused with exit code 2."""
    with pytest.raises(ConfigError) as err:
        maas.import_commands([_image(tmp_path, file_name)], **kwargs)
    assert err.value.exit_code == ExitCode.USAGE


def test_import_command_reports_a_missing_file(tmp_path: Path) -> None:
    """A missing image is a one-line usage error naming the file."""
    with pytest.raises(ConfigError, match=r"nope\.tar\.gz"):
        maas.import_commands([tmp_path / "nope.tar.gz"])


def test_name_and_title_only_apply_to_one_image(tmp_path: Path) -> None:
    """--name with several images would give them all one name: refused."""
    with pytest.raises(ConfigError, match="single image"):
        maas.import_commands([_image(tmp_path, "a.tgz"), _image(tmp_path, "b.tgz")], name="x")


def test_image_filetype_follows_the_suffix() -> None:
    """tar.gz/tgz are tgz, and dd images get their dd* types."""
    assert [maas.image_filetype(n) for n in ("a.tar.gz", "a.tgz", "a.tar.xz", "a.dd.gz", "a.dd.tar.gz")] == [
        "tgz",
        "tgz",
        "txz",
        "ddgz",
        "ddtgz",
    ]


# --------------------------------------------------------------------------------------------------- user-data


def _spec(**kwargs: object) -> userdata.UserDataSpec:
    base: dict[str, object] = {"server_url": "http://127.0.0.1:8080", "pyz_sha256": PYZ_SHA}
    base.update(kwargs)
    return userdata.UserDataSpec(**base)  # type: ignore[arg-type]  # overrides untyped on purpose


def test_user_data_is_cloud_config_that_parses_back_to_the_data() -> None:
    """The rendered text starts with #cloud-config and YAML-parses to exactly the intended structure."""
    spec = _spec(ssh_keys=(KEY,))
    text = userdata.render_user_data(spec)
    assert text.startswith("#cloud-config\n")
    assert yaml.safe_load(text) == userdata.user_data(spec)


def test_user_data_is_secure_by_default() -> None:
    """No password login, root stays disabled, no password of any kind; SSH keys go to the default user."""
    spec = _spec(ssh_keys=(KEY,))
    data = userdata.user_data(spec)
    assert data["ssh_pwauth"] is False
    assert data["disable_root"] is True
    assert data["ssh_authorized_keys"] == [KEY]
    text = userdata.render_user_data(spec)
    assert "chpasswd" not in text
    assert "passwd" not in text.replace("ssh_pwauth", "")
    assert "PermitRootLogin" not in text


def test_insecure_root_password_is_written_only_as_a_hash() -> None:
    """With a root hash, root password login is enabled (the seed's), and the file holds the hash only."""
    hashed = openssl_hash("ubuntu", "abcdefgh")
    text = userdata.render_user_data(_spec(root_password_hash=hashed))
    data = yaml.safe_load(text)
    assert data["chpasswd"]["users"] == [{"name": "root", "password": hashed, "type": "hash"}]
    assert data["ssh_pwauth"] is True
    assert data["disable_root"] is False
    assert "PermitRootLogin yes" in text
    assert "ubuntu" not in text.replace(hashed, "")


def test_user_data_reboots_only_when_the_success_marker_exists() -> None:
    """The reboot is power_state, conditional on the marker the install script writes as its last step."""
    data = userdata.user_data(_spec())
    assert data["power_state"]["mode"] == "reboot"
    assert data["power_state"]["condition"] == ["test", "-f", userdata.SUCCESS_MARKER]
    script = data["write_files"][0]["content"]
    assert script.rstrip().splitlines()[-1] == f"touch {userdata.SUCCESS_MARKER}"
    assert data["runcmd"][-1] == ["sh", data["write_files"][0]["path"]]
    assert "systemctl start" not in userdata.render_user_data(_spec())  # runcmd must not wait on another unit


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is not installed")
@pytest.mark.parametrize("insecure", [False, True])
def test_user_data_passes_cloud_init_schema(tmp_path: Path, insecure: bool) -> None:
    """cloud-init's own schema check accepts the rendered user-data, secure and insecure variants."""
    spec = _spec(ssh_keys=(KEY,), root_password_hash=openssl_hash("x", "salt") if insecure else None)
    path = tmp_path / "user-data"
    path.write_text(userdata.render_user_data(spec))
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"Valid cloud-config: {path}")


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is not installed")
def test_cloud_init_schema_check_rejects_the_seeds_mistakes(tmp_path: Path) -> None:
    """The schema check used above does fail: `password:` under a user (the seed's mistake) is rejected."""
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\nusers:\n  - name: ubuntu\n    password: x\n")
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def _run_install_script(
    tmp_path: Path, spec: userdata.UserDataSpec, served: bytes, python_rc: int, *, wants_reboot: bool = True
) -> tuple[int, Path]:
    """Run the rendered install script with stand-ins for wget and python3, in tmp_path instead of /run."""
    workdir = tmp_path / "run"
    script = userdata.user_data(spec)["write_files"][0]["content"].replace(userdata.USERDATA_DIR, str(workdir))
    marker = tmp_path / "reboot-wanted"
    script = script.replace(str(config.REBOOT_MARKER), str(marker))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "served.pyz").write_bytes(served)
    (bindir / "wget").write_text(f'#!/bin/sh\nwhile [ "$1" != "-O" ]; do shift; done\ncp {tmp_path}/served.pyz "$2"\n')
    leave = f"touch {marker}\n" if wants_reboot and python_rc == 0 else ""
    (bindir / "python3").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/python3.args\n{leave}exit {python_rc}\n')
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    (tmp_path / "install.sh").write_text(script)
    result = subprocess.run(
        ["sh", str(tmp_path / "install.sh")],
        env={"PATH": f"{bindir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, workdir


def test_install_script_runs_the_verified_zipapp_and_marks_success(tmp_path: Path) -> None:
    """A zipapp with the expected SHA-256 is run with -i --reboot-left-to=cloud-init; the success marker follows."""
    rc, workdir = _run_install_script(tmp_path, _spec(installer_args=("-p", "-v")), b"pyz", python_rc=0)
    assert rc == 0
    assert (workdir / "succeeded").exists()
    args = (tmp_path / "python3.args").read_text().split()
    pyz = f"{workdir}/harmonic-install.pyz"
    assert args == [
        "-I",
        "-S",
        pyz,
        "--server-url",
        "http://127.0.0.1:8080",
        "-p",
        "-v",
        "-i",
        "--reboot-left-to=cloud-init",
    ]


def test_install_script_stays_up_when_the_installer_wants_no_reboot(tmp_path: Path) -> None:
    """Exit 0 without the "reboot wanted" marker (not a target host): the script succeeds, no reboot."""
    rc, workdir = _run_install_script(tmp_path, _spec(), b"pyz", python_rc=0, wants_reboot=False)
    assert rc == 0
    assert (tmp_path / "python3.args").exists()
    assert not (workdir / "succeeded").exists()


def test_install_script_never_runs_a_zipapp_with_the_wrong_sha256(tmp_path: Path) -> None:
    """A tampered download fails the check: python3 never runs, the script fails, no success marker."""
    rc, workdir = _run_install_script(tmp_path, _spec(), b"tampered", python_rc=0)
    assert rc != 0
    assert not (tmp_path / "python3.args").exists()
    assert not (workdir / "succeeded").exists()
    assert not (workdir / "harmonic-install.pyz").exists()


def test_install_script_failure_leaves_no_success_marker(tmp_path: Path) -> None:
    """When the installer exits non-zero the script fails and power_state's condition stays false."""
    rc, workdir = _run_install_script(tmp_path, _spec(), b"pyz", python_rc=4)
    assert rc != 0
    assert (tmp_path / "python3.args").exists()
    assert not (workdir / "succeeded").exists()


def test_pyz_url_defaults_to_the_scripts_directory_of_the_server() -> None:
    """The zipapp is fetched from <server>/scripts/harmonic-install.pyz unless --pyz-url says otherwise."""
    default = userdata.user_data(_spec())["write_files"][0]["content"]
    assert "http://127.0.0.1:8080/scripts/harmonic-install.pyz" in default
    custom = userdata.user_data(_spec(pyz_url="http://127.0.0.2/x.pyz"))["write_files"][0]["content"]
    assert "http://127.0.0.2/x.pyz" in custom


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pyz_sha256": "abc"},
        {"server_url": "ftp://127.0.0.1/"},
        {"server_url": "http://127.0.0.1/a b"},
        {"ssh_keys": ("not a key",)},
        {"ssh_keys": (KEY + "\nssh-rsa AAAA second",)},
        {"root_password_hash": "ubuntu"},
        {"installer_args": ("--disk=/dev/sda\n",)},
    ],
)
def test_user_data_rejects_bad_input_as_usage_error(kwargs: dict[str, object]) -> None:
    """Bad hashes, URLs, keys, plaintext where a hash belongs, and control characters are refused (exit 2)."""
    with pytest.raises(ConfigError) as err:
        userdata.render_user_data(_spec(**kwargs))
    assert err.value.exit_code == ExitCode.USAGE


def test_sha256_file_hashes_the_local_zipapp(tmp_path: Path) -> None:
    """--pyz FILE gives the SHA-256 of the file's bytes."""
    path = tmp_path / "harmonic-install.pyz"
    path.write_bytes(b"pyz")
    assert maas.sha256_file(path) == PYZ_SHA


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        "No",
        "on",
        "null",
        "~",
        "",
        "123",
        "1e3",
        "0x1F",
        " leading",
        "trailing ",
        "a: b",
        "a #b",
        "# c",
        "- dash",
        "[x]",
        "{y}",
        "@at",
        "`tick`",
        "%pct",
        "!bang",
        "*star",
        "&amp",
        "|pipe",
        ">gt",
        "'single'",
        '"double"',
        "unicodé ✓",
        "\x01ctrl",
        "multi\nline\n",
        "multi\nline",
        "ends\n\n",
        "\nleading newline",
        "  indented\nblock\n",
        "tab\there\n",
        "trailing space \nline\n",
        "blank\n\nline\n",
        "---\n...\n",
    ],
)
def test_yaml_emitter_round_trips_strings_that_need_care(value: str) -> None:
    """Every string, as a value, list item and nested list item, parses back unchanged."""
    data = {"k": value, "l": [value, [value, "x"]], "m": [{"n": value, "o": True, "p": 0}]}
    assert yaml.safe_load(userdata.to_yaml(data)) == data


# ---------------------------------------------------------------------------------------------- deploy command


def test_deploy_commands_one_per_machine_with_base64_user_data() -> None:
    """Each system ID gets `maas admin machine deploy <id> ephemeral_deploy=true user_data=<base64>`."""
    ud = b"#cloud-config\nruncmd: []\n"
    b64 = base64.b64encode(ud).decode()
    assert maas.deploy_commands(["abc123", "def456"], user_data=ud) == [
        f"maas admin machine deploy abc123 ephemeral_deploy=true user_data={b64}",
        f"maas admin machine deploy def456 ephemeral_deploy=true user_data={b64}",
    ]


def test_deploy_commands_resolve_hostnames_from_machines_json() -> None:
    """With the JSON of `maas admin machines read`, hostnames and FQDNs resolve to system IDs."""
    names = maas.machines_by_name(
        json.dumps(
            [
                {"system_id": "bfxr33", "hostname": "vcmts-01", "fqdn": "vcmts-01.maas"},
                {"system_id": "q7w8e9", "hostname": "vcmts-02", "fqdn": "vcmts-02.maas"},
            ]
        )
    )
    lines = maas.deploy_commands(
        ["vcmts-01", "vcmts-02.maas"], user_data=b"#cloud-config\n", names=names, profile="ops"
    )
    assert [shlex.split(line)[1:5] for line in lines] == [
        ["ops", "machine", "deploy", "bfxr33"],
        ["ops", "machine", "deploy", "q7w8e9"],
    ]


def test_deploy_commands_with_a_custom_image() -> None:
    """--image deploys the baked image (osystem=custom) and user-data becomes optional."""
    (line,) = maas.deploy_commands(["abc123"], user_data=None, image="custom/harmonic-installer")
    assert line == (
        "maas admin machine deploy abc123 ephemeral_deploy=true osystem=custom distro_series='harmonic-installer'"
    )


@pytest.mark.parametrize(
    ("machines", "kwargs"),
    [
        ([], {"user_data": b"#cloud-config\n"}),
        (["abc123"], {"user_data": None}),
        (["abc123"], {"user_data": b"users: []\n"}),
        (["Bad Host!"], {"user_data": b"#cloud-config\n"}),
        (["abc123", "abc123"], {"user_data": b"#cloud-config\n"}),
        (["unknown"], {"user_data": b"#cloud-config\n", "names": {"known": "abc123"}}),
        (["abc123"], {"user_data": b"#cloud-config\n", "profile": "a b"}),
    ],
)
def test_deploy_commands_reject_bad_input_as_usage_error(machines: list[str], kwargs: dict[str, object]) -> None:
    """No machine, no user-data, a non-cloud-config file, bad or duplicate IDs, unknown hosts: exit 2."""
    with pytest.raises(ConfigError) as err:
        maas.deploy_commands(machines, **kwargs)  # type: ignore[arg-type]  # parametrized bad keywords
    assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        '[{"hostname": "x"}]',
        '[{"system_id": "a1b2", "hostname": "h"}, {"system_id": "c3d4", "hostname": "h"}]',
    ],
)
def test_machines_json_must_be_the_maas_machine_list(text: str) -> None:
    """Malformed machines files, machines without IDs and ambiguous hostnames are refused."""
    with pytest.raises(ConfigError):
        maas.machines_by_name(text)
