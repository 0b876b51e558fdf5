"""systemd/harmonic-installer.service: its settings, and `systemd-analyze verify` next to cloud-init's units."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from harmonic_installer import config, plan, preflight, reboot, state
from harmonic_installer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "harmonic-installer.service"
SYSTEM_UNITS = Path("/lib/systemd/system")

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")

# Stand-ins with the ordering of cloud-init's real units (canonical/cloud-init systemd/*.tmpl).
_CLOUD_FINAL_STUB = """\
[Unit]
Description=stub of cloud-init's final stage
After=network-online.target multi-user.target
Wants=network-online.target
[Service]
Type=oneshot
ExecStart=/bin/true
RemainAfterExit=yes
"""
_CLOUD_INIT_TARGET_STUB = """\
[Unit]
Description=stub of cloud-init.target
After=multi-user.target
"""


def _unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # the documented way to keep key case
    parser.read_string(text)
    return parser


def _unit_dir(tmp_path: Path, unit_name: str, unit_text: str, *, real_cloud_init: bool) -> Path:
    """A unit directory as an enabled system would have it: our unit and cloud-init wanted by multi-user."""
    d = tmp_path / "units"
    (d / "multi-user.target.wants").mkdir(parents=True)
    (d / "cloud-init.target.wants").mkdir()
    (d / unit_name).write_text(unit_text)
    (d / "multi-user.target.wants" / unit_name).symlink_to(f"../{unit_name}")
    if real_cloud_init:
        (d / "multi-user.target.wants" / "cloud-init.target").symlink_to(SYSTEM_UNITS / "cloud-init.target")
        for name in ("cloud-init-local", "cloud-init", "cloud-config", "cloud-final"):
            (d / "cloud-init.target.wants" / f"{name}.service").symlink_to(SYSTEM_UNITS / f"{name}.service")
    else:
        (d / "cloud-final.service").write_text(_CLOUD_FINAL_STUB)
        (d / "cloud-init.target").write_text(_CLOUD_INIT_TARGET_STUB)
        (d / "multi-user.target.wants" / "cloud-init.target").symlink_to("../cloud-init.target")
        (d / "cloud-init.target.wants" / "cloud-final.service").symlink_to("../cloud-final.service")
    return d


def _verify(unit_dir: Path, unit_name: str) -> subprocess.CompletedProcess[str]:
    # The trailing ':' appends the system's unit path; verifying the target is what surfaces ordering cycles.
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "multi-user.target", unit_name],
        env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_COLOR": "0"},
        cwd=unit_dir,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@needs_analyze
def test_unit_verifies_without_any_warning_next_to_cloud_init_stubs(tmp_path: Path) -> None:
    """The unit passes `systemd-analyze verify` with multi-user.target and cloud-init's ordering: no output."""
    d = _unit_dir(tmp_path, UNIT.name, UNIT.read_text(), real_cloud_init=False)
    result = _verify(d, UNIT.name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
@pytest.mark.skipif(not (SYSTEM_UNITS / "cloud-final.service").exists(), reason="cloud-init is not installed")
def test_unit_verifies_without_any_warning_next_to_real_cloud_init_units(tmp_path: Path) -> None:
    """The unit passes `systemd-analyze verify` with the installed cloud-init's own unit files enabled."""
    d = _unit_dir(tmp_path, UNIT.name, UNIT.read_text(), real_cloud_init=True)
    result = _verify(d, UNIT.name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_analyze
def test_verify_catches_the_ordering_cycle_of_the_obvious_unit(tmp_path: Path) -> None:
    """Without After=multi-user.target, After=cloud-final.service cycles through multi-user.target: verify says so."""
    obvious = UNIT.read_text().replace("After=network-online.target multi-user.target ", "After=network-online.target ")
    assert obvious != UNIT.read_text()
    d = _unit_dir(tmp_path, "harmonic-obvious.service", obvious, real_cloud_init=False)
    result = _verify(d, "harmonic-obvious.service")
    # The exit status depends on which job systemd deletes to break the cycle (measured: 0 in about 1 run of
    # 30), so the lint fails on any output, and this test asserts the message, not the status.
    assert "ordering cycle" in result.stderr


@needs_analyze
def test_verify_reports_a_misplaced_key_on_stderr_even_when_it_exits_zero(tmp_path: Path) -> None:
    """SuccessAction= under [Service] is only a warning (exit 0), which is why the checks fail on any output."""
    text = UNIT.read_text().replace("SuccessAction=reboot\n", "")
    text = text.replace("[Service]\n", "[Service]\nSuccessAction=reboot\n")
    d = _unit_dir(tmp_path, "harmonic-misplaced.service", text, real_cloud_init=False)
    result = _verify(d, "harmonic-misplaced.service")
    assert "Unknown key" in result.stderr
    assert "SuccessAction" in result.stderr


def test_unit_reboots_only_through_systemd_on_success() -> None:
    """The program is told not to reboot; systemd reboots on success only, which needs RemainAfterExit=no."""
    unit = _unit_sections(UNIT.read_text())
    assert unit["Unit"]["SuccessAction"] == "reboot"
    assert unit["Unit"]["FailureAction"] == "none"
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["RemainAfterExit"] == "no"
    argv = unit["Service"]["ExecStart"].split()
    assert "--reboot-left-to=systemd" in argv
    settings = config.load(flags={"reboot.left_to": "systemd"}, environ={}, cmdline="")
    assert reboot.who(enabled=settings.reboot.enabled, left_to=settings.reboot.left_to) == "systemd"


def test_unit_reboots_only_after_a_run_that_wants_it() -> None:
    """ExecStartPost tests the program's fixed "reboot wanted" marker, so 'not a target' (exit 0) does not reboot."""
    unit = _unit_sections(UNIT.read_text())
    assert unit["Service"]["ExecStartPost"] == f"/usr/bin/test -f {state.REBOOT_MARKER}"


def test_reboot_marker_does_not_follow_the_state_dir() -> None:
    """Moving paths.state_dir does not move the marker the unit tests (one source of truth for the path)."""
    settings = config.load(environ={"HARMONIC_PATHS_STATE_DIR": "/var/tmp/elsewhere"}, cmdline="")
    assert not str(state.REBOOT_MARKER).startswith(str(settings.paths.state_dir))
    assert plan.Deps.__dataclass_fields__["reboot_marker"].default == state.REBOOT_MARKER


def test_unit_runs_only_when_asked_and_once_per_boot() -> None:
    """A kernel command line marker gates the unit, and the marker ExecStartPre writes stops a second start."""
    unit = _unit_sections(UNIT.read_text())
    assert unit["Unit"]["ConditionKernelCommandLine"] == "harmonic.install=1"
    marker = unit["Unit"]["ConditionPathExists"]
    assert marker.startswith("!/run/")
    assert unit["Service"]["ExecStartPre"] == f"/usr/bin/touch {marker[1:]}"


def test_unit_orders_after_network_and_cloud_init_and_logs_to_console() -> None:
    """Network-online is wanted and waited for; cloud-final comes first; the log goes to the console as lines
    (to the journal natively, as the report on stdout tells the program: journal.for_process), the report to both."""
    unit = _unit_sections(UNIT.read_text())
    after = unit["Unit"]["After"].split()
    assert {"network-online.target", "multi-user.target", "cloud-final.service"} <= set(after)
    assert "network-online.target" in unit["Unit"]["Wants"].split()
    assert unit["Service"]["StandardOutput"] == "journal+console"
    assert unit["Service"]["StandardError"] == "tty"
    assert unit["Service"]["TTYPath"] == "/dev/console"
    assert unit["Service"]["TimeoutStartSec"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_runs_the_packaged_zipapp_isolated() -> None:
    """ExecStart runs the .deb's pyz with the system python3 in isolated mode; no typer variable for the children."""
    unit = _unit_sections(UNIT.read_text())
    argv = unit["Service"]["ExecStart"].split()
    assert argv[:4] == ["/usr/bin/python3", "-I", "-S", "/usr/lib/harmonic-installer/harmonic-install.pyz"]
    assert "TYPER_USE_RICH" not in unit["Service"]["Environment"]  # the help is plain without it (test_cli.py)


_SPAN_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hr": 3600, "d": 86400}


def _span_s(text: str) -> float:
    """A systemd time span ('8h', '1h 30min', '90') in seconds."""
    import re

    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * _SPAN_UNITS[unit or "s"]
    return total


def _unit_limit() -> tuple[float, float]:
    unit = _unit_sections(UNIT.read_text())
    env = dict(item.split("=", 1) for item in unit["Service"]["Environment"].split())
    return _span_s(unit["Service"]["TimeoutStartSec"]), float(env["HARMONIC_RUN_TIME_LIMIT_S"])


def test_unit_tells_the_program_its_own_time_limit() -> None:
    """The program's run.time_limit_s (from the unit's environment) is exactly the unit's TimeoutStartSec."""
    timeout, told = _unit_limit()
    assert timeout == told
    settings = config.load(environ={"HARMONIC_RUN_TIME_LIMIT_S": str(told)}, cmdline="")
    assert settings.run.time_limit_s == timeout


def test_unit_time_limit_holds_the_worst_case_of_the_default_settings() -> None:
    """With the default budgets every download, dpkg and the write can use all their time before systemd acts."""
    timeout, _ = _unit_limit()
    settings = config.load(environ={"HARMONIC_RUN_TIME_LIMIT_S": str(timeout)}, cmdline="")
    assert preflight.time_budget(settings).total_s <= timeout
    preflight.check_time_budget(settings)  # does not raise


def test_budgets_that_outgrow_the_unit_are_refused_at_start() -> None:
    """Raising write.timeout_s past what the unit allows is exit 2 at start, with a line naming the numbers."""
    timeout, _ = _unit_limit()
    environ = {"HARMONIC_RUN_TIME_LIMIT_S": str(timeout), "HARMONIC_WRITE_TIMEOUT_S": str(timeout)}
    settings = config.load(environ=environ, cmdline="")
    with pytest.raises(ConfigError) as err:
        preflight.check_time_budget(settings)
    assert err.value.exit_code == 2
    assert "write.timeout_s" in str(err.value)
    assert "TimeoutStartSec" in str(err.value)
    assert "\n" not in str(err.value)
