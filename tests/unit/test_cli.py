"""cli: script-compatible flags, nothing happens before options parse, every exit code is reachable."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from harmonic_installer import cli, config, plan
from harmonic_installer import log as logsetup
from harmonic_installer.errors import ExitCode
from tests.unit.fakes import FakeDisks, FakeRunner, disk
from tests.unit.test_plan import Site, World, make_world, site  # noqa: F401 - fixture


class Boom:
    """A deps factory that must not be called (nothing may happen)."""

    def __call__(self, settings: config.Settings) -> plan.Deps:
        raise AssertionError("deps were built: something would have happened")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("HARMONIC_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "cmdline"
    empty.write_text("BOOT_IMAGE=/vmlinuz quiet\n")
    monkeypatch.setenv("HARMONIC_CMDLINE_FILE", str(empty))


def test_help_touches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """-h prints usage with the exit codes and builds no dependency (no disk, no network)."""
    assert cli.main(["-h"], deps_factory=Boom()) == 0
    out = capsys.readouterr().out
    assert "-p, --proxy" in out
    assert "-i, --install" in out
    assert "Exit codes" in out


def test_help_wins_even_when_combined(capsys: pytest.CaptureFixture[str]) -> None:
    """-pih prints help and does nothing else."""
    assert cli.main(["-pih"], deps_factory=Boom()) == 0
    assert "Usage" in capsys.readouterr().out


def test_bad_flag_is_usage_error_and_touches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown flag exits 2 with a one-line reason, nothing built."""
    assert cli.main(["-x"], deps_factory=Boom()) == ExitCode.USAGE
    assert "No such option" in capsys.readouterr().err


def test_bad_setting_value_exits_2_naming_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --server-url exits 2 with the key named and no traceback."""
    assert cli.main(["-i", "--server-url", "ftp://127.0.0.1/"], deps_factory=Boom()) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "server.url" in err
    assert "Traceback" not in err


def test_bad_log_format_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """--log-format xml is a bad setting like any other: exit 2, one line naming log.format, nothing run."""
    assert cli.main(["-i", "--log-format", "xml"], deps_factory=Boom()) == ExitCode.USAGE
    err = capsys.readouterr().err
    operator = [line for line in err.splitlines() if logsetup.find_line(line) is None]
    assert operator == ["harmonic-install: invalid log.format (from flag): must be text or json, got 'xml'"]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "env", "as_json"),
    [([], {}, False), (["--log-format", "json"], {}, True), ([], {"HARMONIC_LOG_FORMAT": "json"}, True),
     (["--log-format=text"], {"HARMONIC_LOG_FORMAT": "json"}, False)],
)  # fmt: skip
def test_log_lines_are_text_unless_json_is_asked_for(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str],
    as_json: bool,
) -> None:  # fmt: skip
    """Off a terminal too the log is one readable line per event; --log-format json or log.format=json: JSON."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main([*args, "-i", "--iso-sha256", "zz"], deps_factory=Boom()) == ExitCode.USAGE
    (line, said) = capsys.readouterr().err.splitlines()
    assert said.startswith("harmonic-install: invalid iso.sha256")
    if as_json:
        assert json.loads(line)["event"] == "run.failed"
    else:
        parsed = logsetup.parse_line(line)
        assert (parsed.level, parsed.message, parsed.fields["exit_code"]) == ("error", "run.failed", 2)


def test_without_i_prints_the_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Plain `harmonic-install -p` prints the plan with resolved settings and changes nothing."""
    runner = FakeRunner()
    factory = lambda s: plan.Deps(runner=runner, disks=FakeDisks([disk()]), environ={}, geteuid=lambda: 0)  # noqa: E731
    assert cli.main(["-pv", "--server-url", "http://127.0.0.2:9"], deps_factory=factory) == 0
    out = capsys.readouterr().out
    assert "Plan (nothing changed" in out
    assert "http://127.0.0.2:9/apollo/latest" in out
    assert "via http://proxy4.spoc.charterlab.com:8080" in out
    assert runner.calls == []


def test_dry_run_with_i_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    """-i --dry-run is the plan too."""
    factory = lambda s: plan.Deps(runner=FakeRunner(), disks=FakeDisks([]), environ={}, geteuid=lambda: 0)  # noqa: E731
    assert cli.main(["-i", "--dry-run", "--server-url", "http://127.0.0.1:9"], deps_factory=factory) == 0
    assert "Plan" in capsys.readouterr().out


def test_combined_flags_and_json_install(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """`-pvi` parses like the script; the JSON report lists every step; proxy bypassed for loopback."""
    world = make_world()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ostree-production").write_text("#!/bin/sh\n")
    (bindir / "ostree-production").chmod(0o755)
    seen: list[config.Settings] = []

    def factory(s: config.Settings) -> plan.Deps:
        seen.append(s)
        return plan.Deps(
            runner=world.runner,
            disks=FakeDisks([disk(size_bytes=10**9)]),
            environ={"PATH": f"{bindir}:/usr/bin:/bin"},
            geteuid=lambda: 0,
            sleep=lambda s: None,
            reboot_marker=tmp_path / "reboot-wanted",
        )

    args = [
        "-pvi",
        "--json",
        "--no-reboot",
        "--server-url",
        site.url,
        "--proxy-url",
        "http://127.0.0.1:1",
        "--no-proxy",
        "127.0.0.0/8",
        "--iso-release",
        "release-9.9.9.0-1+test",
        "--working-dir",
        str(tmp_path / "work"),
        "--iso-dir",
        str(tmp_path / "data"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    assert cli.main(args, deps_factory=factory) == 0
    assert seen[0].mode.proxy
    assert seen[0].mode.verbose
    assert seen[0].mode.install
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["outcome"] == "installed"
    assert [s["name"] for s in report["steps"]] == list(plan.STEPS)
    assert report["steps"][-1]["status"] == "skipped"
    # The log says which Python runs the installer (the target's is 3.10; the VM tests check it from the serial).
    lines = [logsetup.find_line(line) for line in captured.err.splitlines()]
    started = [line.fields for line in lines if line is not None and line.message == "install.started"]
    assert [e["python"] for e in started] == [platform.python_version()]


def test_failure_prints_one_line_and_exit_code(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """A failed step prints `FAILED at step X: cause (exit N)` on stderr and returns N."""
    world = make_world(dpkg_rc=1)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    factory = lambda s: plan.Deps(  # noqa: E731
        runner=world.runner,
        disks=FakeDisks([disk(size_bytes=10**9)]),
        environ={"PATH": str(bindir)},
        geteuid=lambda: 0,
        sleep=lambda s: None,
        reboot_marker=tmp_path / "reboot-wanted",
    )
    rc = cli.main(
        [
            "-i",
            "--server-url",
            site.url,
            "--iso-release",
            "release-9.9.9.0-1+test",
            "--working-dir",
            str(tmp_path / "w"),
            "--iso-dir",
            str(tmp_path / "d"),
            "--state-dir",
            str(tmp_path / "s"),
        ],
        deps_factory=factory,
    )
    assert rc == ExitCode.PACKAGES
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("harmonic-install: FAILED")]
    assert len(err_lines) == 1
    assert "at step packages" in err_lines[0]
    assert err_lines[0].endswith("(exit 5)")


def test_not_a_target_exits_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """-i on a host without the disk says so and exits 0."""
    factory = lambda s: plan.Deps(runner=FakeRunner(), disks=FakeDisks([]), environ={}, geteuid=lambda: 0)  # noqa: E731
    rc = cli.main(["-i", "--server-url", "http://127.0.0.1:9", "--state-dir", str(tmp_path)], deps_factory=factory)
    assert rc == 0
    assert "not a Harmonic cOS target" in capsys.readouterr().err


def test_precedence_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """file < kernel cmdline < env < flag, as shown by the settings subcommand."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[iso]\nrelease = "from-file"\n[disk]\ndevice = "/dev/sdf"\n[paths]\niso_dir = "/f"\n'
        '[server]\nurl = "http://127.0.0.1:1"\n'
    )
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        "quiet harmonic.iso.release=from-cmdline harmonic.disk.device=/dev/sdc harmonic.server.url=http://127.0.0.1:2\n"
    )
    monkeypatch.setenv("HARMONIC_CMDLINE_FILE", str(cmdline))
    monkeypatch.setenv("HARMONIC_ISO_RELEASE", "from-env")
    monkeypatch.setenv("HARMONIC_DISK_DEVICE", "/dev/sdd")
    assert cli.main(["--config", str(cfg), "--disk", "/dev/sde", "--json", "settings"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["paths.iso_dir"] == {"value": "/f", "source": f"file {cfg}"}
    assert data["server.url"] == {"value": "http://127.0.0.1:2", "source": "kernel command line"}
    assert data["iso.release"] == {"value": "from-env", "source": "environment HARMONIC_ISO_RELEASE"}
    assert data["disk.device"] == {"value": "/dev/sde", "source": "flag"}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version and exits 0."""
    assert cli.main(["--version"], deps_factory=Boom()) == 0
    assert "harmonic-install 0." in capsys.readouterr().out


_CHILD_ENV_PROBE = """
import os, sys
import harmonic_installer.cli
from harmonic_installer.runner import SubprocessRunner
print("parent:", "TYPER_USE_RICH" in os.environ)
probe = "import os; print('child:', 'TYPER_USE_RICH' in os.environ)"
print(SubprocessRunner().run([sys.executable, "-c", probe]).output)
"""


def test_importing_the_cli_changes_no_environment_of_children() -> None:
    """Importing cli leaves os.environ alone, so no child command inherits TYPER_USE_RICH from us."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HARMONIC_CMDLINE_FILE": "/dev/null"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD_ENV_PROBE], env=env, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "parent: False" in out
    assert "child: False" in out


def test_help_is_plain_text_without_typer_use_rich() -> None:
    """Without TYPER_USE_RICH in the environment the help is still plain text (no rich boxes on a serial console)."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HARMONIC_CMDLINE_FILE": "/dev/null", "COLUMNS": "100"}
    argv = [sys.executable, "-m", "harmonic_installer", "-h"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "Exit codes" in result.stdout
    assert not set("╭╮╰╯│─") & set(result.stdout)
    assert "\x1b[" not in result.stdout


def _install_args(site: Site, tmp_path: Path, *extra: str) -> list[str]:  # noqa: F811
    return [
        "-i",
        *extra,
        "--server-url",
        site.url,
        "--iso-release",
        "release-9.9.9.0-1+test",
        "--working-dir",
        str(tmp_path / "w"),
        "--iso-dir",
        str(tmp_path / "d"),
        "--state-dir",
        str(tmp_path / "s"),
    ]


def _uefi_factory(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> cli.DepsFactory:
    """Deps over the fake world, on a UEFI machine whose NVRAM is a directory under tmp_path."""
    (tmp_path / "efi" / "efivars").mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HARMONIC_FIRMWARE_EFIVARS_DIR", str(tmp_path / "efi" / "efivars"))
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "ostree-production").write_text("#!/bin/sh\n")
    (bindir / "ostree-production").chmod(0o755)
    return lambda s: plan.Deps(
        runner=world.runner,
        disks=world.disks,
        environ={"PATH": f"{bindir}:/usr/bin:/bin"},
        geteuid=lambda: 0,
        sleep=lambda s: None,
        reboot_marker=tmp_path / "reboot-wanted",
    )


def test_sigterm_after_the_reboot_was_requested_is_success(
    site: Site,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`systemctl reboot` returns and the shutdown's SIGTERM arrives: exit 0, the summary already said installed."""
    import os
    import signal

    world = make_world()

    def reboot(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        os.kill(os.getpid(), signal.SIGTERM)  # what systemd does to every process right after the request
        return 0, ""

    world.runner.handlers["systemctl"] = reboot
    rc = cli.main(_install_args(site, tmp_path), deps_factory=_uefi_factory(world, tmp_path, monkeypatch))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.startswith("Harmonic cOS installed")
    assert "FAILED" not in captured.err
    assert "interrupted" not in captured.err
    assert "rebooting" in captured.err
    assert world.runner.programs()[-1] == "systemctl"
    assert (tmp_path / "reboot-wanted").exists()


def test_sigterm_before_the_reboot_is_still_an_interruption(
    site: Site,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGTERM during the write (before any reboot was asked for) is exit 143, as before."""
    import os
    import signal

    world = make_world()
    writer = world.runner.handlers["ostree-production"]

    def interrupted_write(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
        if argv[1] != "list-isos":
            os.kill(os.getpid(), signal.SIGTERM)
        return writer(argv, answer)

    world.runner.handlers["ostree-production"] = interrupted_write
    rc = cli.main(_install_args(site, tmp_path), deps_factory=_uefi_factory(world, tmp_path, monkeypatch))
    assert rc == ExitCode.INTERRUPTED_TERM
    assert "systemctl" not in world.runner.programs()


def test_already_installed_says_one_line_and_exits_0(
    site: Site,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Second run on an installed disk: `already installed: ...; booting the disk`, exit 0; the plan says the same."""
    world = make_world()
    factory = _uefi_factory(world, tmp_path, monkeypatch)
    assert cli.main(_install_args(site, tmp_path, "--reboot-left-to=systemd"), deps_factory=factory) == 0
    capsys.readouterr()
    for name in ("s", "d", "w"):  # a new boot: /run and the RAM disk are fresh, NVRAM is not
        __import__("shutil").rmtree(tmp_path / name, ignore_errors=True)
    world.runner.calls.clear()

    assert cli.main(_install_args(site, tmp_path, "--dry-run"), deps_factory=factory) == 0
    plan_err = capsys.readouterr().err.strip().splitlines()
    assert plan_err[-1].startswith("harmonic-install: already installed: release release-9.9.9.0-1+test on /dev/sda")
    assert plan_err[-1].endswith(", would boot the disk")

    assert cli.main(_install_args(site, tmp_path, "--reboot-left-to=systemd"), deps_factory=factory) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("harmonic-install:")]
    assert len(lines) == 1
    assert lines[0].startswith("harmonic-install: already installed: release release-9.9.9.0-1+test on /dev/sda")
    assert "(serial S45NNA0M123456, record from 20" in lines[0]
    assert lines[0].endswith("; booting the disk")
    assert captured.out.startswith("Harmonic cOS already installed")
    assert "left to systemd" in captured.out
    assert "ostree-production" not in world.runner.programs()
    assert (tmp_path / "reboot-wanted").exists(), "the unit reboots (into the disk) on this marker"
