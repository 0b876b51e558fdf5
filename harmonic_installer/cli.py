"""`harmonic-install`: flags -> Settings, logging, plan.run, the report, the exit code.

Runs no command, opens no URL and reads no /sys itself: plan.py and the modules it calls do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from harmonic_installer import __version__, config
from harmonic_installer.errors import ConfigError, ExitCode, InstallerError, Interrupted

EXIT_CODES_HELP = """Exit codes: 0 success, plan shown, or not a target host (the configured disk does not exist);
2 usage or configuration error; 3 preflight (host or disk unfit, nothing changed);
4 download or verification failed (disk untouched); 5 package install failed (disk untouched);
6 disk write or reboot failed; 7 another harmonic-install is running; 130/143 interrupted (SIGINT/SIGTERM);
1 internal error (a bug: please report the log)."""

HELP = f"""Image this server with Harmonic cOS: download and verify the vendor packages and the Apollo ISO,
install the packages, write the ISO to the target disk with ostree-production, and reboot.

Without -i, prints what -i would do and changes nothing.

Settings come from /etc/harmonic-installer/config.toml (or --config), the kernel command line
(harmonic.<key>=<value>), the environment (HARMONIC_<KEY>) and these flags, later ones winning.
`harmonic-install settings` shows every setting and where it came from.

{EXIT_CODES_HELP}"""

if TYPE_CHECKING:  # plan (httpx, tenacity, pyudev) and log (structlog, which pulls in rich) are imported only
    # when a run needs them: `--help` and the operator commands start in a fraction of the time.
    from harmonic_installer import log as logsetup
    from harmonic_installer import plan, reporting

DepsFactory = Callable[[config.Settings], "plan.Deps"]

app = typer.Typer(
    name="harmonic-install",
    help=HELP,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    invoke_without_command=True,
    no_args_is_help=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"harmonic-install {__version__}")
        raise typer.Exit(0)


def _default_deps(settings: config.Settings) -> plan.Deps:
    from harmonic_installer import plan
    from harmonic_installer.disks import UdevDiskProbe
    from harmonic_installer.runner import SubprocessRunner

    return plan.Deps(runner=SubprocessRunner(), disks=UdevDiskProbe(), environ=dict(os.environ))


@app.callback()
def main_command(
    ctx: typer.Context,
    proxy: bool = typer.Option(False, "-p", "--proxy", help="Use the HTTP proxy (proxy.url) except for no_proxy."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logs: every command's argv and output."),
    install: bool = typer.Option(False, "-i", "--install", help="Download, verify, install and write the disk."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With -i: print the plan and change nothing."),
    no_reboot: bool = typer.Option(False, "--no-reboot", help="Do not reboot after a successful install."),
    reboot_left_to: str | None = typer.Option(
        None,
        "--reboot-left-to",
        metavar="systemd|cloud-init",
        help="That caller reboots after exit 0 (the unit, the user-data): run no reboot command [reboot.left_to].",
    ),
    reimage: bool = typer.Option(
        False, "--reimage", help="Image the disk even if NVRAM records it is installed already [install.reimage]."
    ),
    json_report: bool = typer.Option(False, "--json", help="Print the final report as JSON on stdout."),
    log_format: str | None = typer.Option(
        None,
        "--log-format",
        metavar="text|json",
        help="Log lines on stderr: text (one readable line per event, the default) or json [log.format].",
    ),
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML config file (default /etc/harmonic-installer/config.toml if present)."
    ),
    server_url: str | None = typer.Option(None, "--server-url", help="Web server URL [server.url]."),
    packages_names: str | None = typer.Option(None, "--packages", help="Comma-separated .deb names [packages.names]."),
    iso_path: str | None = typer.Option(None, "--iso-path", help="URL path of the ISO [iso.path]."),
    iso_release: str | None = typer.Option(None, "--iso-release", help="Expected release [iso.release]."),
    iso_sha256: str | None = typer.Option(None, "--iso-sha256", help="Pinned ISO SHA-256 [iso.sha256]."),
    disk: str | None = typer.Option(None, "--disk", help="Target disk, /dev path or by-id link [disk.device]."),
    disk_serial: str | None = typer.Option(None, "--disk-serial", help="Disk hint: serial [disk.serial]."),
    disk_model: str | None = typer.Option(None, "--disk-model", help="Disk hint: model [disk.model]."),
    disk_wwn: str | None = typer.Option(None, "--disk-wwn", help="Disk hint: WWN [disk.wwn]."),
    disk_min_size_gib: int | None = typer.Option(
        None, "--disk-min-size-gib", help="Disk hint: minimum size in GiB [disk.min_size_gib]."
    ),
    allow_removable: bool | None = typer.Option(
        None, "--allow-removable", help="Allow a removable/USB target disk [disk.allow_removable]."
    ),
    working_dir: str | None = typer.Option(None, "--working-dir", help="Where debs go [paths.working_dir]."),
    iso_dir: str | None = typer.Option(None, "--iso-dir", help="Where the ISO goes [paths.iso_dir]."),
    state_dir: str | None = typer.Option(None, "--state-dir", help="Lock and journal [paths.state_dir]."),
    proxy_url: str | None = typer.Option(None, "--proxy-url", help="Proxy URL [proxy.url]."),
    no_proxy: str | None = typer.Option(None, "--no-proxy", help="Comma-separated bypass list [proxy.no_proxy]."),
    keyring: str | None = typer.Option(
        None, "--keyring", help="gpgv keyring; SHA256SUMS.gpg must verify [checksums.keyring]."
    ),
    ca_file: str | None = typer.Option(None, "--ca-file", help="CA bundle for https [server.ca_file]."),
    insecure_allow_unverified: bool | None = typer.Option(
        None,
        "--insecure-allow-unverified",
        help="INSECURE: install artifacts that have no checksum [checksums.allow_unverified].",
    ),
    keep_disk_on_failure: bool = typer.Option(
        False, "--keep-disk-on-failure", help="After a failed write, do not wipe the partition tables."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Image this server with Harmonic cOS (see the description above)."""
    flags: dict[str, Any] = {
        "server.url": server_url,
        "packages.names": packages_names,
        "iso.path": iso_path,
        "iso.release": iso_release,
        "iso.sha256": iso_sha256,
        "disk.device": disk,
        "disk.serial": disk_serial,
        "disk.model": disk_model,
        "disk.wwn": disk_wwn,
        "disk.min_size_gib": disk_min_size_gib,
        "disk.allow_removable": allow_removable,
        "paths.working_dir": working_dir,
        "paths.iso_dir": iso_dir,
        "paths.state_dir": state_dir,
        "proxy.url": proxy_url,
        "proxy.no_proxy": no_proxy,
        "checksums.keyring": keyring,
        "server.ca_file": ca_file,
        "checksums.allow_unverified": insecure_allow_unverified,
        "reboot.enabled": False if no_reboot else None,
        "reboot.left_to": reboot_left_to,
        "install.reimage": True if reimage else None,
        "write.wipe_on_failure": False if keep_disk_on_failure else None,
        "log.format": log_format,
    }
    obj = ctx.ensure_object(dict)
    obj["flags"] = flags
    obj["config_file"] = config_file
    obj["json"] = json_report
    obj["verbose"] = verbose
    if ctx.invoked_subcommand is not None:
        return
    run_flags = config.RunFlags(proxy=proxy, install=install, dry_run=dry_run, verbose=verbose)
    raise typer.Exit(_run(obj, run_flags))


def _run(obj: dict[str, Any], run_flags: config.RunFlags) -> int:
    import structlog

    from harmonic_installer import journal, plan, preview
    from harmonic_installer import log as logsetup

    log = structlog.get_logger()
    tail = logsetup.LogTail()
    # Under systemd the events also go to the journal with their fields (the console keeps the readable line).
    sink = journal.for_process(os.environ, sys.stderr)
    # Until the settings are read (a bad one is logged too): the format the flag or the environment asks for.
    asked = str(obj["flags"].get("log.format") or os.environ.get(config.env_name("log.format")) or "")
    early = asked.strip().lower() if asked.strip().lower() in logsetup.LOG_FORMATS else "text"
    logsetup.configure(verbose=run_flags.verbose, tail=tail, fmt=early, sink=sink)
    settings: config.Settings | None = None
    try:
        environ = config.default_environ()
        settings = config.load(
            flags=obj["flags"],
            run=run_flags,
            config_file=obj["config_file"],
            environ=environ,
            cmdline=config.read_kernel_cmdline(environ),
        )
        if settings.log.format != early:
            logsetup.configure(verbose=run_flags.verbose, tail=tail, fmt=settings.log.format, sink=sink)
        for key in config.credentials_in_flags(settings):
            log.warning(
                "config.credentials_on_command_line",
                key=key,
                risk="the command line is readable by every local user in /proc/<pid>/cmdline",
                instead=f"{config.env_name(key)} or the config file (mode 0600)",
            )
        factory: DepsFactory = obj.get("deps_factory") or _default_deps
        deps = factory(settings)
        if settings.runs_install:
            log.info(
                "install.started",
                version=__version__,
                python=platform.python_version(),
                server=config.redact_url(settings.server.url),
                proxy=settings.mode.proxy,
            )
            report = _install(settings, deps, tail)
            _render(report, as_json=obj["json"])
            _say_outcome(report)
            if report.reboot != "command":
                return report.exit_code
            signals = obj.get("signals") or _Signals()
            signals.rebooting = True  # from here a SIGTERM is the reboot we asked for, not a failure
            final = plan.finish(settings, deps, report)
            if final.exit_code != 0:
                signals.rebooting = False
                _report_late_failure(settings, deps, final, tail)
                _say_outcome(final)
            return final.exit_code
        report = preview.preview(settings, deps)
    except (InstallerError, Interrupted) as exc:
        log.error("run.failed", error=exc.message, details=exc.details, exit_code=int(exc.exit_code))
        _say(f"harmonic-install: {exc.message}")
        return int(exc.exit_code)
    except Exception as exc:  # a bug: one line for the operator, the traceback in the log
        log.critical("internal_error", error=repr(exc), traceback=traceback.format_exc())
        _say(f"harmonic-install: internal error: {exc!r} (a bug; the log has the traceback)")
        return 1
    _render(report, as_json=obj["json"])
    _say_outcome(report)
    return report.exit_code


def _say_outcome(report: plan.InstallReport) -> None:
    """The one line for the operator: the failure, or why nothing was done."""
    if report.exit_code != 0 and report.error:
        where = f" at step {report.failed_step}" if report.failed_step else ""
        _say(f"harmonic-install: FAILED{where}: {report.error} (exit {report.exit_code})")
    elif report.outcome == "not-a-target" and report.error:
        _say(f"harmonic-install: {report.error}")
    elif report.note:
        _say(f"harmonic-install: {report.note}")


def _install(settings: config.Settings, deps: plan.Deps, tail: logsetup.LogTail) -> plan.InstallReport:
    """plan.run, reporting to MAAS when configured (an injected observer wins); the reporter is always closed."""
    from harmonic_installer import plan

    reporter = _reporter(settings, tail) if deps.observer is None else None
    if reporter is None:
        return plan.run(settings, deps)
    try:
        return plan.run(settings, dataclasses.replace(deps, observer=reporter))
    except Exception as exc:  # a bug: MAAS still learns that the install failed (exit 1)
        reporter.run_finished(plan.InstallReport("failed", 1, (), error=f"internal error: {exc!r}"))
        raise
    finally:
        reporter.close()  # bounded by maas.flush_timeout_s


def _reporter(settings: config.Settings, tail: logsetup.LogTail) -> reporting.Reporter | None:
    """The MAAS reporter for this run, or None (not configured, or it could not be set up: logged)."""
    import structlog

    from harmonic_installer import reporting

    try:
        return reporting.start(settings, log_tail=tail.text)
    except Exception as exc:  # reporting must never stop an install
        structlog.get_logger().warning("report.off", reason=f"could not set up MAAS reporting: {exc!r}")
        return None


def _report_late_failure(
    settings: config.Settings, deps: plan.Deps, report: plan.InstallReport, tail: logsetup.LogTail
) -> None:
    """MAAS already has the success (flushed before the reboot): tell it that the reboot command failed."""
    if deps.observer is not None:  # an injected observer was told the run's end already (once, as promised)
        return
    reporter = _reporter(settings, tail)
    if reporter is not None:
        reporter.failed_after_success(report)
        reporter.close()  # bounded by maas.flush_timeout_s


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _render(report: plan.InstallReport, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        sys.stdout.flush()
        return
    titles = {
        "planned": "Plan (nothing changed; run with -i to install)",
        "installed": "Harmonic cOS installed",
        "already-installed": "Harmonic cOS already installed: nothing downloaded, installed or written",
        "not-a-target": "Not a target host: nothing done",
        "failed": "Install FAILED",
        "interrupted": "Install INTERRUPTED",
    }
    lines = [titles.get(report.outcome, report.outcome)]
    if report.disk:
        lines.append(f"  disk:    {report.disk}")
    if report.release:
        lines.append(f"  release: {report.release}")
    for step in report.steps:
        took = f" ({step.duration_s:.1f} s)" if step.duration_s else ""
        lines.append(f"  {step.name:<10} {step.status:<8}{took} {step.detail}")
    for art in report.artifacts:
        how = "reused" if art.reused else "downloaded"
        lines.append(f"  {how} {art.path} sha256 {art.sha256} ({art.checksum_source})")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


@app.command("settings")
def settings_command(ctx: typer.Context) -> None:
    """Print every setting's effective value and where it came from (credentials redacted)."""
    obj = ctx.ensure_object(dict)
    try:
        environ = config.default_environ()
        settings = config.load(
            flags=obj.get("flags"),
            config_file=obj.get("config_file"),
            environ=environ,
            cmdline=config.read_kernel_cmdline(environ),
        )
    except InstallerError as exc:
        _say(f"harmonic-install: {exc.message}")
        raise typer.Exit(int(exc.exit_code)) from None
    rows = config.effective(settings)
    if obj.get("json"):
        typer.echo(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=2))
        return
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        typer.echo(f"{key:<{width}}  {value}    [{source}]")


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


class _RebootUnderway(BaseException):
    """SIGTERM after we asked for the reboot: the system is going down as intended."""


class _Signals:
    """SIGINT/SIGTERM stop the run (130/143), except a SIGTERM once the reboot was requested (exit 0)."""

    def __init__(self) -> None:
        self.rebooting = False

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.rebooting and signum == signal.SIGTERM:
            raise _RebootUnderway
        raise Interrupted(signum)


def _interrupted_behind(exc: BaseException) -> Interrupted | None:
    """The Interrupted that typer's `Exit(130)` (or any exception on the way) was raised from, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Interrupted):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def main(argv: list[str] | None = None, *, deps_factory: DepsFactory | None = None) -> int:
    """Entry point: parse, run, return the exit code (never a traceback for the operator)."""
    signals = _Signals()
    previous = {s: signal.signal(s, signals.handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        app(
            args=argv if argv is not None else sys.argv[1:],
            prog_name="harmonic-install",
            obj={"deps_factory": deps_factory, "signals": signals},
        )
    except SystemExit as exc:
        interrupted = _interrupted_behind(exc)
        if interrupted is not None:  # typer turns any KeyboardInterrupt into exit 130: keep the signal's own code
            _say(f"harmonic-install: {interrupted.message}")
            return int(interrupted.exit_code)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else int(ExitCode.USAGE))
    except _RebootUnderway:
        _say("harmonic-install: rebooting (SIGTERM from the shutdown we requested)")
        return 0
    except Interrupted as exc:
        _say(f"harmonic-install: {exc.message}")
        return int(exc.exit_code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = ["ConfigError", "app", "main"]

# The operator commands and the fleet group register themselves on `app` (after it and _say exist).
from harmonic_installer import cli_fleet, cli_operator  # noqa: F401
