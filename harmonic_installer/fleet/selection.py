"""Which machines: by system_id or hostname, and by tag, pool or zone; and whether MAAS can deploy each.

Filters are MAAS's own (`machines read`: `id`, `hostname`, `tags`, `pool`, `zone`; src/maasserver/
node_constraint_filter_forms.py `ReadNodesForm`, which ANDs different filters and answers 400 "No such
tag(s)" / "No such pool" / "No such zone" for names it does not know). MAAS deploys only a Ready machine
(it allocates it first) or one Allocated to the caller (src/maasserver/api/machines.py `deploy`,
src/maasserver/node_status.py `NODE_TRANSITIONS`: only ALLOCATED -> DEPLOYING); anything else is a 409.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harmonic_installer.fleet.client import MaasClient
from harmonic_installer.fleet.errors import FleetError, FleetExit, Rejected


@dataclass(frozen=True, slots=True)
class Machine:
    """The fields of a MAAS machine that fleet uses (machines.py DISPLAYED_MACHINE_FIELDS)."""

    system_id: str
    hostname: str
    fqdn: str
    status_name: str
    owner: str | None = None
    osystem: str = ""
    distro_series: str = ""
    ephemeral_deploy: bool = False
    tags: tuple[str, ...] = ()
    pool: str = ""
    zone: str = ""
    status_message: str = ""
    error_description: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Machine:
        """From one object of `machines read` (zone and pool are nested objects with a name)."""

        def name_of(value: Any) -> str:
            return str(value.get("name", "")) if isinstance(value, dict) else str(value or "")

        def text(key: str) -> str:
            value = data.get(key)
            return value if isinstance(value, str) else ""

        owner = data.get("owner")
        tags = data.get("tag_names")
        return cls(
            system_id=text("system_id"),
            hostname=text("hostname"),
            fqdn=text("fqdn"),
            status_name=text("status_name"),
            owner=owner if isinstance(owner, str) else None,
            osystem=text("osystem"),
            distro_series=text("distro_series"),
            ephemeral_deploy=data.get("ephemeral_deploy") is True,
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            pool=name_of(data.get("pool")),
            zone=name_of(data.get("zone")),
            status_message=text("status_message"),
            error_description=text("error_description"),
        )

    @property
    def name(self) -> str:
        """How the operator knows it: hostname (system_id)."""
        return f"{self.hostname} ({self.system_id})" if self.hostname else self.system_id


def _read(client: MaasClient, query: list[tuple[str, str]]) -> list[Machine]:
    return [Machine.from_json(m) for m in client.machines(query)]


def select(
    client: MaasClient,
    names: Sequence[str],
    *,
    tags: Sequence[str] = (),
    pool: str | None = None,
    zone: str | None = None,
) -> list[Machine]:
    """The machines named (system_id, hostname or FQDN) plus those matching every filter given.

    Raises:
        FleetError: nothing chosen (exit 2); a name MAAS does not know, or a filter matching nothing (exit 12).
    """
    if not names and not tags and pool is None and zone is None:
        raise FleetError(
            "choose machines: MACHINE... (system_id or hostname), --tag, --pool or --zone", FleetExit.USAGE
        )
    chosen: dict[str, Machine] = {}
    problems: list[str] = []
    if names:
        known = _read(client, [("id", n) for n in names])
        known += _read(client, [("hostname", n.split(".", 1)[0]) for n in names])
        for name in names:
            match = [m for m in known if name in (m.system_id, m.hostname, m.fqdn)]
            if not match:
                problems.append(f"unknown machine {name!r}: MAAS has no machine with that system_id or hostname")
                continue
            chosen.setdefault(match[0].system_id, match[0])
    if tags or pool is not None or zone is not None:
        query = [("tags", t) for t in tags]
        query += [("pool", pool)] if pool is not None else []
        query += [("zone", zone)] if zone is not None else []
        shown = " ".join(f"{k}={v}" for k, v in query)
        try:
            matched = _read(client, query)
        except Rejected as exc:
            raise FleetError(f"{exc.message} (selecting {shown})", FleetExit.REFUSED) from exc
        if not matched:
            problems.append(f"no machine matches {shown}")
        for machine in sorted(matched, key=lambda m: (m.hostname, m.system_id)):
            chosen.setdefault(machine.system_id, machine)
    if problems:
        raise FleetError("\n".join(problems), FleetExit.REFUSED)
    return list(chosen.values())


def deploy_problem(machine: Machine, user: str) -> str | None:
    """Why MAAS would refuse to deploy this machine for `user`, in one line; None when it can be deployed."""
    status = machine.status_name
    if status == "Ready":
        return None
    if status == "Allocated":
        if machine.owner in (None, "", user):
            return None
        return f"{machine.name} is allocated to {machine.owner}, not to {user}"
    if status == "Deployed":
        image = "/".join(p for p in (machine.osystem, machine.distro_series) if p) or "an image"
        how = "in memory" if machine.ephemeral_deploy else "to disk"
        return f"{machine.name} is already Deployed ({image}, {how}): release it first if it is to be re-imaged"
    if status == "Deploying":
        return f"{machine.name} is already Deploying: watch it with `harmonic-install fleet watch`"
    hint = "release it, or mark it fixed, first" if status.startswith(("Failed", "Broken")) else ""
    tail = f": {hint}" if hint else ": MAAS deploys only Ready machines (or Allocated to you)"
    return f"{machine.name} is {status}{tail}"
