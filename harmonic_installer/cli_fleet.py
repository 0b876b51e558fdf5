"""`harmonic-install fleet`: deploy and watch many machines through MAAS's REST API (operator side).

harmonic_installer.fleet is imported only when a fleet command runs (it is never needed on a target).
Registered on cli.app when cli.py is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from harmonic_installer.cli import _say, app

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
    machines: list[str] | None = _MACHINES,
    tag: list[str] = _TAG,
    pool: str | None = _POOL,
    zone: str | None = _ZONE,
    user_data: Path | None = typer.Option(
        None, "--user-data", help="File written by `harmonic-install user-data` (in-memory Ubuntu deploy)."
    ),
    image: str | None = typer.Option(
        None, "--image", help="Deploy this custom image in memory (harmonic.* settings from tag kernel options)."
    ),
    series: str = typer.Option("jammy", "--series", help="Ubuntu series for the user-data deploy."),
    batch: int = typer.Option(5, "--batch", help="After the canary, at most this many installing at once."),
    canary: str | None = typer.Option(None, "--canary", help="The machine to go first (default: the first)."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Keep starting machines after one fails."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print what would be done; deploy nothing."),
    profile: str | None = _PROFILE_OPT,
    maascli_db: Path | None = _MAASCLI_DB,
    maas_url: str | None = _MAAS_URL,
    api_key_file: Path | None = _KEY_FILE,
    interval: float = _INTERVAL,
    silent_after: float = _SILENT,
    report: Path | None = _REPORT,
    live: bool | None = _LIVE,
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
    machines: list[str] | None = _MACHINES,
    tag: list[str] = _TAG,
    pool: str | None = _POOL,
    zone: str | None = _ZONE,
    profile: str | None = _PROFILE_OPT,
    maascli_db: Path | None = _MAASCLI_DB,
    maas_url: str | None = _MAAS_URL,
    api_key_file: Path | None = _KEY_FILE,
    interval: float = _INTERVAL,
    silent_after: float = _SILENT,
    report: Path | None = _REPORT,
    live: bool | None = _LIVE,
) -> None:
    """Watch machines' installs (from their latest Deploying) until each installed, failed or went silent."""

    def run() -> int:
        from harmonic_installer.fleet import commands  # noqa: TID251

        options = _fleet_options(machines, tag, pool, zone, interval, silent_after, report, live)
        return commands.run_watch(_connection(profile, maascli_db, maas_url, api_key_file), options)

    _fleet(run)
