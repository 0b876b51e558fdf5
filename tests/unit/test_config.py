"""config: seed defaults, precedence file < kernel cmdline < env < flag, validation naming the key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from harmonic_installer import config, config_values
from harmonic_installer.errors import ConfigError, ExitCode


def test_defaults_are_the_seed_values(fs: FakeFilesystem) -> None:
    """With no file, cmdline, env or flags, every value is the original script's."""
    s = config.load(environ={}, cmdline="")
    assert s.server.url == "http://172.22.31.150:8080"
    assert s.packages.names == ("ostree-upgrade-bootstrap_2.0.41_all.deb", "ostree-upgrade_2.0.41_all.deb")
    assert s.packages.path == "packages"
    assert s.iso.path == "apollo/latest"
    assert s.iso.release == "release-3.21.3.0-7+auto15"
    assert s.iso.filename == "APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso"
    assert s.paths.working_dir == Path("/media/root-rw")
    assert s.paths.iso_dir == Path("/data")
    assert s.disk.device == "/dev/sda"
    assert s.proxy.url == "http://proxy4.spoc.charterlab.com:8080"
    assert "172.22.0.0/16" in s.proxy.no_proxy
    assert s.reboot.enabled is True
    assert s.iso.sha256 is None
    assert set(s.sources.values()) == {"default"}


def test_precedence_file_cmdline_env_flag(fs: FakeFilesystem) -> None:
    """Each layer overrides the one below it, and the source of each value is recorded."""
    fs.create_file(
        "/etc/harmonic-installer/config.toml",
        contents='[server]\nurl = "http://127.0.0.1:1"\n[iso]\nrelease = "r-file"\n[disk]\ndevice = "/dev/sdb"\n'
        '[paths]\niso_dir = "/srv/iso"\n',
    )
    s = config.load(
        environ={"HARMONIC_ISO_RELEASE": "r-env", "HARMONIC_DISK_DEVICE": "/dev/sdc"},
        cmdline="quiet harmonic.iso.release=r-cmdline harmonic.disk.device=/dev/sdd harmonic.server.url=http://127.0.0.2:2",
        flags={"disk.device": "/dev/sde", "iso.release": None},
    )
    assert s.paths.iso_dir == Path("/srv/iso")
    assert s.sources["paths.iso_dir"] == "file /etc/harmonic-installer/config.toml"
    assert s.server.url == "http://127.0.0.2:2"
    assert s.sources["server.url"] == "kernel command line"
    assert s.iso.release == "r-env"
    assert s.sources["iso.release"] == "environment HARMONIC_ISO_RELEASE"
    assert s.disk.device == "/dev/sde"
    assert s.sources["disk.device"] == "flag"


def test_explicit_config_file_must_exist(fs: FakeFilesystem) -> None:
    """--config naming a missing file is a configuration error, not a silent default."""
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(config_file=Path("/nope.toml"), environ={})


def test_malformed_toml_is_rejected_with_the_file_name(fs: FakeFilesystem) -> None:
    """A TOML syntax error names the file and exits 2."""
    fs.create_file("/c.toml", contents="[server\nurl=1")
    with pytest.raises(ConfigError, match=r"/c\.toml is not valid TOML") as info:
        config.load(config_file=Path("/c.toml"), environ={})
    assert info.value.exit_code == ExitCode.USAGE


def test_unknown_key_in_file_is_named(fs: FakeFilesystem) -> None:
    """A misspelt key is rejected, naming it."""
    fs.create_file("/c.toml", contents='[server]\nulr = "http://127.0.0.1"\n')
    with pytest.raises(ConfigError, match=r"unknown key server\.ulr"):
        config.load(config_file=Path("/c.toml"), environ={})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[server]\nurl = "ftp://127.0.0.1/"', r"invalid server\.url .*http:// or https://"),
        ("[server]\nurl = 5", r"invalid server\.url .*expected a string"),
        ('[reboot]\nenabled = "maybe"', r"invalid reboot\.enabled"),
        ('[disk]\ndevice = "/dev/../etc/passwd"', r"invalid disk\.device"),
        ('[disk]\ndevice = "sda"', r"invalid disk\.device .*under /dev"),
        ('[packages]\nnames = ["../x.deb"]', r"invalid packages\.names"),
        ('[packages]\nnames = ["a/b.deb"]', r"invalid packages\.names"),
        ('[iso]\nsha256 = "abc"', r"invalid iso\.sha256"),
        ('[paths]\niso_dir = "data"', r"invalid paths\.iso_dir .*absolute"),
        ('[proxy]\nno_proxy = ["good.example", "bad host!"]', r"invalid proxy\.no_proxy"),
        ("[download]\nattempts = 0", r"invalid download\.attempts .*at least 1"),
        ('[iso]\npath = "apollo/../../etc"', r"invalid iso\.path"),
    ],
)
def test_bad_values_name_the_key(fs: FakeFilesystem, toml: str, message: str) -> None:
    """Each bad value is a ConfigError whose message names the key and the file."""
    fs.create_file("/c.toml", contents=toml)
    with pytest.raises(ConfigError, match=message):
        config.load(config_file=Path("/c.toml"), environ={})


def test_cmdline_junk_in_our_namespace_is_rejected() -> None:
    """An unknown harmonic.* kernel parameter is an error; other parameters are ignored."""
    assert config.parse_cmdline("root=/dev/vda quiet harmonic.install=1") == {}
    with pytest.raises(ConfigError, match=r"unknown parameter harmonic\.bogus"):
        config.parse_cmdline("harmonic.bogus=1")
    with pytest.raises(ConfigError, match="needs a value"):
        config.parse_cmdline("harmonic.server.url")


def test_unknown_environment_variable_is_rejected() -> None:
    """A HARMONIC_* variable that is not a setting is an error naming it."""
    with pytest.raises(ConfigError, match="HARMONIC_SERVR_URL"):
        config.parse_environ({"HARMONIC_SERVR_URL": "x"})


def test_test_suite_variables_are_not_settings() -> None:
    """HARMONIC_TEST_* (the test suite's own switches) are ignored, so CI's environment cannot break a run."""
    assert config.parse_environ({"HARMONIC_TEST_E2E": "1", "HARMONIC_TEST_CACHE": "/x"}) == {}


def test_lists_and_bools_parse_from_strings() -> None:
    """Comma lists and yes/no strings work in the environment and on the kernel command line."""
    s = config.load(
        environ={"HARMONIC_PROXY_NO_PROXY": "a.example, 10.0.0.0/8 ,[fd00::/8]", "HARMONIC_REBOOT_ENABLED": "no"},
        cmdline="harmonic.packages.names=a_1_all.deb,b_2_all.deb",
    )
    assert s.proxy.no_proxy == ("a.example", "10.0.0.0/8", "[fd00::/8]")
    assert s.reboot.enabled is False
    assert s.packages.names == ("a_1_all.deb", "b_2_all.deb")


def test_proxy_credentials_are_redacted_in_effective_settings() -> None:
    """`settings` output never shows the proxy password."""
    s = config.load(environ={"HARMONIC_PROXY_URL": "http://user:s3cret@127.0.0.1:3128"}, cmdline="")
    rows = {k: v for k, v, _ in config.effective(s)}
    assert "s3cret" not in rows["proxy.url"]
    assert rows["proxy.url"] == "http://***@127.0.0.1:3128"


def test_bad_proxy_url_error_does_not_leak_password() -> None:
    """Even the error for a malformed proxy URL hides the credentials."""
    with pytest.raises(ConfigError) as info:
        config.load(environ={"HARMONIC_PROXY_URL": "socks5://u:hunter2@127.0.0.1:1"}, cmdline="")
    assert "hunter2" not in str(info.value)


def test_disk_hints_collect_only_set_values() -> None:
    """disk_hints lists the hints that were given, and nothing else."""
    s = config.load(environ={"HARMONIC_DISK_SERIAL": "S123", "HARMONIC_DISK_MIN_SIZE_GIB": "100"}, cmdline="")
    assert s.disk.hints == {"serial": "S123", "min_size_gib": 100}


def test_reimage_from_the_kernel_command_line_next_to_the_unit_marker() -> None:
    """`harmonic.install=1 harmonic.install.reimage=1` (a MAAS tag): the marker is ignored, reimage is set."""
    settings = config.load(environ={}, cmdline="quiet harmonic.install=1 harmonic.install.reimage=1")
    assert settings.install.reimage is True
    assert settings.sources["install.reimage"] == "kernel command line"
    assert config.load(environ={"HARMONIC_INSTALL_REIMAGE": "1"}, cmdline="").install.reimage is True
    assert config.load(environ={}, cmdline="harmonic.install=1").install.reimage is False


def test_firmware_and_reboot_settings_defaults_and_validation() -> None:
    """boot_disk defaults on, efivars at /sys/firmware/efi/efivars; reboot.left_to takes systemd or cloud-init only."""
    settings = config.load(environ={}, cmdline="")
    assert settings.firmware.boot_disk is True
    assert str(settings.firmware.efivars_dir) == "/sys/firmware/efi/efivars"
    assert settings.reboot.left_to is None
    assert config.load(environ={"HARMONIC_REBOOT_LEFT_TO": "cloud-init"}, cmdline="").reboot.left_to == "cloud-init"
    with pytest.raises(ConfigError, match=r"reboot\.left_to"):
        config.load(environ={"HARMONIC_REBOOT_LEFT_TO": "init"}, cmdline="")


def _numeric_keys() -> list[str]:
    return [k for k, default, _h in config.describe_keys() if default.replace(".", "", 1).isdigit()]


def test_every_numeric_setting_is_found() -> None:
    """The numeric settings are the ones whose default is a number (the table the next tests walk)."""
    keys = _numeric_keys()
    assert {"download.read_timeout_s", "download.attempts", "disk.min_size_gib", "maas.timeout_s"} <= set(keys)
    assert "server.url" not in keys


@pytest.mark.parametrize("key", _numeric_keys())
@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "+Infinity", "1e400", "1e30", float("nan"), float("inf")])
def test_non_finite_or_absurd_numbers_are_refused_naming_the_key(fs: FakeFilesystem, key: str, raw: object) -> None:
    """NaN, infinities and absurd sizes are a ConfigError (exit 2) naming the key, for every numeric setting."""
    with pytest.raises(ConfigError) as err:
        config.load(flags={key: raw}, environ={})
    assert key in str(err.value)
    assert err.value.exit_code == ExitCode.USAGE


def test_huge_toml_integer_is_refused(fs: FakeFilesystem) -> None:
    """An integer too large for a float (10**400 in TOML) is refused with the key, not an OverflowError."""
    fs.create_file("/etc/x.toml", contents=f"[download]\nattempts = {10**400}\n")
    with pytest.raises(ConfigError, match=r"download\.attempts.*at most 1000"):
        config.load(config_file=Path("/etc/x.toml"), environ={})


def test_over_long_release_is_refused_with_the_name_limit(fs: FakeFilesystem) -> None:
    """A release whose ISO file name would pass 255 bytes is a ConfigError naming iso.release and the limit."""
    with pytest.raises(ConfigError, match=r"iso\.release.*255"):
        config.load(environ={"HARMONIC_ISO_RELEASE": "r" * 250})
    assert config.load(environ={"HARMONIC_ISO_RELEASE": "r" * 235}).iso.filename.__len__() == 255


def test_config_and_download_share_one_name_rule() -> None:
    """The names config accepts are exactly those an ArtifactSpec accepts (one validation, names.py)."""
    from harmonic_installer import names
    from harmonic_installer.download import ArtifactSpec

    for name in ["a.deb", "a" * 255, "a" * 256, "../a.deb", "a\n", "a..b", "-a", "a b", "é.deb"]:
        try:
            config_values.safe_name(name)
            accepted = True
        except ValueError:
            accepted = False
        try:
            ArtifactSpec(url="http://127.0.0.1/x", dest_dir=Path("/tmp"), filename=name)
            spec_ok = True
        except ValueError:
            spec_ok = False
        assert accepted == spec_ok == names.is_plain_name(name), name


def test_every_setting_is_declared_once_and_reaches_every_layer(tmp_path: Path) -> None:
    """A section field is the whole declaration: its key, variable and kernel parameter all set it."""
    keys = [k for k, _d, _h in config.describe_keys()]
    assert keys == list(config._KEYS)
    for section in dataclasses.fields(config.Settings):
        if section.name in {"mode", "config_file", "sources"}:
            continue
        assert section.default_factory is not dataclasses.MISSING, section.name
        for item in dataclasses.fields(section.default_factory()):
            assert f"{section.name}.{item.name}" in keys, item
    for key in keys:
        default = config.load(environ={}, cmdline="").value(key)
        shown = next(d for k, d, _h in config.describe_keys() if k == key)
        if not shown or key in config._SECRET_KEYS:
            continue
        via_env = config.load(environ={config.env_name(key): shown}, cmdline="")
        # A kernel parameter holds no space: a command (reboot.command) is set by the file or environment there.
        via_cmdline = via_env if " " in shown else config.load(environ={}, cmdline=f"harmonic.{key}={shown}")
        table, name = key.split(".")
        (tmp_path / "c.toml").write_text(f"[{table}]\n{name} = {json.dumps(shown)}\n")
        via_file = config.load(environ={}, cmdline="", config_file=tmp_path / "c.toml")
        on_cmdline = "environment" if " " in shown else "kernel"
        layers = ((via_env, "environment"), (via_cmdline, on_cmdline), (via_file, "file"))
        for loaded, source in layers:
            assert loaded.value(key) == default, (key, source)
            assert getattr(getattr(loaded, table), name) == default
            assert loaded.sources[key].startswith(source), (key, loaded.sources[key])
