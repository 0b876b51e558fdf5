"""dpkg: install the verified vendor debs together, and tell what is already installed."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from harmonic_installer.artifacts import VerifiedArtifact
from harmonic_installer.errors import CommandError, PackageError
from harmonic_installer.runner import Runner

log = structlog.get_logger()

QUERY_TIMEOUT_S = 120.0  # dpkg-deb --field and dpkg-query read a few KiB; longer is a hung dpkg database lock or disk


@dataclass(frozen=True, slots=True)
class DebInfo:
    """A .deb's identity, read from its control file."""

    path: Path
    package: str
    version: str
    architecture: str


@dataclass(frozen=True, slots=True)
class InstalledPackages:
    """The outcome of the package step."""

    packages: tuple[DebInfo, ...]
    skipped: bool  # exactly these versions were installed already


def inspect(runner: Runner, artifact: VerifiedArtifact) -> DebInfo:
    """Read Package, Version and Architecture from a verified .deb."""
    try:
        result = runner.run(
            ["dpkg-deb", "--field", str(artifact.path), "Package", "Version", "Architecture"], timeout=QUERY_TIMEOUT_S
        )
    except CommandError as exc:
        raise PackageError(
            f"{artifact.path.name} is not a readable Debian package: {exc.output_tail.strip()[-200:] or exc}",
            exc.output_tail,
        ) from exc
    fields = {}
    for line in result.output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if not fields.get("Package") or not fields.get("Version"):
        raise PackageError(f"{artifact.path.name} has no Package/Version in its control file")
    return DebInfo(artifact.path, fields["Package"], fields["Version"], fields.get("Architecture", ""))


def installed_version(runner: Runner, package: str) -> str | None:
    """The installed version of `package`, or None when it is not fully installed."""
    try:
        result = runner.run(
            ["dpkg-query", "--show", "--showformat=${Status}\t${Version}", package],
            check=False,
            timeout=QUERY_TIMEOUT_S,
        )
    except CommandError as exc:  # could not start, or timed out
        raise PackageError(f"cannot ask dpkg whether {package} is installed: {exc}", exc.output_tail) from exc
    if result.returncode != 0:
        return None
    status, _, version = result.output.strip().partition("\t")
    return version if status == "install ok installed" else None


def install_command(debs: Sequence[Path | str]) -> list[str]:
    """The one dpkg call that installs `debs` (also shown by the plan)."""
    return ["dpkg", "--install", "--force-confdef", "--force-confold", *(str(d) for d in debs)]


def install(
    runner: Runner,
    artifacts: Sequence[VerifiedArtifact],
    *,
    env: Mapping[str, str],
    timeout: float,
) -> InstalledPackages:
    """Install all debs in one non-interactive `dpkg -i` call, unless exactly these versions are installed.

    Raises:
        PackageError: a deb is unreadable or dpkg failed (its output is in the log and the details).
    """
    debs = tuple(inspect(runner, a) for a in artifacts)
    if all(installed_version(runner, d.package) == d.version for d in debs):
        log.info("packages.already_installed", packages=[f"{d.package}={d.version}" for d in debs])
        return InstalledPackages(debs, skipped=True)
    child_env = {**env, "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
    argv = install_command([d.path for d in debs])
    try:
        runner.run(argv, env=child_env, timeout=timeout, log_output=True)
    except CommandError as exc:
        reason = dpkg_failure(exc.output_tail) or (
            f"{', '.join(d.package for d in debs)}: {_last_error_line(exc.output_tail) or exc}"
        )
        raise PackageError(f"dpkg could not install {reason}", exc.output_tail) from exc
    missing = [d for d in debs if installed_version(runner, d.package) != d.version]
    if missing:
        raise PackageError(
            "dpkg finished but these are not installed: " + ", ".join(f"{d.package}={d.version}" for d in missing)
        )
    log.info("packages.installed", packages=[f"{d.package}={d.version}" for d in debs])
    return InstalledPackages(debs, skipped=False)


_PROCESSING = re.compile(r"^dpkg: error processing (archive|package) (.+?) \((--[a-z-]+)\):\s*$")
_GENERIC_CAUSE = re.compile(r"subprocess returned error exit status \d+$")


def dpkg_failure(output: str) -> str | None:
    """'<archive or package>: <dpkg-deb's reason>; <dpkg's reason>' from dpkg's output, or None.

    dpkg ends with "Errors were encountered while processing:" and a list: the useful part is earlier, in
    "dpkg: error processing archive <file> (--install):" with its indented reason, and the dpkg-deb lines
    before it (a corrupt member, a truncated archive).
    """
    lines = output.splitlines()
    failures: list[str] = []
    causes: list[str] = []
    for number, line in enumerate(lines):
        if line.startswith("dpkg-deb") or " depends on " in line:
            causes.append(line.strip().removesuffix("; however:"))
            continue
        match = _PROCESSING.match(line)
        if match is None:
            continue
        kind, name = match.group(1), match.group(2)
        reason = []
        for follow in lines[number + 1 :]:
            if not follow.startswith(" "):
                break
            reason.append(follow.strip())
        shown = Path(name).name if kind == "archive" else f"package {name}"
        specific = [c for c in causes if not _GENERIC_CAUSE.search(c)] or causes
        parts = [c.replace(name, shown) if kind == "archive" else c for c in specific[:1]] + [" ".join(reason)]
        failures.append(f"{shown}: " + "; ".join(p[:300] for p in parts if p))
        causes = []
    if not failures:
        return None
    more = f" (and {len(failures) - 1} more, see the log)" if len(failures) > 1 else ""
    return failures[0] + more


def _last_error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("Errors were encountered")]
    for line in reversed(lines):
        if "error" in line.lower() or "depends on" in line or "problem" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else ""
