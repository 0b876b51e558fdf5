"""Deploying a rack: validate every machine first, then one canary, then at most N at a time.

The deploy operation (src/maasserver/api/machines.py `MachineHandler.deploy`): `user_data` base64 (handed to
`power_on`, src/maasserver/api/nodes.py), `ephemeral_deploy` true (in memory), `distro_series` (a custom
image is found by its name: src/maasserver/forms/__init__.py
`find_osystem_and_release_from_release_name_or_alias`; `osystem` is not a parameter of deploy), `comment`
for the event log. A bad parameter is refused only after MAAS has allocated a Ready machine, so the image is
checked against `boot-resources` before anything is deployed. Custom images get their `harmonic.*`
settings from kernel options on a tag: MAAS joins the kernel_opts of every tag of the machine, ordered by
tag name (src/maasserver/models/node.py `get_effective_kernel_options`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harmonic_installer.fleet.client import MaasClient
from harmonic_installer.fleet.errors import FleetError, FleetExit, NotFound, Rejected
from harmonic_installer.fleet.selection import Machine, deploy_problem
from harmonic_installer.fleet.watch import BAD, Poller, Tracker

COMMENT = "harmonic-install fleet deploy"


@dataclass(frozen=True, slots=True)
class DeploySpec:
    """What each machine is deployed with: our user-data on Ubuntu, or a custom image."""

    user_data: bytes | None = None
    image: str | None = None
    distro_series: str = "jammy"

    def params(self) -> list[tuple[str, str]]:
        """The deploy operation's form fields."""
        fields = [("ephemeral_deploy", "true"), ("comment", COMMENT)]
        fields.append(("distro_series", self.image.removeprefix("custom/") if self.image else self.distro_series))
        if self.user_data is not None:
            fields.append(("user_data", base64.b64encode(self.user_data).decode("ascii")))
        return fields

    def describe(self) -> str:
        """One line: what gets installed how."""
        if self.image:
            extra = " with the user-data given" if self.user_data is not None else ""
            return f"custom image {self.image.removeprefix('custom/')} in memory{extra}"
        return f"Ubuntu {self.distro_series} in memory with our user-data ({len(self.user_data or b'')} bytes)"


def check_user_data(data: bytes) -> bytes:
    """The file `harmonic-install user-data` wrote (cloud-config or a script), else a usage error."""
    if not data.startswith((b"#cloud-config", b"#!")):
        raise FleetError("the user-data file starts with neither #cloud-config nor #! (wrong file?)", FleetExit.USAGE)
    return data


INSTALL_OPTION = "harmonic.install=1"  # the baked unit runs only with it (systemd/harmonic-installer.service)


def kernel_options(client: MaasClient, machines: Sequence[Machine]) -> dict[str, str]:
    """The kernel options MAAS boots each machine with: the global kernel_opts, then its tags' (name order)."""
    cache: dict[str, str] = {}
    result: dict[str, str] = {}
    default = client.config("kernel_opts")
    for machine in machines:
        options = [default] if isinstance(default, str) and default else []
        for tag in sorted(machine.tags):
            if tag not in cache:
                try:
                    opts = client.tag(tag).get("kernel_opts")
                except NotFound:
                    opts = ""
                cache[tag] = opts if isinstance(opts, str) else ""
            if cache[tag]:
                options.append(cache[tag])
        result[machine.system_id] = " ".join(options)
    return result


def validate(client: MaasClient, machines: Sequence[Machine], spec: DeploySpec, user: str) -> list[str]:
    """Every reason not to start, one line each (empty: go). Reads only."""
    problems = [p for p in (deploy_problem(m, user) for m in machines) if p]
    if spec.image:
        wanted = spec.image.removeprefix("custom/")
        names = {str(r.get("name", "")) for r in client.boot_resources()}
        if wanted not in names and f"custom/{wanted}" not in names:
            problems.append(
                f"MAAS has no image {wanted!r} (boot-resources): import it first (harmonic-install maas-import-command)"
            )
    return problems


def image_problems(machines: Sequence[Machine], options: dict[str, str]) -> list[str]:
    """Machines a custom-image deploy would leave idle: no `harmonic.install=1` in their kernel options."""
    return [
        f"{m.name}: its kernel options have no {INSTALL_OPTION}, so the baked unit would not run "
        f"(add it to a tag's kernel_opts: maas <profile> tag update <tag> kernel_opts='{INSTALL_OPTION} ...')"
        for m in machines
        if INSTALL_OPTION not in options.get(m.system_id, "").split()
    ]


def plan_lines(
    machines: Sequence[Machine], spec: DeploySpec, *, batch: int, options: dict[str, str] | None = None
) -> list[str]:
    """What `deploy` would do, for --dry-run."""
    lines = [f"would deploy {len(machines)} machines: {spec.describe()}"]
    for i, machine in enumerate(machines):
        role = "canary (must report installed before the rest start)" if i == 0 else f"then, at most {batch} at a time"
        lines.append(f"  {machine.name}  [{machine.status_name}; pool {machine.pool}; zone {machine.zone}]  {role}")
        if options is not None:
            lines.append(f"      kernel options from tags: {options.get(machine.system_id) or '(none)'}")
    return lines


class Rollout:
    """Starts deployments (canary, then a window of N) and feeds the tracker until every started one is done."""

    def __init__(
        self,
        client: MaasClient,
        tracker: Tracker,
        poller: Poller,
        spec: DeploySpec,
        *,
        batch: int,
        keep_going: bool,
        tick: Callable[[], None],
        say: Callable[[str], None],
    ) -> None:
        self._client = client
        self._tracker = tracker
        self._poller = poller
        self._spec = spec
        self._batch = max(batch, 1)
        self._keep_going = keep_going
        self._tick = tick
        self._say = say

    def run(self, order: Sequence[str]) -> None:
        """Deploy `order` (the first is the canary); returns when every deployed machine is done."""
        canary, rest = order[0], list(order[1:])
        self._start(canary)
        self._wait(lambda: self._tracker.done([canary]))
        outcome = self._tracker.states[canary].outcome
        if outcome != "installed":
            self._not_started(rest, f"the canary {self._tracker.states[canary].machine.name} ended {outcome}")
            return
        if rest:
            name = self._tracker.states[canary].machine.name
            self._say(f"canary {name} installed: deploying the rest, {self._batch} at a time")
        active: list[str] = []
        stopped = ""
        while rest or active:
            active = [i for i in active if not self._tracker.done([i])]
            bad = [s for s in self._tracker.states.values() if s.outcome in BAD | {"silent"}]
            if bad and not self._keep_going and not stopped:
                stopped = f"stopped after {bad[0].machine.name} ended {bad[0].outcome} (--keep-going to go on)"
            if stopped and rest:
                self._not_started(rest, stopped)
                rest = []
            while rest and len(active) < self._batch:
                system_id = rest.pop(0)
                if self._start(system_id):
                    active.append(system_id)
            if not active:
                break
            self._step()

    def _start(self, system_id: str) -> bool:
        state = self._tracker.states[system_id]
        try:
            self._client.deploy(system_id, self._spec.params())
        except (Rejected, NotFound) as exc:
            state.outcome, state.cause = "maas-failed", f"deploy refused: {exc.message}"
            self._say(f"{state.machine.name}: deploy refused: {exc.message}")
            return False
        self._tracker.deployed(system_id)
        self._say(f"{state.machine.name}: deploy requested")
        return True

    def _not_started(self, ids: Sequence[str], why: str) -> None:
        for system_id in ids:
            state = self._tracker.states[system_id]
            state.outcome, state.cause = "not-started", why

    def _wait(self, finished: Callable[[], bool]) -> None:
        while not finished():
            self._step()

    def _step(self) -> None:
        self._poller.poll()
        self._tick()


def check_batch(batch: int) -> int:
    """--batch must be at least 1."""
    if batch < 1:
        raise FleetError("--batch must be 1 or more", FleetExit.USAGE)
    return batch
