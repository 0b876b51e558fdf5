"""fleet.events, fleet.watch and fleet.selection: what MAAS's events and statuses mean for each machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harmonic_installer import maas_status, plan, plan_firmware, reporting
from harmonic_installer.fleet.client import ApiKey, MaasClient
from harmonic_installer.fleet.errors import FleetError, FleetExit
from harmonic_installer.fleet.events import Event, classify
from harmonic_installer.fleet.selection import Machine, deploy_problem, select
from harmonic_installer.fleet.transport import UrllibTransport
from harmonic_installer.fleet.watch import MachineState, Poller, Tracker, exit_code
from tests.support.maas_api import ApiMachine, MaasApi
from tests.unit.test_plan import RELEASE, Site, deps, make_settings, make_world, site  # noqa: F401 - fixture


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def machine(status: str = "Deploying", **fields: object) -> Machine:
    values: dict[str, object] = {
        "system_id": "abc123",
        "hostname": "node-a",
        "fqdn": "node-a.maas",
        "status_name": status,
    }
    values.update(fields)
    return Machine(**values)  # type: ignore[arg-type]  # overrides untyped on purpose


def ev(event_id: int, description: str, level: str = "DEBUG", type_: str = "Node status event") -> Event:
    return Event(event_id, "abc123", "node-a", level, type_, description)


def ours(event_id: int, description: str, level: str = "DEBUG") -> Event:
    kind = "Node post-installation failure" if level == "ERROR" else "Node status event"
    return ev(event_id, f"'harmonic-installer' {description}", level, kind)


def tracked(clock: Clock, silent_after: float = 60.0) -> tuple[Tracker, MachineState]:
    state = MachineState(machine("Ready"), "Ready", baseline=10)
    tracker = Tracker([state], silent_after_s=silent_after, clock=clock, wall=clock)
    tracker.deployed("abc123")
    return tracker, state


# ---- events ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "kind", "step", "percent"),
    [
        ("harmonic-install 1.2: installing Harmonic cOS", "started", "starting", None),
        ("check root, the target disk and the tools", "step", "preflight", None),
        ("downloading Apollo ISO: 900 MiB of 3,000 MiB (30%)", "progress", "download", 30),
        ("write the ISO to /dev/nvme0n1 with ostree-production", "step", "write", None),
        ("Harmonic cOS release-1 installed on /dev/sda", "installed", "", None),
        ("something new", "other", "", None),
    ],
)
def test_our_descriptions_are_understood(description: str, kind: str, step: str, percent: int | None) -> None:
    """Each of our start descriptions maps to its step, download percentage or the installed signal."""
    signal = classify(ours(1, description))
    assert signal is not None
    assert (signal.kind, signal.step, signal.percent) == (kind, step, percent)


def test_maas_own_events_are_not_ours() -> None:
    """An event without our origin prefix (MAAS's, cloud-init's) is not classified as ours."""
    assert classify(ev(1, "'cloudinit' running modules for final")) is None
    assert classify(ev(2, "", "INFO", "Deploying")) is None


def test_the_run_failure_line_gives_step_cause_and_exit() -> None:
    """The run's FAIL 'FAILED at step write: cause (exit 6)' is split into its parts."""
    signal = classify(ours(1, "FAILED at step write: ostree-production exited 1 (exit 6)", "ERROR"))
    assert signal is not None
    assert (signal.kind, signal.step, signal.text, signal.exit_code, signal.final) == (
        "failed",
        "write",
        "ostree-production exited 1",
        6,
        True,
    )


# ---- the state machine ------------------------------------------------------------------------------------


def test_a_successful_install_goes_deploying_booted_installing_installed() -> None:
    """Deploying, Deployed at user-data fetch, our steps, then the installed event with release and disk."""
    clock = Clock()
    tracker, state = tracked(clock)
    tracker.status(machine("Deploying"))
    assert state.outcome == "deploying"
    tracker.status(machine("Deployed"))
    assert state.outcome == "booted"
    tracker.event(ours(11, "fetch and verify the vendor packages and the Apollo ISO"))
    tracker.event(ours(12, "downloading Apollo ISO: 1,500 MiB of 3,000 MiB (50%)"))
    assert (state.outcome, state.step, state.percent) == ("installing", "download", 50)
    tracker.event(ours(13, "Harmonic cOS release-7 installed on /dev/sda"))
    assert (state.outcome, state.release, state.disk) == ("installed", "release-7", "/dev/sda")
    assert exit_code([state]) == FleetExit.OK


def test_events_from_before_the_deployment_are_ignored() -> None:
    """An 'installed' from an earlier deployment (id at or below the baseline) does not count."""
    tracker, state = tracked(Clock())
    tracker.event(ours(9, "Harmonic cOS release-7 installed on /dev/sda"))
    assert state.outcome == "deploying"


def test_a_failure_keeps_the_run_line_as_the_cause() -> None:
    """The step's FAIL gives the cause at once; the run's FAIL line refines it with the step and exit code."""
    tracker, state = tracked(Clock())
    tracker.status(machine("Deployed"))
    tracker.event(ours(11, "sha256 mismatch for Apollo ISO", "ERROR"))
    assert (state.outcome, state.cause) == ("failed", "sha256 mismatch for Apollo ISO")
    tracker.event(ours(12, "FAILED at step download: sha256 mismatch for Apollo ISO (exit 4)", "ERROR"))
    assert state.cause == "at step download: sha256 mismatch for Apollo ISO (exit 4)"
    assert exit_code([state]) == FleetExit.FAILED


def test_silence_is_noticed_and_forgiven() -> None:
    """No event for longer than silent_after: silent (exit 14); the next event brings it back."""
    clock = Clock()
    tracker, state = tracked(clock, silent_after=60)
    tracker.status(machine("Deployed"))
    tracker.event(ours(11, "install the vendor packages with dpkg"))
    clock.now += 59
    tracker.check_silence()
    assert state.outcome == "installing"
    clock.now += 2
    tracker.check_silence()
    assert state.outcome == "silent"
    assert exit_code([state]) == FleetExit.SILENT
    tracker.event(ours(12, "write the ISO to /dev/sda with ostree-production"))
    assert (state.outcome, state.step) == ("installing", "write")


def test_maas_failing_the_deployment_is_its_own_outcome() -> None:
    """Failed deployment (power, PXE, timeout): maas-failed with MAAS's error description."""
    tracker, state = tracked(Clock())
    tracker.event(ev(11, "Unable to power on: IPMI timeout", "ERROR", "Failed to power on node"))
    tracker.status(machine("Failed deployment", error_description="Unable to power on: IPMI timeout"))
    assert (state.outcome, state.cause) == ("maas-failed", "Unable to power on: IPMI timeout")
    assert exit_code([state]) == FleetExit.FAILED


def test_a_machine_released_while_deploying_is_maas_failed() -> None:
    """Back to Ready before our installer said anything final: MAAS aborted it."""
    tracker, state = tracked(Clock())
    tracker.status(machine("Deploying"))
    tracker.status(machine("Ready"))
    assert state.outcome == "maas-failed"
    assert "Ready" in state.cause


def test_exit_code_prefers_failure_over_silence_over_not_installed() -> None:
    """Any failure is 13, else any silence 14, else anything not installed 15."""

    def states(*outcomes: str) -> list[MachineState]:
        return [MachineState(machine(), "Deployed", outcome=o) for o in outcomes]

    assert exit_code(states("installed", "silent", "failed")) == FleetExit.FAILED
    assert exit_code(states("installed", "silent", "not-started")) == FleetExit.SILENT
    assert exit_code(states("installed", "not-started")) == FleetExit.NOT_INSTALLED


# ---- selection ---------------------------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[MaasApi]:
    """A stand-in MAAS with machines in several pools, zones and states."""
    server = MaasApi(tags={"rack1": "", "gpu": ""}, pools={"default", "lab"}, zones={"default", "z2"})
    server.machines = [
        ApiMachine("aaa111", "node-a", tags=["rack1"]),
        ApiMachine("bbb222", "node-b", tags=["rack1", "gpu"], pool="lab"),
        ApiMachine("ccc333", "node-c", zone="z2", status_name="Deployed", osystem="ubuntu", distro_series="jammy"),
    ]
    server.start()
    yield server
    server.stop()


def client_for(api: MaasApi) -> MaasClient:
    return MaasClient(api.url, ApiKey.parse(api.api_key, "test"), transport=UrllibTransport())


def test_select_by_name_and_by_filters(api: MaasApi) -> None:
    """system_id, hostname and FQDN name machines; tags are ANDed; pool and zone filter; no duplicates."""
    client = client_for(api)
    assert [m.system_id for m in select(client, ["node-a", "bbb222", "node-c.maas"])] == ["aaa111", "bbb222", "ccc333"]
    assert [m.system_id for m in select(client, [], tags=["rack1"])] == ["aaa111", "bbb222"]
    assert [m.system_id for m in select(client, [], tags=["rack1", "gpu"])] == ["bbb222"]
    assert [m.system_id for m in select(client, [], pool="lab")] == ["bbb222"]
    assert [m.system_id for m in select(client, ["node-b"], zone="z2")] == ["bbb222", "ccc333"]


def test_unknown_names_and_tags_are_refused_with_one_line_each(api: MaasApi) -> None:
    """Every unknown machine is named; an unknown tag carries MAAS's words; both are exit 12."""
    client = client_for(api)
    with pytest.raises(FleetError) as err:
        select(client, ["node-x", "node-a", "zzz999"])
    assert err.value.exit_code == FleetExit.REFUSED
    assert err.value.message.splitlines() == [
        "unknown machine 'node-x': MAAS has no machine with that system_id or hostname",
        "unknown machine 'zzz999': MAAS has no machine with that system_id or hostname",
    ]
    with pytest.raises(FleetError) as err:
        select(client, [], tags=["nope"])
    assert "No such tag(s): 'nope'." in err.value.message


@pytest.mark.parametrize(
    ("status", "owner", "words"),
    [
        ("Ready", None, None),
        ("Allocated", "admin", None),
        ("Allocated", "bob", "allocated to bob"),
        ("Deployed", "admin", "already Deployed (ubuntu/jammy, to disk)"),
        ("Deploying", "admin", "already Deploying"),
        ("Failed deployment", "admin", "release it, or mark it fixed"),
        ("Commissioning", None, "MAAS deploys only Ready machines"),
    ],
)
def test_deploy_problem_follows_maas_transitions(status: str, owner: str | None, words: str | None) -> None:
    """Only Ready, or Allocated to the caller, can be deployed; every other state is one explaining line."""
    problem = deploy_problem(machine(status, owner=owner, osystem="ubuntu", distro_series="jammy"), "admin")
    assert (problem is None) if words is None else (problem is not None and words in problem)


# ---- the contract with reporting.py, through MAAS's event processing -------------------------------------------


def test_a_real_install_reported_to_maas_reads_as_installed(site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A real run, reported by reporting.Reporter to the stand-in status endpoint, reads as each step then installed."""
    node = ApiMachine("abc123", "node-a", status_name="Deployed", ephemeral_deploy=True, token_key="nodetoken")
    with_api = MaasApi(machines=[node]).start()
    try:
        endpoint = with_api.url + "metadata/status/abc123"
        rep = reporting.Reporter(
            maas_status.Target(endpoint=endpoint, consumer_key="nodeck", token_key="nodetoken", token_secret="s"),
            timeout_s=2.0,
            flush_timeout_s=5.0,
        )
        base = deps(make_world(), tmp_path)
        fields = {name: getattr(base, name) for name in plan.Deps.__dataclass_fields__}
        result = plan.run(make_settings(site, tmp_path), plan.Deps(**{**fields, "observer": rep}))
        rep.close()
        assert result.outcome == "installed", result.error
        client = client_for(with_api)
        state = MachineState(Machine.from_json(client.machines([])[0]), "Deployed")
        tracker = Tracker([state], silent_after_s=600)
        tracker.deployed("abc123")
        steps: list[str] = []
        for event in sorted((e for e in (Event.from_json(x) for x in with_api.events) if e), key=lambda e: e.id):
            tracker.event(event)
            signal = classify(event)
            if signal is not None and signal.kind == "step":
                steps.append(signal.step)
        assert steps == [s for s in plan.STEPS if s != "reboot"]  # the reboot is requested after the last report
        assert (state.outcome, state.release, state.disk) == ("installed", RELEASE, result.disk)
        poller_state = MachineState(state.machine, "Deployed")
        poller_tracker = Tracker([poller_state], silent_after_s=600)
        poller_tracker.deployed("abc123")
        Poller(client, poller_tracker, cursor=0).poll()
        assert poller_state.outcome == "installed"
    finally:
        with_api.stop()


def test_a_step_fail_alone_waits_for_the_run_line_before_the_watch_ends() -> None:
    """After only a step's FAIL the machine is not done until the run's FAIL line or the settle time."""
    clock = Clock()
    tracker, state = tracked(clock, silent_after=30)
    tracker.event(ours(11, "dpkg exited 1", "ERROR"))
    assert state.outcome == "failed"
    assert not tracker.done()
    clock.now += 31
    assert tracker.done()
    tracker2, _ = tracked(clock)
    tracker2.event(ours(11, "FAILED at step packages: dpkg exited 1 (exit 5)", "ERROR"))
    assert tracker2.done()


def test_an_already_installed_boot_reads_as_installed() -> None:
    """A MAAS power-on of an installed machine (the firmware step's 'already installed: ...' start) is installed."""
    text = (
        "already installed: release release-3.21.3.0-7+auto15 on /dev/sda (serial S45NN, record from "
        "2026-12-06T21:00:00Z); boot the disk next (BootNext)"
    )
    event = Event(
        id=7,
        node="abc123",
        hostname="node-a",
        level="DEBUG",
        type="Node status event",
        description=f"'harmonic-installer' {text}",
    )
    signal = classify(event)
    assert signal is not None
    assert (signal.kind, signal.release, signal.disk) == ("installed", "release-3.21.3.0-7+auto15", "/dev/sda")
    plan_source = (Path(plan_firmware.__file__)).read_text()  # the firmware step of an installed disk
    assert 'f"already installed: {record.describe()}; boot the disk next (BootNext)"' in plan_source
