"""`fleet deploy` and `fleet watch` end to end: connect, select, validate, deploy, watch, summarise, report.

cli.py turns flags into `Options` and calls these; everything that talks to MAAS is injected (`Env`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from harmonic_installer.fleet import deploy as deploying
from harmonic_installer.fleet import render
from harmonic_installer.fleet.client import MaasClient
from harmonic_installer.fleet.errors import FleetError, FleetExit
from harmonic_installer.fleet.profile import Connection
from harmonic_installer.fleet.selection import Machine, select
from harmonic_installer.fleet.transport import Transport, UrllibTransport
from harmonic_installer.fleet.watch import (
    MachineState,
    Poller,
    Tracker,
    exit_code,
    last_deploying_event,
    newest_event_id,
)


@dataclass(frozen=True, slots=True)
class Options:
    """What the operator asked for."""

    machines: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    pool: str | None = None
    zone: str | None = None
    interval_s: float = 10.0
    silent_after_s: float = 1800.0
    report_path: Path | None = None
    live: bool | None = None  # None: a live table when stdout is a terminal


@dataclass(slots=True)
class Env:
    """The edges: the HTTP transport, clocks, sleep, the output streams."""

    transport: Callable[[Connection], Transport] = lambda c: UrllibTransport(c.cacerts)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)


def _client(connection: Connection, env: Env) -> tuple[MaasClient, str]:
    client = MaasClient(connection.url, connection.key, transport=env.transport(connection), wall=env.wall)
    user = client.whoami().get("username")
    return client, str(user or "")


def _display(options: Options, env: Env) -> render.LiveTable | render.ChangeLines:
    live = options.live if options.live is not None else env.out.isatty()
    if not live:
        return render.ChangeLines(env.out, wall=env.wall)
    # Lines are cut to the terminal's width: a wrapped line would break the redraw in place.
    return render.LiveTable(env.out, wall=env.wall, width=max(shutil.get_terminal_size().columns - 1, 40))


Display = render.LiveTable | render.ChangeLines


def _finish(states: Sequence[MachineState], options: Options, env: Env, display: Display, note: str = "") -> int:
    display.update(list(states))
    now = env.wall()
    for line in render.summary(states):
        env.out.write(line + "\n")
    if note:
        env.out.write(note + "\n")
    env.out.flush()
    if options.report_path is not None:
        data = render.report(states, now)
        data["exit_code"] = int(exit_code(states)) if not note else int(FleetExit.INTERRUPTED)
        try:
            options.report_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            env.err.write(f"harmonic-install fleet: cannot write the report {options.report_path}: {exc.strerror}\n")
    return int(exit_code(states))


def _loop(poller: Poller, tracker: Tracker, display: Display, options: Options, env: Env) -> Callable[[], None]:
    def tick() -> None:
        note = f"MAAS did not answer: {poller.last_error}" if poller.last_error else ""
        display.update(list(tracker.states.values()), note)
        env.sleep(options.interval_s)

    return tick


def _canary_first(machines: list[Machine], canary: str | None) -> list[Machine]:
    """The chosen machines, the canary (if any) first; a canary not among them is a usage error."""
    if canary is None:
        return machines
    first = [m for m in machines if canary in (m.system_id, m.hostname, m.fqdn)]
    if not first:
        raise FleetError(f"--canary {canary!r} is not among the chosen machines", FleetExit.USAGE)
    return [first[0], *(m for m in machines if m is not first[0])]


def _refuse_problems(
    client: MaasClient, machines: list[Machine], spec: deploying.DeploySpec, user: str
) -> dict[str, str] | None:
    """Every machine checked before any is deployed; returns the kernel options per machine (for --image)."""
    problems = deploying.validate(client, machines, spec, user)
    options_by_machine = deploying.kernel_options(client, machines) if spec.image else None
    if options_by_machine is not None and spec.user_data is None:
        problems += deploying.image_problems(machines, options_by_machine)
    if problems:
        raise FleetError("\n".join([*problems, "nothing deployed"]), FleetExit.REFUSED)
    return options_by_machine


def run_deploy(
    connection: Connection,
    options: Options,
    spec: deploying.DeploySpec,
    *,
    batch: int,
    keep_going: bool = False,
    canary: str | None = None,
    dry_run: bool = False,
    env: Env | None = None,
) -> int:
    """Validate every machine, then deploy (canary first); returns the exit code."""
    env = env or Env()
    client, user = _client(connection, env)
    machines = _canary_first(
        select(client, options.machines, tags=options.tags, pool=options.pool, zone=options.zone), canary
    )
    options_by_machine = _refuse_problems(client, machines, spec, user)
    if dry_run:
        for line in deploying.plan_lines(machines, spec, batch=batch, options=options_by_machine):
            env.out.write(line + "\n")
        env.out.write("dry run: nothing deployed\n")
        return int(FleetExit.OK)
    ids = [m.system_id for m in machines]
    baseline = newest_event_id(client, ids)
    states = [MachineState(m, m.status_name, baseline=baseline) for m in machines]
    tracker = Tracker(states, silent_after_s=options.silent_after_s, clock=env.clock, wall=env.wall)
    poller = Poller(client, tracker, cursor=baseline)
    display = _display(options, env)
    display.say(f"deploying {len(machines)} machines from {connection.url}: {spec.describe()}")
    rollout = deploying.Rollout(
        client,
        tracker,
        poller,
        spec,
        batch=batch,
        keep_going=keep_going,
        tick=_loop(poller, tracker, display, options, env),
        say=display.say,
    )
    try:
        rollout.run(ids)
    except KeyboardInterrupt:
        for state in states:
            if state.outcome == "waiting":
                state.outcome, state.cause = "not-started", "interrupted before its turn"
        _finish(
            states,
            options,
            env,
            display,
            "interrupted: no more deployments started; MAAS and the machines were left as they are",
        )
        return int(FleetExit.INTERRUPTED)
    except FleetError as exc:
        _finish(states, options, env, display)
        raise exc
    return _finish(states, options, env, display)


def run_watch(connection: Connection, options: Options, *, env: Env | None = None) -> int:
    """Watch machines deployed earlier (from their latest Deploying event) until each is done."""
    env = env or Env()
    client, _user = _client(connection, env)
    machines: list[Machine] = select(client, options.machines, tags=options.tags, pool=options.pool, zone=options.zone)
    newest = newest_event_id(client, [m.system_id for m in machines])
    states = []
    for machine in machines:
        started = last_deploying_event(client, machine.system_id)
        state = MachineState(machine, machine.status_name, baseline=started.id - 1 if started else newest)
        states.append(state)
    tracker = Tracker(states, silent_after_s=options.silent_after_s, clock=env.clock, wall=env.wall)
    for state, machine in zip(states, machines, strict=True):
        if machine.status_name in ("Deploying", "Deployed") or machine.status_name.startswith("Failed"):
            tracker.deployed(machine.system_id)
            state.started = None
        else:
            state.outcome, state.cause = "not-deployed", f"MAAS status {machine.status_name}"
    poller = Poller(client, tracker, cursor=min((s.baseline for s in states), default=0))
    display = _display(options, env)
    tick = _loop(poller, tracker, display, options, env)
    try:
        poller.poll()
        tracker.date_activity()  # a machine quiet for hours before the watch began is silent now
        while True:
            if tracker.done():
                break
            tick()
            poller.poll()
    except KeyboardInterrupt:
        _finish(states, options, env, display, "interrupted: stopped watching; nothing was changed in MAAS")
        return int(FleetExit.INTERRUPTED)
    return _finish(states, options, env, display)
