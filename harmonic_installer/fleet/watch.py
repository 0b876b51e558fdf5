"""Watching machines: one state machine per machine fed by MAAS's status and events, and the polling loop.

Outcomes: waiting (not deployed yet), deploying (MAAS: Deploying), booted (MAAS: Deployed, our installer not
heard yet: MAAS marks an in-memory deploy Deployed when cloud-init fetches the user-data), installing (our
step events), installed (our `installed` event), failed (our FAIL; the cause is its line), maas-failed
(MAAS's status turned Failed deployment / Broken, or it released the machine: power, PXE, timeouts),
silent (no event and no status change for `silent_after` seconds), not-deployed, not-started.
A silent machine that speaks again goes back to its previous outcome. Watching changes nothing in MAAS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harmonic_installer.fleet.client import MaasClient
from harmonic_installer.fleet.errors import FleetError, FleetExit
from harmonic_installer.fleet.events import Event, Signal, classify
from harmonic_installer.fleet.selection import Machine

DONE = frozenset({"installed", "failed", "maas-failed", "silent", "not-deployed", "not-started"})
BAD = frozenset({"failed", "maas-failed"})
IN_FLIGHT = frozenset({"deploying", "booted", "installing"})
EVENTS_PAGE = 1000  # MAAS's maximum (events.py MAX_EVENT_LOG_COUNT)
MAX_POLL_FAILURES = 5
SETTLE_S = 60.0


@dataclass(slots=True)
class MachineState:
    """What is known about one machine's install."""

    machine: Machine
    maas_status: str
    outcome: str = "waiting"
    step: str = ""
    percent: int | None = None
    cause: str = ""
    release: str = ""
    disk: str = ""
    baseline: int = 0  # events with an id up to this are from before this deployment
    started: float | None = None  # wall clock (MAAS's Deploying event when known)
    finished: float | None = None
    last_activity: float = 0.0  # monotonic
    before_silence: str = ""
    maas_error: str = ""
    final_seen: bool = False  # the run's own FAIL line arrived (not only a step's)
    last_event_wall: float | None = None  # MAAS's time of the newest event seen
    failed_at: float = 0.0  # monotonic

    @property
    def system_id(self) -> str:
        """The machine's system_id."""
        return self.machine.system_id

    def elapsed(self, now_wall: float) -> float | None:
        """Seconds since the deployment started (to the end when it is over)."""
        if self.started is None:
            return None
        return max((self.finished if self.finished is not None else now_wall) - self.started, 0.0)

    def view(self) -> tuple[str, str, str, str]:
        """What a line per change shows (a change of any of these is a new line)."""
        pct = f"{self.percent}%" if self.percent is not None else ""
        return (self.maas_status, self.step, pct, self.outcome)


def _wall(created: datetime | None, default: float) -> float:
    return created.timestamp() if created is not None else default


class Tracker:
    """Turns statuses and events into outcomes for a set of machines."""

    def __init__(
        self,
        states: Iterable[MachineState],
        *,
        silent_after_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.states = {s.system_id: s for s in states}
        self.silent_after_s = silent_after_s
        # After a step's FAIL, wait this long for the run's FAIL line (MAAS may log the two in either order).
        self.settle_s = min(SETTLE_S, silent_after_s)
        self._clock = clock
        self._wall = wall

    def deployed(self, system_id: str) -> None:
        """We asked MAAS to deploy it (or found it deploying): from now on silence counts."""
        state = self.states[system_id]
        state.outcome = "deploying"
        state.started = state.started or self._wall()
        state.last_activity = self._clock()

    def status(self, machine: Machine) -> None:
        """MAAS's current status for a machine."""
        state = self.states.get(machine.system_id)
        if state is None:
            return
        changed = machine.status_name != state.maas_status
        state.machine, state.maas_status = machine, machine.status_name
        if changed:
            state.last_activity = self._clock()
            self._wake(state)
        if state.outcome in ("waiting", "not-deployed", "not-started", "installed", "failed"):
            return
        status = machine.status_name
        if status.startswith("Failed") or status == "Broken":
            self._finish(
                state,
                "maas-failed",
                machine.error_description or state.maas_error or machine.status_message or status,
            )
        elif status in ("Ready", "Allocated", "Releasing", "New") and state.outcome in IN_FLIGHT:
            self._finish(state, "maas-failed", state.maas_error or f"MAAS moved it to {status} (released or aborted)")
        elif status == "Deployed" and state.outcome == "deploying":
            state.outcome, state.step = "booted", "user-data fetched"

    def event(self, event: Event) -> None:
        """One event of a watched machine (any level), in id order."""
        state = self.states.get(event.node)
        if state is None or event.id <= state.baseline:
            return
        state.last_activity = self._clock()
        if event.created is not None:
            state.last_event_wall = max(state.last_event_wall or 0.0, event.created.timestamp())
        self._wake(state)
        signal = classify(event)
        if signal is None:  # MAAS's own: when the deployment started, and its errors (power, PXE)
            if event.type == "Deploying":
                state.started = _wall(event.created, state.started or self._wall())
            elif event.failure:
                state.maas_error = f"{event.type}: {event.description}".rstrip(": ")
            return
        self._ours(state, signal, event)

    def _ours(self, state: MachineState, signal: Signal, event: Event) -> None:
        """One of the installer's own events (started, a step, progress, installed, failed)."""
        if signal.kind == "started":
            state.outcome, state.step, state.percent, state.cause = "installing", "starting", None, ""
            state.finished = None
        elif signal.kind in ("step", "progress", "other") and state.outcome not in ("installed", "failed"):
            state.outcome = "installing"
            if signal.kind != "other":
                state.step = signal.step
            state.percent = signal.percent if signal.kind == "progress" else None
            state.disk = signal.disk or state.disk
        elif signal.kind == "installed":
            state.release, state.disk = signal.release, signal.disk or state.disk
            state.step, state.percent = "done", None
            self._finish(state, "installed", "", _wall(event.created, self._wall()))
        elif signal.kind == "failed":
            self._failed(state, signal, event)

    def _failed(self, state: MachineState, signal: Signal, event: Event) -> None:
        """Our FAIL: the step's cause first; the run's line (step, cause, exit code) wins when it comes."""
        if state.outcome == "failed" and not signal.final:
            return
        cause = signal.text
        if signal.final and signal.step:
            cause = f"at step {signal.step}: {cause}"
            state.step = signal.step
        if signal.exit_code is not None:
            cause += f" (exit {signal.exit_code})"
        state.final_seen = state.final_seen or signal.final
        state.failed_at = self._clock()
        self._finish(state, "failed", cause, _wall(event.created, self._wall()))

    def date_activity(self) -> None:
        """After replaying a machine's past events: its silence started at its newest event, not at our start.

        Compares MAAS's event times with this machine's clock (both UTC; keep them in sync with NTP).
        """
        now, now_wall = self._clock(), self._wall()
        for state in self.states.values():
            if state.outcome in IN_FLIGHT and state.last_event_wall is not None:
                state.last_activity = min(state.last_activity, now - max(now_wall - state.last_event_wall, 0.0))
        self.check_silence()

    def check_silence(self) -> None:
        """Mark machines that have been in flight without a word for too long."""
        now = self._clock()
        for state in self.states.values():
            if state.outcome in IN_FLIGHT and now - state.last_activity > self.silent_after_s:
                state.before_silence = state.outcome
                state.outcome = "silent"
                state.cause = f"no event and no status change for {now - state.last_activity:.0f} s"

    def _wake(self, state: MachineState) -> None:
        if state.outcome == "silent":
            state.outcome, state.cause = state.before_silence or "installing", ""

    def _finish(self, state: MachineState, outcome: str, cause: str, when: float | None = None) -> None:
        state.outcome, state.cause = outcome, cause
        state.finished = when if when is not None else self._wall()

    def done(self, ids: Iterable[str] | None = None) -> bool:
        """Every machine (or those given) has an outcome the watch can end on."""
        chosen = self.states.values() if ids is None else (self.states[i] for i in ids)
        return all(s.outcome in DONE and not self._settling(s) for s in chosen)

    def _settling(self, state: MachineState) -> bool:
        """A failure known only from a step's FAIL, shortly ago: the run's line may still come."""
        return state.outcome == "failed" and not state.final_seen and self._clock() - state.failed_at < self.settle_s


def exit_code(states: Iterable[MachineState]) -> FleetExit:
    """0 when every machine installed; else failed > silent > not installed."""
    outcomes = {s.outcome for s in states}
    if outcomes & BAD:
        return FleetExit.FAILED
    if "silent" in outcomes:
        return FleetExit.SILENT
    if outcomes - {"installed"}:
        return FleetExit.NOT_INSTALLED
    return FleetExit.OK


class Poller:
    """Reads MAAS for the tracker: machines (one request) and new events (one request, paged)."""

    def __init__(self, client: MaasClient, tracker: Tracker, *, cursor: int) -> None:
        self._client = client
        self._tracker = tracker
        self.cursor = cursor
        self._failures = 0
        self.last_error = ""

    def poll(self) -> None:
        """One round; a MAAS that does not answer is tolerated MAX_POLL_FAILURES times in a row."""
        ids = list(self._tracker.states)
        try:
            for data in self._client.machines([("id", i) for i in ids]):
                self._tracker.status(Machine.from_json(data))
            self._events(ids)
        except FleetError as exc:
            if exc.exit_code == FleetExit.AUTH:
                raise
            self._failures += 1
            self.last_error = exc.message
            if self._failures >= MAX_POLL_FAILURES:
                raise FleetError(f"{exc.message} ({self._failures} times in a row: stopped watching)") from exc
            return
        self._failures, self.last_error = 0, ""
        self._tracker.check_silence()

    def _events(self, ids: list[str]) -> None:
        while True:
            page = self._client.events(
                [
                    *(("id", i) for i in ids),
                    ("level", "DEBUG"),
                    ("after", str(self.cursor)),
                    ("limit", str(EVENTS_PAGE)),
                ]
            )
            found = sorted(_events_of(page), key=lambda e: e.id)
            for event in found:
                self._tracker.event(event)
                self.cursor = max(self.cursor, event.id)
            if len(found) < EVENTS_PAGE:
                return


def _events_of(page: dict[str, Any]) -> list[Event]:
    raw = page.get("events")
    items = raw if isinstance(raw, list) else []
    return [e for e in (Event.from_json(x) for x in items if isinstance(x, dict)) if e is not None]


def newest_event_id(client: MaasClient, ids: list[str]) -> int:
    """The id of the newest event of these machines (0 when they have none): later events are new."""
    page = client.events([*(("id", i) for i in ids), ("level", "DEBUG"), ("limit", "1")])
    events = page.get("events")
    if isinstance(events, list) and events and isinstance(events[0], dict) and isinstance(events[0].get("id"), int):
        return int(events[0]["id"])
    return 0


def last_deploying_event(client: MaasClient, system_id: str, *, pages: int = 5) -> Event | None:
    """The machine's most recent MAAS "Deploying" event (INFO), looking back at most `pages` x 1000 events."""
    before: int | None = None
    for _ in range(pages):
        query = [("id", system_id), ("level", "INFO"), ("limit", str(EVENTS_PAGE))]
        query += [("before", str(before))] if before is not None else []
        found = _events_of(client.events(query))
        for event in found:  # newest first
            if event.type == "Deploying" and event.node == system_id:
                return event
        if len(found) < EVENTS_PAGE:
            return None
        before = min(e.id for e in found)
    return None
