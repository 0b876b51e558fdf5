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
from typing import TYPE_CHECKING, Any, Optional

import typer

from harmonic_installer import __version__, config, maas
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
    from harmonic_installer import plan

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
    reboot_left_to: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--reboot-left-to",
        metavar="systemd|cloud-init",
        help="That caller reboots after exit 0 (the unit, the user-data): run no reboot command [reboot.left_to].",
    ),
    reimage: bool = typer.Option(
        False, "--reimage", help="Image the disk even if NVRAM records it is installed already [install.reimage]."
    ),
    json_report: bool = typer.Option(False, "--json", help="Print the final report as JSON on stdout."),
    log_format: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--log-format",
        metavar="text|json",
        help="Log lines on stderr: text (one readable line per event, the default) or json [log.format].",
    ),
    config_file: Optional[Path] = typer.Option(  # noqa: UP045 - typer needs Optional on 3.10
        None, "--config", help="TOML config file (default /etc/harmonic-installer/config.toml if present)."
    ),
    server_url: Optional[str] = typer.Option(None, "--server-url", help="Web server URL [server.url]."),  # noqa: UP045
    packages_names: Optional[str] = typer.Option(  # noqa: UP045
        None, "--packages", help="Comma-separated .deb names [packages.names]."
    ),
    iso_path: Optional[str] = typer.Option(None, "--iso-path", help="URL path of the ISO [iso.path]."),  # noqa: UP045
    iso_release: Optional[str] = typer.Option(None, "--iso-release", help="Expected release [iso.release]."),  # noqa: UP045
    iso_sha256: Optional[str] = typer.Option(None, "--iso-sha256", help="Pinned ISO SHA-256 [iso.sha256]."),  # noqa: UP045
    disk: Optional[str] = typer.Option(None, "--disk", help="Target disk, /dev path or by-id link [disk.device]."),  # noqa: UP045
    disk_serial: Optional[str] = typer.Option(None, "--disk-serial", help="Disk hint: serial [disk.serial]."),  # noqa: UP045
    disk_model: Optional[str] = typer.Option(None, "--disk-model", help="Disk hint: model [disk.model]."),  # noqa: UP045
    disk_wwn: Optional[str] = typer.Option(None, "--disk-wwn", help="Disk hint: WWN [disk.wwn]."),  # noqa: UP045
    disk_min_size_gib: Optional[int] = typer.Option(  # noqa: UP045
        None, "--disk-min-size-gib", help="Disk hint: minimum size in GiB [disk.min_size_gib]."
    ),
    allow_removable: Optional[bool] = typer.Option(  # noqa: UP045
        None, "--allow-removable", help="Allow a removable/USB target disk [disk.allow_removable]."
    ),
    working_dir: Optional[str] = typer.Option(None, "--working-dir", help="Where debs go [paths.working_dir]."),  # noqa: UP045
    iso_dir: Optional[str] = typer.Option(None, "--iso-dir", help="Where the ISO goes [paths.iso_dir]."),  # noqa: UP045
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="Lock and journal [paths.state_dir]."),  # noqa: UP045
    proxy_url: Optional[str] = typer.Option(None, "--proxy-url", help="Proxy URL [proxy.url]."),  # noqa: UP045
    no_proxy: Optional[str] = typer.Option(None, "--no-proxy", help="Comma-separated bypass list [proxy.no_proxy]."),  # noqa: UP045
    keyring: Optional[str] = typer.Option(  # noqa: UP045
        None, "--keyring", help="gpgv keyring; SHA256SUMS.gpg must verify [checksums.keyring]."
    ),
    ca_file: Optional[str] = typer.Option(None, "--ca-file", help="CA bundle for https [server.ca_file]."),  # noqa: UP045
    insecure_allow_unverified: Optional[bool] = typer.Option(  # noqa: UP045
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
        if settings.log_format != early:
            logsetup.configure(verbose=run_flags.verbose, tail=tail, fmt=settings.log_format, sink=sink)
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
                server=config.redact_url(settings.server_url),
                proxy=settings.proxy_enabled,
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
    import structlog

    from harmonic_installer import plan, reporting

    log = structlog.get_logger()
    reporter = None
    if deps.observer is None:
        try:
            reporter = reporting.start(settings, log_tail=tail.text)
        except Exception as exc:  # reporting must never stop an install
            log.warning("report.off", reason=f"could not set up MAAS reporting: {exc!r}")
    if reporter is None:
        return plan.run(settings, deps)
    try:
        return plan.run(settings, dataclasses.replace(deps, observer=reporter))
    except Exception as exc:  # a bug: MAAS still learns that the install failed (exit 1)
        reporter.run_finished(plan.InstallReport("failed", 1, (), error=f"internal error: {exc!r}"))
        raise
    finally:
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


# Operator commands (run on a workstation or the MAAS server, never on the target): maas.py renders, we print.


def _operator(render: Callable[[], list[str] | str]) -> None:
    try:
        out = render()
    except InstallerError as exc:
        _say(f"harmonic-install: {exc.message}")
        raise typer.Exit(int(exc.exit_code)) from None
    typer.echo(out if isinstance(out, str) else "\n".join(out), nl=not isinstance(out, str))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc


@app.command("maas-import-command")
def maas_import_command(
    images: list[Path] = typer.Argument(
        ..., metavar="IMAGE.tar.gz...", help="Built images (harmonic-installer.tar.gz)."
    ),
    profile: str = typer.Option(maas.DEFAULT_PROFILE, "--profile", help="MAAS CLI profile (`maas login <profile>`)."),
    series: str = typer.Option(maas.DEFAULT_SERIES, "--series", help="Ubuntu series of the image (base_image)."),
    architecture: str = typer.Option(maas.DEFAULT_ARCHITECTURE, "--architecture", help="MAAS architecture."),
    name: Optional[str] = typer.Option(None, "--name", help="Image name (default: file name up to the first dot)."),  # noqa: UP045
    title: Optional[str] = typer.Option(None, "--title", help="Image title (default: from the name)."),  # noqa: UP045
) -> None:
    """Print the MAAS command that imports each image (boot-resources create, with SHA-256 and size)."""
    _operator(
        lambda: maas.import_commands(
            images, profile=profile, series=series, architecture=architecture, name=name, title=title
        )
    )


@app.command("user-data")
def user_data_command(
    ctx: typer.Context,
    server_url: Optional[str] = typer.Option(  # noqa: UP045
        None, "--server-url", help="Web server with packages/, apollo/, scripts/."
    ),
    pyz: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--pyz", help="The harmonic-install.pyz you publish: its SHA-256 is used."
    ),
    pyz_sha256: Optional[str] = typer.Option(None, "--pyz-sha256", help="SHA-256 of the published pyz."),  # noqa: UP045
    pyz_url: Optional[str] = typer.Option(  # noqa: UP045
        None, "--pyz-url", help="Default: <server-url>/scripts/harmonic-install.pyz."
    ),
    proxy: bool = typer.Option(
        True, "--proxy/--direct", help="Run the installer with -p (the proxy, except no_proxy)."
    ),
    disk: Optional[str] = typer.Option(None, "--disk", help="Target disk for the installer (--disk)."),  # noqa: UP045
    iso_sha256: Optional[str] = typer.Option(None, "--iso-sha256", help="Pinned ISO SHA-256 for the installer."),  # noqa: UP045
    installer_arg: list[str] = typer.Option(
        [], "--installer-arg", help="Extra installer flag, e.g. --installer-arg=-v."
    ),
    ssh_key: list[str] = typer.Option([], "--ssh-key", help="SSH public key for the ubuntu user (repeatable)."),
    ssh_key_file: list[Path] = typer.Option([], "--ssh-key-file", help="File of SSH public keys (repeatable)."),
    insecure_root_password_hash: Optional[str] = typer.Option(  # noqa: UP045
        None,
        "--insecure-root-password-hash",
        help="INSECURE: allow root SSH login with the password of this crypt hash (make one with `openssl passwd -6`).",
    ),
) -> None:
    """Print cloud-init user-data for a MAAS ephemeral deploy: fetch, verify and run the pyz; reboot on success."""

    def render() -> str:
        url = server_url or ctx.ensure_object(dict).get("flags", {}).get("server.url")
        if not url:
            raise ConfigError("user-data needs --server-url (the web server the target downloads from)")
        if (pyz is None) == (pyz_sha256 is None):
            raise ConfigError("pass exactly one of --pyz FILE or --pyz-sha256 HEX: the pyz is never run unverified")
        keys = list(ssh_key)
        for path in ssh_key_file:
            text = _read(path, "SSH key file").decode("utf-8", "replace")
            keys += [k for k in text.splitlines() if k.strip() and not k.lstrip().startswith("#")]
        args = ["-p"] if proxy else []
        args += [f"--disk={disk}"] if disk else []
        args += [f"--iso-sha256={iso_sha256}"] if iso_sha256 else []
        spec = maas.UserDataSpec(
            server_url=url,
            pyz_sha256=maas.sha256_file(pyz) if pyz is not None else str(pyz_sha256),
            pyz_url=pyz_url,
            installer_args=(*args, *installer_arg),
            ssh_keys=tuple(keys),
            root_password_hash=insecure_root_password_hash,
        )
        return maas.render_user_data(spec)

    _operator(render)


@app.command("deploy-command")
def deploy_command(
    machines: list[str] = typer.Argument(..., metavar="MACHINE...", help="MAAS system IDs (or hostnames, see below)."),
    user_data: Optional[Path] = typer.Option(None, "--user-data", help="File written by `harmonic-install user-data`."),  # noqa: UP045
    profile: str = typer.Option(maas.DEFAULT_PROFILE, "--profile", help="MAAS CLI profile."),
    machines_json: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--machines-json", help="Output of `maas <profile> machines read`, to name machines by hostname."
    ),
    image: Optional[str] = typer.Option(None, "--image", help="Deploy this custom image (the baked one) instead."),  # noqa: UP045
) -> None:
    """Print the MAAS command that deploys each machine ephemerally with the user-data (machine deploy)."""

    def render() -> list[str]:
        names = None
        if machines_json is not None:
            names = maas.machines_by_name(_read(machines_json, "machines file").decode("utf-8", "replace"))
        data = _read(user_data, "user-data file") if user_data is not None else None
        return maas.deploy_commands(machines, user_data=data, profile=profile, names=names, image=image)

    _operator(render)


# Fleet (operator side): deploy and watch many machines through MAAS's REST API. harmonic_installer.fleet is
# imported only when a fleet command runs (it is never needed on a target).

FLEET_EXIT_HELP = """Exit codes: 0 every machine installed (or the dry run printed); 2 usage (flags, no API key,
unknown profile); 10 MAAS unreachable or answered an error; 11 MAAS refused the API key; 12 a machine is
unknown or cannot be deployed (nothing deployed); 13 a machine failed (our installer or MAAS); 14 a machine
went silent; 15 some machines were not deployed or not started; 130 interrupted (nothing changed in MAAS)."""

fleet_app = typer.Typer(
    name="fleet",
    help="Deploy and watch many machines through MAAS's REST API (run on a workstation, never on a target).\n\n"
    + FLEET_EXIT_HELP,
    add_completion=False,
    rich_markup_mode=None,
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")

_MACHINES = typer.Argument(None, metavar="[MACHINE]...", help="system_id, hostname or FQDN (repeatable).")
_TAG = typer.Option([], "--tag", help="Machines with this MAAS tag (repeat: all of them).")
_POOL = typer.Option(None, "--pool", help="Machines in this resource pool.")
_ZONE = typer.Option(None, "--zone", help="Machines in this zone.")
_PROFILE_OPT = typer.Option(None, "--profile", help="MAAS CLI profile (`maas login NAME ...`; default: the only one).")
_MAASCLI_DB = typer.Option(None, "--maascli-db", help="The MAAS CLI's profile database (default ~/.maascli.db).")
_MAAS_URL = typer.Option(None, "--maas-url", help="MAAS URL; the key from $MAAS_API_KEY or --api-key-file.")
_KEY_FILE = typer.Option(None, "--api-key-file", help="File holding the API key consumer:token:secret (mode 0600).")
_INTERVAL = typer.Option(10.0, "--interval", help="Seconds between polls of MAAS.")
_SILENT = typer.Option(1800.0, "--silent-after", help="Seconds without an event before a machine counts as silent.")
_REPORT = typer.Option(None, "--report", help="Write the JSON report (per machine) to this file.")
_LIVE = typer.Option(None, "--live/--lines", help="Live table or a line per change (default: table on a terminal).")


def _fleet(run: Callable[[], int]) -> None:
    from harmonic_installer.fleet.errors import FleetError  # noqa: TID251

    try:
        code = run()
    except FleetError as exc:
        for line in exc.message.splitlines():
            _say(f"harmonic-install fleet: {line}")
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:  # before any deploy request (run_deploy/run_watch handle it afterwards)
        _say("harmonic-install fleet: interrupted: nothing was changed in MAAS")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


def _connection(profile: str | None, db: Path | None, maas_url: str | None, key_file: Path | None) -> Any:
    from harmonic_installer.fleet import profile as profiles  # noqa: TID251

    connection, warnings = profiles.connect(profile=profile, maas_url=maas_url, key_file=key_file, db=db)
    for line in warnings:
        _say(f"harmonic-install fleet: {line}")
    return connection


def _fleet_options(
    machines: list[str] | None,
    tag: list[str],
    pool: str | None,
    zone: str | None,
    interval: float,
    silent_after: float,
    report: Path | None,
    live: bool | None,
) -> Any:
    from harmonic_installer.fleet.commands import Options  # noqa: TID251
    from harmonic_installer.fleet.errors import FleetError, FleetExit  # noqa: TID251

    if interval <= 0 or silent_after <= 0:
        raise FleetError("--interval and --silent-after must be positive", FleetExit.USAGE)
    return Options(
        machines=tuple(machines or ()),
        tags=tuple(tag),
        pool=pool,
        zone=zone,
        interval_s=interval,
        silent_after_s=silent_after,
        report_path=report,
        live=live,
    )


@fleet_app.command("deploy")
def fleet_deploy_command(
    machines: Optional[list[str]] = _MACHINES,  # noqa: UP045
    tag: list[str] = _TAG,
    pool: Optional[str] = _POOL,  # noqa: UP045
    zone: Optional[str] = _ZONE,  # noqa: UP045
    user_data: Optional[Path] = typer.Option(  # noqa: UP045
        None, "--user-data", help="File written by `harmonic-install user-data` (in-memory Ubuntu deploy)."
    ),
    image: Optional[str] = typer.Option(  # noqa: UP045
        None, "--image", help="Deploy this custom image in memory (harmonic.* settings from tag kernel options)."
    ),
    series: str = typer.Option("jammy", "--series", help="Ubuntu series for the user-data deploy."),
    batch: int = typer.Option(5, "--batch", help="After the canary, at most this many installing at once."),
    canary: Optional[str] = typer.Option(None, "--canary", help="The machine to go first (default: the first)."),  # noqa: UP045
    keep_going: bool = typer.Option(False, "--keep-going", help="Keep starting machines after one fails."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print what would be done; deploy nothing."),
    profile: Optional[str] = _PROFILE_OPT,  # noqa: UP045
    maascli_db: Optional[Path] = _MAASCLI_DB,  # noqa: UP045
    maas_url: Optional[str] = _MAAS_URL,  # noqa: UP045
    api_key_file: Optional[Path] = _KEY_FILE,  # noqa: UP045
    interval: float = _INTERVAL,
    silent_after: float = _SILENT,
    report: Optional[Path] = _REPORT,  # noqa: UP045
    live: Optional[bool] = _LIVE,  # noqa: UP045
) -> None:
    """Deploy machines in memory: validate all, a canary first, then --batch at a time; watch to the end."""

    def run() -> int:
        from harmonic_installer.fleet import commands, deploy  # noqa: TID251
        from harmonic_installer.fleet.errors import FleetError, FleetExit  # noqa: TID251

        if user_data is None and image is None:
            raise FleetError(
                "pass --user-data FILE (Ubuntu in memory + our installer) or --image NAME", FleetExit.USAGE
            )
        deploy.check_batch(batch)
        data = None
        if user_data is not None:
            try:
                data = deploy.check_user_data(user_data.read_bytes())
            except OSError as exc:
                raise FleetError(
                    f"cannot read the user-data file {user_data}: {exc.strerror}", FleetExit.USAGE
                ) from exc
        spec = deploy.DeploySpec(user_data=data, image=image, distro_series=series)
        options = _fleet_options(machines, tag, pool, zone, interval, silent_after, report, live)
        connection = _connection(profile, maascli_db, maas_url, api_key_file)
        return commands.run_deploy(
            connection, options, spec, batch=batch, keep_going=keep_going, canary=canary, dry_run=dry_run
        )

    _fleet(run)


@fleet_app.command("watch")
def fleet_watch_command(
    machines: Optional[list[str]] = _MACHINES,  # noqa: UP045
    tag: list[str] = _TAG,
    pool: Optional[str] = _POOL,  # noqa: UP045
    zone: Optional[str] = _ZONE,  # noqa: UP045
    profile: Optional[str] = _PROFILE_OPT,  # noqa: UP045
    maascli_db: Optional[Path] = _MAASCLI_DB,  # noqa: UP045
    maas_url: Optional[str] = _MAAS_URL,  # noqa: UP045
    api_key_file: Optional[Path] = _KEY_FILE,  # noqa: UP045
    interval: float = _INTERVAL,
    silent_after: float = _SILENT,
    report: Optional[Path] = _REPORT,  # noqa: UP045
    live: Optional[bool] = _LIVE,  # noqa: UP045
) -> None:
    """Watch machines' installs (from their latest Deploying) until each installed, failed or went silent."""

    def run() -> int:
        from harmonic_installer.fleet import commands  # noqa: TID251

        options = _fleet_options(machines, tag, pool, zone, interval, silent_after, report, live)
        return commands.run_watch(_connection(profile, maascli_db, maas_url, api_key_file), options)

    _fleet(run)


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
