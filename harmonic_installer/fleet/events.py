"""MAAS events, and what our installer said in them.

`events query` returns `id`, `node` (system_id), `hostname`, `level`, `created` ("%a, %d %b. %Y %H:%M:%S",
UTC), `type` (the event type's description) and `description` (src/maasserver/api/events.py
`event_to_dict`). A status message from the installer becomes an event whose description is
`'<origin>' <description>`; its name is not returned (src/metadataserver/api.py
`add_event_to_node_event_log`). For a Deployed machine a `start` is type "Node status event" at DEBUG, a
`FAIL` "Node post-installation failure" at ERROR; while Deploying "Node installation" / "Node installation
failure". Successful `finish` events are never logged: success is the `start` of
`harmonic-installer/installed` (harmonic_installer/reporting.py), "Harmonic cOS <release> installed on <disk>".

The step patterns follow the step descriptions in harmonic_installer/plan.py (checked by the unit tests
against a real run through reporting.Reporter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

ORIGIN = "harmonic-installer"
PREFIX = f"'{ORIGIN}' "
CREATED_FORMAT = "%a, %d %b. %Y %H:%M:%S"

_STARTED = re.compile(r"harmonic-install (?P<version>\S+): installing Harmonic cOS")
_STEPS = (
    ("preflight", re.compile(r"check root, the target disk")),
    ("record", re.compile(r"look for this host's install record")),
    ("proxy", re.compile(r"decide proxy use")),
    ("download", re.compile(r"fetch and verify")),
    ("packages", re.compile(r"install the vendor packages")),
    ("write", re.compile(r"write the ISO to (?P<disk>\S+)")),
    ("firmware", re.compile(r"remember the install in UEFI NVRAM")),
)  # the reboot step is not reported: it is requested after the last report (plan.finish)
_PROGRESS = re.compile(
    r"downloading (?P<label>.+?): [\d,.]+ (?:MiB|bytes)(?: of [\d,.]+ (?:MiB|bytes) \((?P<pct>\d+)%\))?"
)
_INSTALLED = re.compile(r"Harmonic cOS (?:(?P<release>\S+) )?installed on (?P<disk>\S+)")
# A later boot of an installed machine (a MAAS power-on): the firmware step's start says so, and nothing is written.
_ALREADY = re.compile(r"already installed: release (?P<release>\S+) on (?P<disk>\S+)")
_FINAL_FAIL = re.compile(
    r"(?P<outcome>FAILED|INTERRUPTED)(?: at step (?P<step>\S+))?: (?P<cause>.*?)(?: \(exit (?P<exit>\d+)\)|$)"
)


@dataclass(frozen=True, slots=True)
class Event:
    """One MAAS event."""

    id: int
    node: str
    hostname: str
    level: str
    type: str
    description: str
    created: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event | None:
        """From one item of `events query`; None when it has no id or node."""
        event_id, node = data.get("id"), data.get("node")
        if not isinstance(event_id, int) or not isinstance(node, str):
            return None
        created = None
        if isinstance(data.get("created"), str):
            try:
                created = datetime.strptime(data["created"], CREATED_FORMAT).replace(tzinfo=timezone.utc)
            except ValueError:
                created = None
        return cls(
            id=event_id,
            node=node,
            hostname=str(data.get("hostname") or ""),
            level=str(data.get("level") or ""),
            type=str(data.get("type") or ""),
            description=str(data.get("description") or ""),
            created=created,
        )

    @property
    def ours(self) -> bool:
        """Sent by our installer (origin harmonic-installer)."""
        return self.description.startswith(PREFIX)

    @property
    def failure(self) -> bool:
        """An ERROR-level event (our FAIL, or MAAS's own: power, deployment)."""
        return self.level in ("ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class Signal:
    """What one of our events means.

    kind: started | step | progress | installed | failed | other.
    """

    kind: str
    step: str = ""
    text: str = ""
    percent: int | None = None
    release: str = ""
    disk: str = ""
    exit_code: int | None = None
    final: bool = False  # a failure line of the whole run ("FAILED at step ...: cause (exit N)")


def _failure(text: str) -> Signal:
    final = _FINAL_FAIL.match(text)
    if not final:
        return Signal("failed", text=text)
    code = final.group("exit")
    return Signal(
        "failed",
        step=final.group("step") or "",
        text=final.group("cause"),
        exit_code=int(code) if code else None,
        final=True,
    )


def classify(event: Event) -> Signal | None:  # noqa: PLR0911 - one return per kind of event
    """Our installer's meaning of an event; None for an event that is not ours."""
    if not event.ours:
        return None
    text = event.description[len(PREFIX) :].strip()
    if event.failure:
        return _failure(text)
    installed = _INSTALLED.fullmatch(text) or _ALREADY.match(text)
    if installed:
        return Signal("installed", text=text, release=installed.group("release") or "", disk=installed.group("disk"))
    progress = _PROGRESS.match(text)
    if progress:
        pct = progress.group("pct")
        return Signal("progress", step="download", text=progress.group("label"), percent=int(pct) if pct else None)
    if _STARTED.match(text):
        return Signal("started", step="starting", text=text)
    for step, pattern in _STEPS:
        match = pattern.match(text)
        if match:
            disk = match.groupdict().get("disk") or ""
            return Signal("step", step=step, text=text, disk=disk)
    return Signal("other", text=text)
