"""Where the API key comes from: the MAAS CLI's saved profile, or --maas-url with the key in the environment
or a file. Never from the command line (argv is readable by every local user in /proc/<pid>/cmdline).

`maas login NAME URL KEY` stores profiles in an sqlite database, `~/.maascli.db` (src/maascli/config.py
`ProfileConfig`: table `profiles(id, name, data)`, `data` JSON with `url`, `credentials` [consumer_key,
token_key, token_secret] or null for anonymous, `cacerts` PEM text or null; src/maascli/cli.py `cmd_login`).
The snap's `maas` runs with HOME=~/snap/maas/current, so its database is `~/snap/maas/current/.maascli.db`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harmonic_installer.fleet.client import ApiKey, api_url
from harmonic_installer.fleet.errors import FleetError, FleetExit

KEY_ENV = "MAAS_API_KEY"
DB_CANDIDATES = ("~/.maascli.db", "~/snap/maas/current/.maascli.db")


@dataclass(frozen=True, slots=True)
class Connection:
    """A MAAS to talk to: the API URL, the key, the CA certificates and where they came from."""

    url: str
    key: ApiKey
    source: str
    cacerts: str | None = None


def _usage(message: str) -> FleetError:
    return FleetError(message, FleetExit.USAGE)


def _databases(explicit: Path | None, home: Path) -> list[Path]:
    if explicit is not None:
        return [explicit]
    return [home / c.removeprefix("~/") for c in DB_CANDIDATES]


def _read_profiles(path: Path) -> dict[str, dict[str, object]]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _usage(f"cannot open the MAAS CLI profiles {path}: {exc}") from exc
    try:
        rows = db.execute("SELECT name, data FROM profiles").fetchall()
    except sqlite3.Error as exc:
        raise _usage(f"{path} is not a MAAS CLI profile database: {exc}") from exc
    finally:
        db.close()
    profiles: dict[str, dict[str, object]] = {}
    for name, data in rows:
        try:
            value = json.loads(data)
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and isinstance(value, dict):
            profiles[name] = value
    return profiles


def from_profile(name: str | None, *, db: Path | None = None, home: Path | None = None) -> Connection:
    """The named profile (or the only one) from the MAAS CLI's database.

    Raises:
        FleetError: no database, no such profile, several profiles and none named, or an anonymous profile.
    """
    home = home if home is not None else Path.home()
    found = [p for p in _databases(db, home) if p.is_file()]
    if not found:
        where = " or ".join(str(p) for p in _databases(db, home))
        raise _usage(
            f"no MAAS CLI profiles ({where} not found): run `maas login NAME URL -` once, "
            f"or pass --maas-url with the key in ${KEY_ENV} or --api-key-file"
        )
    path = found[0]
    profiles = _read_profiles(path)
    if name is None:
        if len(profiles) != 1:
            listed = ", ".join(sorted(profiles)) or "none"
            raise _usage(f"pass --profile NAME: {path} has {len(profiles)} profiles ({listed})")
        name = next(iter(profiles))
    profile = profiles.get(name)
    if profile is None:
        listed = ", ".join(sorted(profiles)) or "none"
        raise _usage(f"no MAAS CLI profile {name!r} in {path} (profiles: {listed})")
    creds = profile.get("credentials")
    url = profile.get("url")
    if not isinstance(url, str):
        raise _usage(f"MAAS CLI profile {name!r} in {path} has no URL")
    if not isinstance(creds, Sequence) or isinstance(creds, str) or len(creds) != 3:
        raise _usage(f"MAAS CLI profile {name!r} is anonymous (no API key): log in with a key")
    key = ApiKey.parse(":".join(str(c) for c in creds), f"profile {name!r}")
    cacerts = profile.get("cacerts")
    return Connection(api_url(url), key, f"profile {name!r} ({path})", cacerts if isinstance(cacerts, str) else None)


def from_url(url: str, *, environ: Mapping[str, str], key_file: Path | None) -> tuple[Connection, list[str]]:
    """--maas-url with the key from --api-key-file or $MAAS_API_KEY; also warnings (a key file others can read)."""
    warnings: list[str] = []
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
            mode = key_file.stat().st_mode
        except OSError as exc:
            raise _usage(f"cannot read the API key file {key_file}: {exc.strerror}") from exc
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"warning: {key_file} is readable by other users (chmod 600 it)")
        key = ApiKey.parse(text, str(key_file))
        source = f"--maas-url and {key_file}"
    elif environ.get(KEY_ENV):
        key = ApiKey.parse(environ[KEY_ENV], f"${KEY_ENV}")
        source = f"--maas-url and ${KEY_ENV}"
    else:
        raise _usage(
            f"--maas-url needs the API key in ${KEY_ENV} or a file (--api-key-file); never on the command line"
        )
    return Connection(api_url(url), key, source), warnings


def connect(
    *,
    profile: str | None,
    maas_url: str | None,
    key_file: Path | None,
    db: Path | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> tuple[Connection, list[str]]:
    """The connection the flags ask for: --maas-url (with env or file), else the MAAS CLI profile."""
    environ = os.environ if environ is None else environ
    if maas_url is not None:
        if profile is not None:
            raise _usage("pass --profile or --maas-url, not both")
        return from_url(maas_url, environ=environ, key_file=key_file)
    if key_file is not None:
        raise _usage("--api-key-file goes with --maas-url")
    return from_profile(profile, db=db, home=home), []
