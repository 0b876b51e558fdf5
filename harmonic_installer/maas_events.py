"""The events we send MAAS: their names, results and bounded descriptions, as curtin shapes its own.

Events nest under one parent activity:

    harmonic-installer                     start ... finish SUCCESS | WARN | FAIL (+ the log tail on failure)
      harmonic-installer/<step>            start, finish SUCCESS | FAIL, for each step plan.py runs
        harmonic-installer/download/<file> repeated `start` events carrying download progress, one finish
      harmonic-installer/installed         start + finish SUCCESS "Harmonic cOS <release> installed on <disk>"
                                           (last, on success only: the one success MAAS logs for a Deployed node)

No event carries `files`: for an in-memory deploy MAAS rolls such a message back whole, so the final FAIL
carries the essential log tail in its description, bounded.
"""

from __future__ import annotations

import re
from typing import Any

from harmonic_installer.report import InstallReport

ORIGIN = "harmonic-installer"
PARENT = "harmonic-installer"
INSTALLED_NAME = f"{PARENT}/installed"  # a start event MAAS logs: the install succeeded (its description)
RESULTS = {"ok": "SUCCESS", "skipped": "SUCCESS", "failed": "FAIL"}

_MAX_DESCRIPTION = 1000
_MAX_FAILURE_DESCRIPTION = 4000  # the final FAIL: the cause, then the newest log lines that fit
_MAX_TAIL_LINE = 400


def event(event_type: str, name: str, description: str, result: str | None = None) -> dict[str, Any]:
    """One event as MAAS's status API takes it (the timestamp is added when it is sent)."""
    text = " ".join(description.split()) or name
    if len(text) > _MAX_DESCRIPTION:
        text = text[: _MAX_DESCRIPTION - 3] + "..."
    made: dict[str, Any] = {"event_type": event_type, "origin": ORIGIN, "name": name, "description": text}
    if result is not None:
        made["result"] = result
    return made


def outcome(report: InstallReport) -> tuple[str, str]:
    """The parent's final result and description for a run's report."""
    if report.outcome == "installed":
        return "SUCCESS", f"Harmonic cOS {report.release or ''} installed on {report.disk or 'the target disk'}"
    if report.outcome == "already-installed":
        return "SUCCESS", report.note or f"already installed on {report.disk or 'the target disk'}"
    if report.outcome == "not-a-target":
        return "WARN", f"not a target host, nothing done: {report.error or ''}"
    where = f" at step {report.failed_step}" if report.failed_step else ""
    return "FAIL", f"{report.outcome.upper()}{where}: {report.error or 'unknown error'} (exit {report.exit_code})"


def with_tail(cause: str, lines: list[str]) -> str:
    """The final FAIL's description: the cause, then the newest log lines (each cut short) that fit the bound."""
    head = f"{cause}\nlast log lines:"
    budget = _MAX_FAILURE_DESCRIPTION - len(head)
    kept: list[str] = []
    for raw in reversed([ln.strip() for ln in lines if ln.strip()]):
        line = raw if len(raw) <= _MAX_TAIL_LINE else raw[: _MAX_TAIL_LINE - 3] + "..."
        if len(line) + 1 > budget:
            break
        kept.append(line)
        budget -= len(line) + 1
    if not kept:
        return cause
    return head + "".join("\n" + line for line in reversed(kept))


def progress_child(label: str) -> str:
    """The progress child's name for a downloaded file."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", label.lower()).strip("-") or "file"
    return f"{PARENT}/download/{slug}"


def progress_text(label: str, done: int, total: int | None) -> str:
    """A progress line: bytes so far, of the total and a percentage when the size is known."""
    if total:
        return f"downloading {label}: {_mib(done)} of {_mib(total)} ({done * 100 // total}%)"
    return f"downloading {label}: {_mib(done)}"


def _mib(n: int) -> str:
    # Not formats.human_bytes: this is a wire format. `harmonic-install fleet` reads the percentage back out of
    # MAAS's events with one pattern (fleet/events.py), whole MiB or bytes, for events of older installers too.
    return f"{n / 1024**2:,.0f} MiB" if n >= 1024**2 else f"{n:,} bytes"
