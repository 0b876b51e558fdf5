"""The operator commands of `harmonic-install` (run on a workstation or the MAAS server, never on a target).

maas.py renders the MAAS import and deploy commands, userdata.py the user-data; these print them.
Registered on cli.app when cli.py is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from harmonic_installer import maas, userdata
from harmonic_installer.cli import _say, app
from harmonic_installer.errors import ConfigError, InstallerError


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
    name: str | None = typer.Option(None, "--name", help="Image name (default: file name up to the first dot)."),
    title: str | None = typer.Option(None, "--title", help="Image title (default: from the name)."),
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
    server_url: str | None = typer.Option(None, "--server-url", help="Web server with packages/, apollo/, scripts/."),
    pyz: Path | None = typer.Option(None, "--pyz", help="The harmonic-install.pyz you publish: its SHA-256 is used."),
    pyz_sha256: str | None = typer.Option(None, "--pyz-sha256", help="SHA-256 of the published pyz."),
    pyz_url: str | None = typer.Option(None, "--pyz-url", help="Default: <server-url>/scripts/harmonic-install.pyz."),
    proxy: bool = typer.Option(
        True, "--proxy/--direct", help="Run the installer with -p (the proxy, except no_proxy)."
    ),
    disk: str | None = typer.Option(None, "--disk", help="Target disk for the installer (--disk)."),
    iso_sha256: str | None = typer.Option(None, "--iso-sha256", help="Pinned ISO SHA-256 for the installer."),
    installer_arg: list[str] = typer.Option(
        [], "--installer-arg", help="Extra installer flag, e.g. --installer-arg=-v."
    ),
    ssh_key: list[str] = typer.Option([], "--ssh-key", help="SSH public key for the ubuntu user (repeatable)."),
    ssh_key_file: list[Path] = typer.Option([], "--ssh-key-file", help="File of SSH public keys (repeatable)."),
    insecure_root_password_hash: str | None = typer.Option(
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
        spec = userdata.UserDataSpec(
            server_url=url,
            pyz_sha256=maas.sha256_file(pyz) if pyz is not None else str(pyz_sha256),
            pyz_url=pyz_url,
            installer_args=(*args, *installer_arg),
            ssh_keys=tuple(keys),
            root_password_hash=insecure_root_password_hash,
        )
        return userdata.render_user_data(spec)

    _operator(render)


@app.command("deploy-command")
def deploy_command(
    machines: list[str] = typer.Argument(..., metavar="MACHINE...", help="MAAS system IDs (or hostnames, see below)."),
    user_data: Path | None = typer.Option(None, "--user-data", help="File written by `harmonic-install user-data`."),
    profile: str = typer.Option(maas.DEFAULT_PROFILE, "--profile", help="MAAS CLI profile."),
    machines_json: Path | None = typer.Option(
        None, "--machines-json", help="Output of `maas <profile> machines read`, to name machines by hostname."
    ),
    image: str | None = typer.Option(None, "--image", help="Deploy this custom image (the baked one) instead."),
) -> None:
    """Print the MAAS command that deploys each machine ephemerally with the user-data (machine deploy)."""

    def render() -> list[str]:
        names = None
        if machines_json is not None:
            names = maas.machines_by_name(_read(machines_json, "machines file").decode("utf-8", "replace"))
        data = _read(user_data, "user-data file") if user_data is not None else None
        return maas.deploy_commands(machines, user_data=data, profile=profile, names=names, image=image)

    _operator(render)
