"""config: seed defaults, precedence file < kernel cmdline < env < flag, validation naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFilesystem

from harmonic_installer import config
from harmonic_installer.errors import ConfigError, ExitCode


def test_defaults_are_the_seed_values(fs: FakeFilesystem) -> None:
    """With no file, cmdline, env or flags, every value is the original script's."""
    s = config.load(environ={}, cmdline="")
    assert s.server_url == "http://172.22.31.150:8080"
    assert s.package_names == ("ostree-upgrade-bootstrap_2.0.41_all.deb", "ostree-upgrade_2.0.41_all.deb")
    assert s.packages_path == "packages"
    assert s.iso_path == "apollo/latest"
    assert s.iso_release == "release-3.21.3.0-7+auto15"
    assert s.iso_filename == "APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso"
    assert s.working_dir == Path("/media/root-rw")
    assert s.iso_dir == Path("/data")
    assert s.disk_device == "/dev/sda"
    assert s.proxy_url == "http://proxy4.spoc.charterlab.com:8080"
    assert "172.22.0.0/16" in s.no_proxy
    assert s.reboot_enabled is True
    assert s.iso_sha256 is None
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
    assert s.iso_dir == Path("/srv/iso")
    assert s.sources["paths.iso_dir"] == "file /etc/harmonic-installer/config.toml"
    assert s.server_url == "http://127.0.0.2:2"
    assert s.sources["server.url"] == "kernel command line"
    assert s.iso_release == "r-env"
    assert s.sources["iso.release"] == "environment HARMONIC_ISO_RELEASE"
    assert s.disk_device == "/dev/sde"
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
    assert s.no_proxy == ("a.example", "10.0.0.0/8", "[fd00::/8]")
    assert s.reboot_enabled is False
    assert s.package_names == ("a_1_all.deb", "b_2_all.deb")


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
    assert s.disk_hints == {"serial": "S123", "min_size_gib": 100}


def test_reimage_from_the_kernel_command_line_next_to_the_unit_marker() -> None:
    """`harmonic.install=1 harmonic.install.reimage=1` (a MAAS tag): the marker is ignored, reimage is set."""
    settings = config.load(environ={}, cmdline="quiet harmonic.install=1 harmonic.install.reimage=1")
    assert settings.reimage is True
    assert settings.sources["install.reimage"] == "kernel command line"
    assert config.load(environ={"HARMONIC_INSTALL_REIMAGE": "1"}, cmdline="").reimage is True
    assert config.load(environ={}, cmdline="harmonic.install=1").reimage is False


def test_firmware_and_reboot_settings_defaults_and_validation() -> None:
    """boot_disk defaults on, efivars at /sys/firmware/efi/efivars; reboot.left_to takes systemd or cloud-init only."""
    settings = config.load(environ={}, cmdline="")
    assert settings.boot_disk is True
    assert str(settings.efivars_dir) == "/sys/firmware/efi/efivars"
    assert settings.reboot_left_to is None
    assert config.load(environ={"HARMONIC_REBOOT_LEFT_TO": "cloud-init"}, cmdline="").reboot_left_to == "cloud-init"
    with pytest.raises(ConfigError, match=r"reboot\.left_to"):
        config.load(environ={"HARMONIC_REBOOT_LEFT_TO": "init"}, cmdline="")
