"""`harmonic-install fleet deploy|watch` against the stand-in MAAS REST API (loopback), end to end through the CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harmonic_installer import cli
from harmonic_installer.fleet.errors import FleetExit
from tests.support.maas_api import (
    ApiMachine,
    MaasApi,
    Step,
    fail_deployment,
    goes_silent,
    install_failure,
    install_success,
)
from tests.support.maas_server import closed_port

REPO = Path(__file__).resolve().parents[2]
FAST = ["--interval", "0.05", "--silent-after", "1.5", "--lines"]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[MaasApi]:
    """A stand-in MAAS; its key in $MAAS_API_KEY (never on the command line)."""
    server = MaasApi(tags={"rack1": "harmonic.install=1 harmonic.disk.serial=S1", "rack2": "", "plain": "quiet"})
    server.start()
    monkeypatch.setenv("MAAS_API_KEY", server.api_key)
    yield server
    server.stop()


@pytest.fixture
def user_data(tmp_path: Path) -> Path:
    """A user-data file as `harmonic-install user-data` writes it."""
    path = tmp_path / "user-data.yaml"
    path.write_text("#cloud-config\nruncmd:\n- [sh, /run/harmonic-userdata/install.sh]\n")
    return path


def fleet(api: MaasApi, *args: str) -> int:
    return cli.main(["fleet", *args, "--maas-url", api.url])


def event_id(api: MaasApi, system_id: str, type_: str, contains: str = "") -> int:
    """The id of the first event of that type (and description) for the machine."""
    return int(
        next(
            e["id"]
            for e in api.events
            if e["node"] == system_id and e["type"] == type_ and contains in e["description"]
        )
    )


def test_canary_first_then_batches_then_summary_and_report(
    api: MaasApi, user_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The canary installs before any other deploy; then at most --batch at once; exit 0 and a report per machine."""
    api.machines = [
        ApiMachine(f"m{i}0000", f"node-{i}", tags=["rack1"], timeline=install_success(gap=0.03)) for i in range(4)
    ]
    report = tmp_path / "report.json"
    assert (
        fleet(
            api,
            "deploy",
            "--tag",
            "rack1",
            "--user-data",
            str(user_data),
            "--batch",
            "2",
            "--report",
            str(report),
            *FAST,
        )
        == 0
    )
    assert api.deploys == ["m00000", "m10000", "m20000", "m30000"]
    canary_done = event_id(api, "m00000", "Node status event", "installed on")
    assert all(event_id(api, f"m{i}0000", "Deploying") > canary_done for i in (1, 2, 3))
    first_batch_done = min(event_id(api, f"m{i}0000", "Node status event", "installed on") for i in (1, 2))
    assert event_id(api, "m30000", "Deploying") > first_batch_done  # the third waited for a free slot
    sent = api.machine("m10000").deploy_params
    assert base64.b64decode(sent["user_data"]) == user_data.read_bytes()
    assert (sent["ephemeral_deploy"], sent["distro_series"]) == ("true", "jammy")
    data = json.loads(report.read_text())
    assert [(m["hostname"], m["outcome"], m["release"], m["disk"]) for m in data["machines"]] == [
        (f"node-{i}", "installed", "release-3.21.3.0-7+auto15", "/dev/sda") for i in range(4)
    ]
    assert all(isinstance(m["duration_s"], float) for m in data["machines"])
    out = capsys.readouterr().out
    assert "fleet: 4 machines: 4 installed" in out
    assert api.token_secret not in out


def test_a_failed_canary_stops_everything(api: MaasApi, user_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The canary's FAIL: no other machine is deployed; exit 13 with the cause line from our FAIL event."""
    api.machines = [
        ApiMachine("aaa111", "node-a", tags=["rack1"], timeline=install_failure("sha256 mismatch for Apollo ISO")),
        ApiMachine("bbb222", "node-b", tags=["rack1"], timeline=install_success()),
    ]
    assert fleet(api, "deploy", "--tag", "rack1", "--user-data", str(user_data), *FAST) == FleetExit.FAILED
    assert api.deploys == ["aaa111"]
    out = capsys.readouterr().out
    assert "node-a (aaa111): failed: at step download: sha256 mismatch for Apollo ISO (exit 4)" in out
    assert "node-b (bbb222): not-started: the canary node-a (aaa111) ended failed" in out


def test_after_a_failure_no_new_machine_starts_unless_keep_going(api: MaasApi, user_data: Path) -> None:
    """A later failure stops new deployments (exit 13); --keep-going deploys the rest anyway."""
    for keep_going in (False, True):
        api.deploys.clear()
        api.machines = [
            ApiMachine("aaa111", "node-a", tags=["rack1"], timeline=install_success()),
            ApiMachine(
                "bbb222", "node-b", tags=["rack1"], timeline=[Step(0.05, fail_deployment("IPMI: power on timed out"))]
            ),
            ApiMachine("ccc333", "node-c", tags=["rack1"], timeline=install_success()),
        ]
        extra = ["--keep-going"] if keep_going else []
        rc = fleet(api, "deploy", "--tag", "rack1", "--user-data", str(user_data), "--batch", "1", *extra, *FAST)
        assert rc == FleetExit.FAILED
        assert api.deploys == (["aaa111", "bbb222", "ccc333"] if keep_going else ["aaa111", "bbb222"])


def test_every_problem_is_a_line_and_nothing_is_deployed(
    api: MaasApi, user_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine already Deployed and one Deploying: a line each, 'nothing deployed', exit 12, no deploy call."""
    api.machines = [
        ApiMachine("aaa111", "node-a"),
        ApiMachine(
            "bbb222", "node-b", status_name="Deployed", osystem="custom", distro_series="other", ephemeral_deploy=True
        ),
        ApiMachine("ccc333", "node-c", status_name="Deploying"),
    ]
    assert fleet(api, "deploy", "node-a", "node-b", "ccc333", "--user-data", str(user_data), *FAST) == FleetExit.REFUSED
    assert api.deploys == []
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "harmonic-install fleet: node-b (bbb222) is already Deployed (custom/other, in memory): "
        "release it first if it is to be re-imaged",
        "harmonic-install fleet: node-c (ccc333) is already Deploying: watch it with `harmonic-install fleet watch`",
        "harmonic-install fleet: nothing deployed",
    ]


def test_unknown_machine_wrong_key_unreachable_maas(
    api: MaasApi, user_data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown machine (12), wrong key (11), MAAS down (10): one line each on stderr, nothing deployed."""
    api.machines = [ApiMachine("aaa111", "node-a")]
    assert fleet(api, "deploy", "node-a", "node-zz", "--user-data", str(user_data)) == FleetExit.REFUSED
    assert "unknown machine 'node-zz'" in capsys.readouterr().err
    monkeypatch.setenv("MAAS_API_KEY", "wrong:key:here")
    assert fleet(api, "deploy", "node-a", "--user-data", str(user_data)) == FleetExit.AUTH
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "refused the API key" in err[0]
    assert "Invalid API key" in err[0]
    monkeypatch.setenv("MAAS_API_KEY", api.api_key)
    argv = [
        "fleet",
        "deploy",
        "node-a",
        "--user-data",
        str(user_data),
        "--maas-url",
        f"http://127.0.0.1:{closed_port()}/MAAS/",
    ]
    assert cli.main(argv) == FleetExit.MAAS
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cannot reach MAAS" in err[0]
    assert api.deploys == []


def test_the_key_is_never_taken_from_argv(api: MaasApi, user_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """There is no --api-key flag (usage error), and without env or file --maas-url is a usage error."""
    assert fleet(api, "deploy", "node-a", "--user-data", str(user_data), "--api-key", api.api_key) == 2
    monkeypatch.delenv("MAAS_API_KEY")
    assert fleet(api, "deploy", "node-a", "--user-data", str(user_data)) == FleetExit.USAGE


def test_dry_run_validates_and_deploys_nothing(api: MaasApi, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run with --image: the plan with each machine's kernel options from its tags; no deploy call."""
    api.config["kernel_opts"] = "console=ttyS0"
    api.machines = [
        ApiMachine("aaa111", "node-a", tags=["rack1"]),
        ApiMachine("bbb222", "node-b", tags=["rack1", "rack2"]),
    ]
    assert fleet(api, "deploy", "--tag", "rack1", "--image", "harmonic-installer", "--dry-run") == 0
    out = capsys.readouterr().out
    assert api.deploys == []
    assert "would deploy 2 machines: custom image harmonic-installer in memory" in out
    assert "node-a (aaa111)  [Ready; pool default; zone default]  canary" in out
    assert out.count("kernel options from tags: console=ttyS0 harmonic.install=1 harmonic.disk.serial=S1") == 2
    assert "dry run: nothing deployed" in out
    assert not [r for r in api.requests if r[0] == "POST"]


def test_an_image_maas_does_not_have_is_refused_before_any_deploy(
    api: MaasApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """--image not in boot-resources: exit 12 (MAAS would have allocated the canary before refusing it)."""
    api.machines = [ApiMachine("aaa111", "node-a")]
    assert fleet(api, "deploy", "node-a", "--image", "no-such-image") == FleetExit.REFUSED
    assert "MAAS has no image 'no-such-image'" in capsys.readouterr().err
    assert api.machine("aaa111").status_name == "Ready"


def test_an_image_deploy_without_harmonic_install_1_is_refused(
    api: MaasApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """--image on a machine whose tags lack harmonic.install=1: the baked unit would idle, so exit 12."""
    api.machines = [ApiMachine("aaa111", "node-a", tags=["plain"])]
    assert fleet(api, "deploy", "node-a", "--image", "harmonic-installer") == FleetExit.REFUSED
    assert "node-a (aaa111): its kernel options have no harmonic.install=1" in capsys.readouterr().err
    assert api.deploys == []


def test_image_deploy_sends_the_image_name(api: MaasApi) -> None:
    """--image deploys in memory with distro_series set to the image's name (as `maas ... deploy` takes it)."""
    api.machines = [ApiMachine("aaa111", "node-a", tags=["rack1"], timeline=install_success())]
    assert fleet(api, "deploy", "node-a", "--image", "custom/harmonic-installer", *FAST) == 0
    params = api.machine("aaa111").deploy_params
    assert (params["distro_series"], params["ephemeral_deploy"]) == ("harmonic-installer", "true")
    assert "user_data" not in params


def watch_fixture(api: MaasApi) -> None:
    """Four machines deployed 'earlier': one installs, one fails, MAAS fails one, one goes silent; and one Ready."""
    api.machines = [
        ApiMachine("aaa111", "node-a", status_name="Deploying", tags=["rack1"], timeline=install_success()),
        ApiMachine(
            "bbb222",
            "node-b",
            status_name="Deploying",
            tags=["rack1"],
            timeline=install_failure("dpkg exited 1", "packages", 5),
        ),
        ApiMachine(
            "ccc333",
            "node-c",
            status_name="Deploying",
            tags=["rack1"],
            timeline=[Step(0.1, fail_deployment("PXE: no boot file"))],
        ),
        ApiMachine("ddd444", "node-d", status_name="Deploying", tags=["rack1"], timeline=goes_silent()),
        ApiMachine("eee555", "node-e", tags=["rack1"]),
    ]
    for m in api.machines[:4]:
        api.add_event(m, "Installation complete", "DEBUG", "an event from before this deployment")
        api.add_event(m, "Deploying", "INFO", "")
        api.start_timeline(m.system_id)


def test_watch_tells_installed_failed_maas_failed_silent(
    api: MaasApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each outcome with its cause; a line per change when not a terminal; exit 13; the JSON report; no POST."""
    watch_fixture(api)
    report = tmp_path / "r.json"
    assert fleet(api, "watch", "--tag", "rack1", "--report", str(report), *FAST) == FleetExit.FAILED
    machines = {m["hostname"]: m for m in json.loads(report.read_text())["machines"]}
    assert machines["node-a"]["outcome"] == "installed"
    assert (machines["node-b"]["outcome"], machines["node-b"]["cause"]) == (
        "failed",
        "at step packages: dpkg exited 1 (exit 5)",
    )
    assert (machines["node-c"]["outcome"], machines["node-c"]["cause"]) == ("maas-failed", "PXE: no boot file")
    assert machines["node-d"]["outcome"] == "silent"
    assert machines["node-d"]["step"] == "packages"
    assert machines["node-e"]["outcome"] == "not-deployed"
    out = capsys.readouterr().out
    assert "node-a status=Deployed step=done download=- " in out
    assert "\x1b[" not in out
    assert not [r for r in api.requests if r[0] == "POST"]


def test_watch_draws_a_live_table_on_a_terminal(
    api: MaasApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--live: a header with every column, redrawn in place (ANSI cursor movement), cut to the terminal width."""
    monkeypatch.setenv("COLUMNS", "200")
    api.machines = [ApiMachine("aaa111", "node-a", status_name="Deploying", timeline=install_success())]
    api.start_timeline("aaa111")
    assert fleet(api, "watch", "node-a", "--live", "--interval", "0.05") == 0
    out = capsys.readouterr().out
    assert "MACHINE  MAAS STATUS  STEP" in out
    assert "DOWNLOAD  ELAPSED  RESULT" in out
    assert "\x1b[" in out
    assert "installed release-3.21.3.0-7+auto15" in out
    monkeypatch.setenv("COLUMNS", "50")
    api.machines[0].timeline, api.machines[0]._done = install_success(), 0
    api.start_timeline("aaa111")
    assert fleet(api, "watch", "node-a", "--live", "--interval", "0.05") == 0
    table = re.sub(r"\x1b\[\d*[FJ]", "\n", capsys.readouterr().out.split("fleet: ")[0])
    assert max(len(line) for line in table.splitlines()) <= 49


def test_ctrl_c_stops_watching_and_changes_nothing(api: MaasApi, tmp_path: Path) -> None:
    """SIGINT to a real `fleet watch` process: exit 130, a summary, and MAAS saw only GET requests."""
    api.machines = [ApiMachine("aaa111", "node-a", status_name="Deploying", timeline=goes_silent())]
    api.start_timeline("aaa111")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MAAS_API_KEY": api.api_key}
    argv = [
        sys.executable,
        "-m",
        "harmonic_installer",
        "fleet",
        "watch",
        "node-a",
        "--maas-url",
        api.url,
        "--lines",
        "--interval",
        "0.1",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "node-a" in first
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == FleetExit.INTERRUPTED, err
    assert "interrupted: stopped watching; nothing was changed in MAAS" in out
    assert "Traceback" not in err
    assert {method for method, _ in api.requests} == {"GET"}


def test_ctrl_c_during_a_deploy_starts_nothing_more(
    api: MaasApi, user_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while the canary installs: exit 130, no other machine deployed, the rest reported not-started."""
    from harmonic_installer.fleet import commands, deploy, profile

    api.machines = [ApiMachine(f"m{i}0000", f"node-{i}", tags=["rack1"], timeline=goes_silent(gap=5)) for i in range(3)]
    connection, _ = profile.from_url(api.url, environ={"MAAS_API_KEY": api.api_key}, key_file=None)
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt

    env = commands.Env(sleep=sleep)
    spec = deploy.DeploySpec(user_data=user_data.read_bytes())
    options = commands.Options(tags=("rack1",), live=False)
    assert commands.run_deploy(connection, options, spec, batch=2, env=env) == FleetExit.INTERRUPTED
    assert api.deploys == ["m00000"]
    out = capsys.readouterr().out
    assert "node-1 (m10000): not-started: interrupted before its turn" in out
    assert "interrupted: no more deployments started" in out


def test_the_maas_cli_profile_is_used_by_the_cli(
    api: MaasApi, user_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--profile with --maascli-db: the URL and key come from the profile (no environment needed)."""
    from tests.unit.test_fleet_client import make_db

    monkeypatch.delenv("MAAS_API_KEY")
    db = make_db(tmp_path / "maascli.db", {"ops": {"credentials": api.api_key.split(":"), "url": api.url + "api/2.0/"}})
    api.machines = [ApiMachine("aaa111", "node-a")]
    argv = [
        "fleet",
        "deploy",
        "node-a",
        "--user-data",
        str(user_data),
        "--dry-run",
        "--profile",
        "ops",
        "--maascli-db",
        str(db),
    ]
    assert cli.main(argv) == 0
    assert api.rejections == []


def test_a_machine_quiet_for_hours_before_the_watch_is_silent_at_once(
    api: MaasApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Silence counts from the newest event's time in MAAS, not from the watch's start: exit 14 right away."""
    node = ApiMachine("aaa111", "node-a", status_name="Deployed")
    api.machines = [node]
    api.add_event(node, "Deploying", "INFO", "")
    api.add_event(node, "Node status event", "DEBUG", "'harmonic-installer' install the vendor packages with dpkg")
    two_hours_ago = time.time() - 7200
    for event in api.events:
        event["created"] = time.strftime("%a, %d %b. %Y %H:%M:%S", time.gmtime(two_hours_ago))
    started = time.monotonic()
    assert fleet(api, "watch", "node-a", "--silent-after", "600", "--lines", "--interval", "0.05") == FleetExit.SILENT
    assert time.monotonic() - started < 10
    assert re.search(
        r"node-a \(aaa111\): silent: no event and no status change for 720[0-2] s", capsys.readouterr().out
    )
