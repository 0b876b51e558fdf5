"""What the operator sees: a live table on a terminal, a line per change otherwise; the summary; the JSON report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from harmonic_installer.fleet.watch import MachineState

HEADER = ("MACHINE", "MAAS STATUS", "STEP", "DOWNLOAD", "ELAPSED", "RESULT")


def duration(seconds: float | None) -> str:
    """'4m05s', '1h02m', '-'."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def row(state: MachineState, now_wall: float) -> tuple[str, ...]:
    """One machine as table cells."""
    result = state.outcome + (f": {state.cause}" if state.cause and state.outcome != "installed" else "")
    if state.outcome == "installed":
        result = f"installed {state.release}".strip()
    return (
        state.machine.hostname or state.system_id,
        state.maas_status or "-",
        state.step or "-",
        f"{state.percent}%" if state.percent is not None else "-",
        duration(state.elapsed(now_wall)),
        result,
    )


def table(states: Sequence[MachineState], now_wall: float, width: int = 160) -> list[str]:
    """The table's lines, columns sized to their content, each line cut to `width`."""
    rows = [HEADER, *(row(s, now_wall) for s in states)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)] + [r[-1]]
        lines.append("  ".join(cells)[:width])
    return lines


class LiveTable:
    """Redraws the table in place on a terminal (ANSI cursor movement), at most once per poll."""

    def __init__(self, out: TextIO, *, wall: Callable[[], float] = time.time, width: int = 160) -> None:
        self._out = out
        self._wall = wall
        self._width = width
        self._drawn = 0

    def update(self, states: Sequence[MachineState], note: str = "") -> None:
        """Draw the current state (replacing the previous drawing)."""
        lines = table(states, self._wall(), self._width)
        if note:
            lines.append(note[: self._width])
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F\x1b[J")
        self._out.write("\n".join(lines) + "\n")
        self._out.flush()
        self._drawn = len(lines)

    def say(self, line: str) -> None:
        """A line above the table (deploy started, a warning)."""
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        self._out.write(line + "\n")
        self._out.flush()


class ChangeLines:
    """One line per machine whose status, step, download % or outcome changed (logs, CI, pipes)."""

    def __init__(self, out: TextIO, *, wall: Callable[[], float] = time.time) -> None:
        self._out = out
        self._wall = wall
        self._seen: dict[str, tuple[str, ...]] = {}
        self._note = ""

    def update(self, states: Sequence[MachineState], note: str = "") -> None:
        """Print what changed since the last call."""
        now = self._wall()
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        for state in states:
            view = state.view()
            if self._seen.get(state.system_id) == view:
                continue
            self._seen[state.system_id] = view
            cells = row(state, now)
            self._out.write(f"{stamp} {cells[0]} status={cells[1]} step={cells[2]} download={cells[3]} ")
            self._out.write(f"elapsed={cells[4]} result={cells[5]}\n")
        if note and note != self._note:
            self._out.write(f"{stamp} {note}\n")
        self._note = note
        self._out.flush()

    def say(self, line: str) -> None:
        """A line of its own."""
        self._out.write(line + "\n")
        self._out.flush()


def summary(states: Sequence[MachineState]) -> list[str]:
    """The end: counts per outcome, then one line per machine that did not install."""
    counts: dict[str, int] = {}
    for s in states:
        counts[s.outcome] = counts.get(s.outcome, 0) + 1
    order = ("installed", "failed", "maas-failed", "silent", "installing", "booted", "deploying", "not-started")
    parts = [f"{counts[o]} {o}" for o in order if o in counts]
    parts += [f"{n} {o}" for o, n in counts.items() if o not in order]
    lines = [f"fleet: {len(states)} machines: " + ", ".join(parts)]
    for s in states:
        if s.outcome != "installed":
            lines.append(f"  {s.machine.name}: {s.outcome}" + (f": {s.cause}" if s.cause else ""))
    return lines


def report(states: Iterable[MachineState], now_wall: float) -> dict[str, Any]:
    """The JSON report: one object per machine."""
    machines = []
    for s in states:
        elapsed = s.elapsed(now_wall)
        machines.append(
            {
                "system_id": s.system_id,
                "hostname": s.machine.hostname,
                "outcome": s.outcome,
                "maas_status": s.maas_status,
                "step": s.step or None,
                "release": s.release or None,
                "disk": s.disk or None,
                "duration_s": round(elapsed, 1) if elapsed is not None else None,
                "cause": s.cause or None,
            }
        )
    return {"machines": machines}
