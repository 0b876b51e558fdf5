"""reporting: signed start/finish events reach MAAS in order, and a slow, failing or absent MAAS never
delays or changes the install beyond a bounded flush."""

from __future__ import annotations

import dataclasses
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harmonic_installer import __version__, cli, config, maas_events, maas_status, plan, reporting
from harmonic_installer.errors import ExitCode
from harmonic_installer.log import LogTail
from tests.support.maas_server import MaasServer, closed_port
from tests.unit.download.kit import tls_cert  # noqa: F401 - fixture
from tests.unit.fakes import FakeDisks, FakeRunner, disk
from tests.unit.test_plan import RELEASE, Site, deps, make_settings, make_world, site  # noqa: F401 - fixture

PARENT = "harmonic-installer"


@pytest.fixture
def maas() -> Iterator[MaasServer]:
    """A healthy stand-in MAAS status endpoint on loopback."""
    with MaasServer() as server:
        yield server


def target_for(server: MaasServer, endpoint: str | None = None) -> maas_status.Target:
    return maas_status.Target(
        endpoint=endpoint or server.url,
        consumer_key=server.consumer_key,
        token_key=server.token_key,
        token_secret=server.token_secret,
    )


def reporter_for(server: MaasServer, endpoint: str | None = None, **kwargs: object) -> reporting.Reporter:
    options: dict[str, object] = {
        "timeout_s": 0.5,
        "flush_timeout_s": 3.0,
        "progress_interval_s": 1.0,
        "retry_wait_s": 0.05,
    }
    options.update(kwargs)
    # overrides untyped on purpose
    return reporting.Reporter(target_for(server, endpoint), **options)  # type: ignore[arg-type]


def report(outcome: str = "installed", **fields: object) -> plan.InstallReport:
    values: dict[str, object] = {"outcome": outcome, "exit_code": 0, "steps": ()}
    values.update(fields)
    return plan.InstallReport(**values)  # type: ignore[arg-type]  # overrides untyped on purpose


# ---- OAuth ------------------------------------------------------------------------------------------------


def test_oauth_header_is_plaintext_signature_of_the_secrets() -> None:
    """The header carries PLAINTEXT `consumer_secret&token_secret`, percent-encoded, and every OAuth field."""
    target = maas_status.Target("http://m/MAAS/metadata/status/x", "ck", "", "tk", "s&cret")
    header = maas_status.oauth_header(target, timestamp=1700000000, nonce="n1")
    assert header.startswith("OAuth ")
    assert 'oauth_signature="%26s%2526cret"' in header
    assert 'oauth_signature_method="PLAINTEXT"' in header
    assert 'oauth_consumer_key="ck"' in header
    assert 'oauth_token="tk"' in header
    assert 'oauth_timestamp="1700000000"' in header
    assert 'oauth_version="1.0"' in header


def test_target_repr_hides_secrets() -> None:
    """A Target printed in a log or traceback shows no secret."""
    target = maas_status.Target("http://m/x", "ck", "csecret", "tk", "tsecret")
    assert "secret" not in repr(target).replace("secrets=***", "")


# ---- the event stream ---------------------------------------------------------------------------------------


def test_steps_become_nested_signed_events(maas: MaasServer) -> None:
    """Each step is a start/finish pair under one parent; the server accepts every signature and payload."""
    rep = reporter_for(maas)
    rep.step_started("preflight", "check root, the target disk and the tools")
    rep.step_finished("preflight", "ok", "disk /dev/sda 480 GB")
    rep.step_started("packages", "install the vendor packages with dpkg")
    rep.step_finished("packages", "skipped", "already installed: ostree-upgrade 2.0.41")
    rep.run_finished(report(release=RELEASE, disk="/dev/sda"))
    stats = rep.close()
    assert stats == reporting.Stats(submitted=8, sent=8, dropped=0)
    assert maas.rejections == []
    assert maas.names() == [
        ("start", PARENT, None),
        ("start", f"{PARENT}/preflight", None),
        ("finish", f"{PARENT}/preflight", "SUCCESS"),
        ("start", f"{PARENT}/packages", None),
        ("finish", f"{PARENT}/packages", "SUCCESS"),
        ("start", f"{PARENT}/installed", None),
        ("finish", f"{PARENT}/installed", "SUCCESS"),
        ("finish", PARENT, "SUCCESS"),
    ]
    maas.assert_well_formed()
    events = maas.received()
    assert {e["origin"] for e in events} == {"harmonic-installer"}
    assert all(abs(e["timestamp"] - time.time()) < 60 for e in events)
    assert events[2]["description"] == "disk /dev/sda 480 GB"
    assert events[4]["description"].startswith("skipped: ")
    assert RELEASE in events[-1]["description"]
    assert "/dev/sda" in events[-1]["description"]
    assert "files" not in events[-1]


def test_failure_carries_the_cause_and_the_log_tail(maas: MaasServer) -> None:
    """A failed run ends with the step's FAIL, then the parent's FAIL: the cause, then the log tail, no files."""
    rep = reporter_for(maas, log_tail=lambda: "line one\nstep.failed error='write failed at 4096 bytes'\n")
    rep.step_started("write", "write the ISO to /dev/sda with ostree-production")
    rep.step_finished("write", "failed", "ostree-production failed: write failed at 4096 bytes")
    rep.run_finished(report("failed", exit_code=6, error="write failed at 4096 bytes", failed_step="write"))
    rep.close()
    maas.assert_well_formed()
    assert maas.rolled_back == []
    final = maas.received()[-1]
    assert (final["name"], final["result"]) == (PARENT, "FAIL")
    assert "files" not in final
    assert final["description"].splitlines() == [
        "FAILED at step write: write failed at 4096 bytes (exit 6)",
        "last log lines:",
        "line one",
        "step.failed error='write failed at 4096 bytes'",
    ]
    assert maas.received()[-2]["result"] == "FAIL"


def test_the_failure_reaches_the_operators_event_log_of_an_in_memory_deploy(maas: MaasServer) -> None:
    """For a Deployed (in-memory) machine the final FAIL is an ERROR in MAAS's event log, with the cause and tail."""
    rep = reporter_for(maas, log_tail=lambda: "command.failed output_tail='E: dpkg was interrupted'\n")
    rep.step_started("packages", "install the vendor packages with dpkg")
    rep.step_finished("packages", "failed", "dpkg could not install ostree-upgrade")
    rep.run_finished(report("failed", exit_code=5, error="dpkg could not install", failed_step="packages"))
    rep.close()
    errors = [(action, text) for level, _, action, text in maas.event_log() if level == "ERROR"]
    assert [action for action, _ in errors] == [f"{PARENT}/packages", PARENT]  # the step's FAIL, then the run's
    assert errors[-1][1].startswith("'harmonic-installer' FAILED at step packages: dpkg could not install (exit 5)")
    assert "E: dpkg was interrupted" in errors[-1][1]
    debug = [(action, text) for level, _, action, text in maas.event_log() if level == "DEBUG"]
    assert debug == [
        (PARENT, f"'harmonic-installer' harmonic-install {__version__}: installing Harmonic cOS"),
        (f"{PARENT}/packages", "'harmonic-installer' install the vendor packages with dpkg"),
    ]


def test_the_stand_in_rolls_back_a_message_with_files_as_maas_does(maas: MaasServer) -> None:
    """The stand-in answers 204 to a message with files and then loses it whole, as MAAS for in-memory deploys."""
    target = target_for(maas)
    transport = maas_status.UrllibTransport()
    body: dict[str, object] = {
        "event_type": "finish",
        "origin": "x",
        "name": PARENT,
        "description": "FAILED",
        "result": "FAIL",
    }
    body.update(timestamp=time.time(), files=[{"path": "a.log", "encoding": "base64", "content": "eA=="}])
    headers = {"Authorization": maas_status.oauth_header(target, timestamp=int(time.time()), nonce="n1")}
    status, _ = transport.post(maas.url, json.dumps(body).encode(), headers, 5)
    assert status == 204
    assert maas.received() == []
    assert maas.event_log() == []
    assert [m["description"] for m in maas.rolled_back] == ["FAILED"]


def test_a_long_log_tail_is_cut_to_the_newest_lines_within_the_bound(maas: MaasServer) -> None:
    """A huge tail never makes the final description unbounded: the newest lines are kept, each cut short."""
    lines = [f"line {i} " + "x" * 100 for i in range(500)] + ["last " + "y" * 5000]
    rep = reporter_for(maas, log_tail=lambda: "\n".join(lines))
    rep.step_started("download", "fetch")
    rep.run_finished(report("failed", exit_code=4, error="checksum mismatch", failed_step="download"))
    rep.close()
    text = maas.received()[-1]["description"]
    assert len(text) <= 4000
    assert text.startswith("FAILED at step download: checksum mismatch (exit 4)\nlast log lines:\n")
    kept = text.splitlines()[2:]
    assert kept[-1].startswith("last yyy")
    assert kept[-1].endswith("...")
    assert len(kept[-1]) <= 400
    assert kept[-2].startswith("line 499 ")
    assert "line 0 " not in text


def test_nothing_is_sent_when_no_step_started(maas: MaasServer) -> None:
    """A run that never started a step (another run holds the lock) posts nothing, so MAAS is not told FAIL."""
    rep = reporter_for(maas)
    rep.run_finished(report("failed", exit_code=7, error="another harmonic-install is running"))
    assert rep.close() == reporting.Stats(0, 0, 0)
    assert maas.received() == []


def test_progress_is_rate_limited_and_finished_with_the_download(maas: MaasServer) -> None:
    """Progress goes out at most once per interval as `start` events of one child, finished before the step."""
    now = [100.0]
    rep = reporter_for(maas, progress_interval_s=30.0, clock=lambda: now[0])
    rep.step_started("download", "fetch and verify")
    total = 3000 * 1024**2
    for second in range(0, 100):
        now[0] = 100.0 + second
        rep.progress("Apollo ISO", second * total // 100, total)
    rep.progress("Apollo ISO", total, total)  # completion is the step's finish, not a progress line
    assert maas.wait_for(lambda events: len(events) == 5)  # else the end of the run makes them stale
    rep.step_finished("download", "ok", "3 files verified")
    rep.run_finished(report())
    rep.close()
    child = f"{PARENT}/download/apollo-iso"
    progress = [e for e in maas.received() if e["name"] == child]
    assert [e["event_type"] for e in progress] == ["start", "start", "start", "finish"]
    assert progress[0]["description"] == "downloading Apollo ISO: 900 MiB of 3,000 MiB (30%)"
    assert progress[-1]["result"] == "SUCCESS"
    maas.assert_well_formed()


def test_event_payload_is_ascii_json(maas: MaasServer) -> None:
    """Non-ASCII text is escaped (MAAS rejects non-ASCII payloads) and long descriptions are cut."""
    rep = reporter_for(maas)
    rep.step_started("preflight", "disque « système » " + "x" * 5000)
    rep.step_finished("preflight", "ok", "fine")
    rep.run_finished(report())
    rep.close()
    assert maas.rejections == []
    first_step = maas.received()[1]
    assert first_step["description"].startswith("disque « système »")
    assert len(first_step["description"]) <= 1000


# ---- MAAS misbehaving -----------------------------------------------------------------------------------------


def test_clock_skew_is_corrected_after_401(maas: MaasServer) -> None:
    """When MAAS's clock is an hour ahead, the first 401 teaches the skew and the same event is re-signed."""
    maas.skew_s = 3600
    rep = reporter_for(maas)
    with capture_logs() as logs:
        rep.step_started("preflight", "check")
        rep.step_finished("preflight", "ok", "fine")
        rep.run_finished(report())
        stats = rep.close()
    assert stats.sent == 6
    assert stats.dropped == 0
    assert [r.status for r in maas.rejections] == [401]
    assert "off the server clock" in maas.rejections[0].reason
    skew = [e for e in logs if e["event"] == "report.clock_skew"]
    assert len(skew) == 1
    assert 3590 <= skew[0]["skew_s"] <= 3610
    assert all(abs(e["timestamp"] - maas.now()) < 60 for e in maas.received())


def test_skew_is_shared_with_cloud_init_through_its_skew_file(maas: MaasServer, tmp_path: Path) -> None:
    """A skew already in /run/oauth_skew.json (cloud-init's format) is used at once; a new one is written back."""
    maas.skew_s = 3600
    skew_file = tmp_path / "oauth_skew.json"
    host = maas.url.split("/")[2]
    skew_file.write_text(json.dumps({host: 3600, "other:80": 7}))
    rep = reporter_for(maas, skew_file=str(skew_file))
    rep.step_started("preflight", "check")
    assert rep.close().sent == 2
    assert maas.rejections == []
    maas.skew_s = -7200
    rep = reporter_for(maas, skew_file=str(skew_file))
    rep.step_started("preflight", "check")
    assert rep.close().sent == 2
    saved = json.loads(skew_file.read_text())
    assert saved["other:80"] == 7
    assert -7210 <= saved[host] <= -7190


def test_wrong_credentials_are_dropped_not_retried(maas: MaasServer) -> None:
    """A 401 without a clock problem is not retried: the event is dropped and counted."""
    rep = reporting.Reporter(
        maas_status.Target(maas.url, maas.consumer_key, "", maas.token_key, "wrong"), timeout_s=0.5, flush_timeout_s=2
    )
    rep.step_started("preflight", "check")
    stats = rep.close()
    assert stats == reporting.Stats(submitted=2, sent=0, dropped=2)
    assert {r.reason for r in maas.rejections} == {"bad oauth_signature"}


def test_server_errors_are_dropped_counted_and_logged(maas: MaasServer) -> None:
    """MAAS answering 500 costs one attempt per event; drops are counted, logged, and summarised."""
    maas.fail_with = 500
    rep = reporter_for(maas)
    with capture_logs() as logs:
        rep.step_started("preflight", "check")
        rep.step_finished("preflight", "ok", "fine")
        rep.run_finished(report())
        stats = rep.close()
    assert stats.sent == 0
    assert stats.dropped == stats.submitted == 6
    dropped = [e for e in logs if e["event"] == "report.dropped"]
    assert dropped
    assert dropped[0]["log_level"] == "warning"
    assert dropped[0]["reason"] == "HTTP 500"
    summary = [e for e in logs if e["event"] == "report.summary"]
    assert summary == [{**summary[0], "sent": 0, "dropped": 6, "log_level": "warning"}]


def test_maas_down_is_fast() -> None:
    """Connection refused drops events at once; close() returns immediately."""
    rep = reporter_for(MaasServer(), endpoint=f"http://127.0.0.1:{closed_port()}/MAAS/metadata/status/x")
    started = time.monotonic()
    rep.step_started("preflight", "check")
    rep.step_finished("preflight", "ok", "fine")
    rep.run_finished(report("failed", exit_code=3, error="disk too small"))
    stats = rep.close()
    assert time.monotonic() - started < 1.0
    assert stats.sent == 0
    assert stats.dropped == 4


def test_slow_maas_never_holds_the_run_beyond_the_flush_timeout(maas: MaasServer) -> None:
    """A MAAS that does not answer in time: observer calls return at once, close() waits at most the flush time."""
    maas.delay_s = 1.5
    rep = reporter_for(maas, timeout_s=0.3, flush_timeout_s=1.0)
    started = time.monotonic()
    for name in plan.STEPS:
        rep.step_started(name, name)
        rep.step_finished(name, "ok", name)
    rep.run_finished(report())
    assert time.monotonic() - started < 0.2  # posting happens in the background
    stats = rep.close()
    assert time.monotonic() - started < 1.6
    assert stats.sent == 0
    assert stats.dropped == stats.submitted == 2 * len(plan.STEPS) + 2 + 2  # steps, the parent, installed


def test_closed_reporter_ignores_late_events(maas: MaasServer) -> None:
    """Events after close() are ignored; close() twice is harmless."""
    rep = reporter_for(maas)
    rep.step_started("preflight", "check")
    rep.close()
    rep.step_finished("preflight", "ok", "late")
    assert rep.close().submitted == 2
    assert len(maas.received()) == 2


# ---- settings -------------------------------------------------------------------------------------------------


def settings_with(**env: str) -> config.Settings:
    return config.load(environ={f"HARMONIC_{k.upper()}": v for k, v in env.items()}, cmdline="")


def test_explicit_settings_win_over_cloud_init_field_by_field(maas: MaasServer) -> None:
    """maas.endpoint from settings and the OAuth keys from cloud-init combine."""
    from harmonic_installer.cloudinit_cfg import WebhookConfig

    found = WebhookConfig("http://10.0.0.2:5248/MAAS/metadata/status/abc", "ck", "", "tk", "ts", source="x.cfg")
    target = maas_status.resolve_target(settings_with(maas_endpoint=maas.url), find=lambda: found)
    assert target is not None
    assert (target.endpoint, target.consumer_key, target.token_secret) == (maas.url, "ck", "ts")
    assert "settings" in target.source
    assert "cloud-init" in target.source


def test_complete_settings_do_not_read_cloud_init(maas: MaasServer) -> None:
    """Endpoint, consumer key, token key and secret all set: cloud-init's files are not even read."""

    def find() -> None:
        raise AssertionError("cloud-init config read although the settings are complete")

    env = {k.removeprefix("HARMONIC_").lower(): v for k, v in maas.environ().items()}
    target = maas_status.resolve_target(settings_with(**env), find=find)
    assert target is not None
    assert target.source == "settings maas.*"
    assert target.token_secret == maas.token_secret


def test_reporting_off_when_disabled_or_unconfigured() -> None:
    """maas.enabled=false never reports; auto without any endpoint does not either."""
    from harmonic_installer.cloudinit_cfg import WebhookConfig

    found = WebhookConfig("http://10.0.0.2:5248/MAAS/metadata/status/abc", "ck", "", "tk", "ts")
    assert maas_status.resolve_target(settings_with(maas_enabled="false"), find=lambda: found) is None
    assert maas_status.resolve_target(settings_with(), find=lambda: None) is None
    with capture_logs() as logs:
        assert maas_status.resolve_target(settings_with(maas_enabled="true"), find=lambda: None) is None
    assert [e["event"] for e in logs] == ["report.not_configured"]


def test_secrets_are_redacted_in_settings_listing() -> None:
    """`harmonic-install settings` shows *** for the token secret and key (MAAS trusts the key alone)."""
    rows = {k: v for k, v, _ in config.effective(settings_with(maas_token_secret="s3cr3t", maas_token_key="tk"))}
    assert rows["maas.token_secret"] == "***"
    assert rows["maas.token_key"] == "***"
    assert rows["maas.consumer_key"] == ""
    assert "s3cr3t" not in repr(config.effective(settings_with(maas_token_secret="s3cr3t")))


def test_log_tail_keeps_last_redacted_lines() -> None:
    """The log ring keeps the last N lines, as the console shows them, with secrets already redacted."""
    import io

    import structlog

    from harmonic_installer import log as logsetup

    tail = LogTail(max_lines=3)
    logsetup.configure(stream=io.StringIO(), json=True, tail=tail)
    logger = structlog.get_logger()
    for i in range(5):
        logger.info("thing.happened", i=i, token_secret="s3cr3t")
    lines = tail.text().splitlines()
    assert len(lines) == 3
    last = logsetup.parse_line(lines[-1])
    assert (last.level, last.message, last.fields["i"]) == ("info", "thing.happened", 4)
    assert "s3cr3t" not in tail.text()


# ---- through plan and the CLI ---------------------------------------------------------------------------------


def test_plan_run_reports_every_step_to_maas(maas: MaasServer, site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A whole install through plan.run produces the parent and one start/finish pair per step, in order."""
    rep = reporter_for(maas)
    base = deps(make_world(), tmp_path)
    result = plan.run(make_settings(site, tmp_path), dataclasses.replace(base, observer=rep))
    rep.close()
    assert result.exit_code == 0, result.error
    maas.assert_well_formed()
    steps = [name for kind, name, _ in maas.names() if kind == "start" and name.count("/") == 1]
    assert steps == [
        f"{PARENT}/{s}" for s in (*plan.STEPS, "installed") if s != "reboot"
    ]  # the reboot comes after the flush


def test_success_is_a_start_event_maas_logs_for_a_deployed_node(maas: MaasServer) -> None:
    """On success the last start (the only kind MAAS logs at DEBUG for a Deployed node) says what was installed."""
    rep = reporter_for(maas)
    rep.step_started("write", "write the ISO to /dev/sda with ostree-production")
    rep.step_finished("write", "ok", "written")
    rep.run_finished(report(release=RELEASE, disk="/dev/sda"))
    rep.close()
    starts = [e for e in maas.received() if e["event_type"] == "start"]
    assert (starts[-1]["name"], starts[-1]["description"]) == (
        maas_events.INSTALLED_NAME,
        f"Harmonic cOS {RELEASE} installed on /dev/sda",
    )
    maas.assert_well_formed()


def test_a_failed_run_sends_no_installed_event(maas: MaasServer) -> None:
    """Only an installed outcome produces the installed start event."""
    rep = reporter_for(maas)
    rep.step_started("write", "write the ISO to /dev/sda with ostree-production")
    rep.step_finished("write", "failed", "ostree-production exited 1")
    rep.run_finished(report("failed", exit_code=6, error="ostree-production exited 1", failed_step="write"))
    rep.close()
    assert maas_events.INSTALLED_NAME not in {name for _, name, _ in maas.names()}


def test_not_a_target_is_a_warning_not_a_failure(maas: MaasServer, site: Site, tmp_path: Path) -> None:  # noqa: F811
    """A host without the disk: preflight is 'skipped', the parent finishes WARN (MAAS does not mark it failed)."""
    rep = reporter_for(maas)
    base = deps(make_world(), tmp_path, FakeDisks([]))
    result = plan.run(make_settings(site, tmp_path), dataclasses.replace(base, observer=rep))
    rep.close()
    assert result.outcome == "not-a-target"
    assert maas.names() == [
        ("start", PARENT, None),
        ("start", f"{PARENT}/preflight", None),
        ("finish", f"{PARENT}/preflight", "SUCCESS"),
        ("finish", PARENT, "WARN"),
    ]


def _cli_args(site: Site, tmp_path: Path) -> list[str]:  # noqa: F811
    return [
        "-i",
        "--server-url",
        site.url,
        "--iso-release",
        RELEASE,
        "--working-dir",
        str(tmp_path / "w"),
        "--iso-dir",
        str(tmp_path / "d"),
        "--state-dir",
        str(tmp_path / "s"),
    ]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HARMONIC_* from the developer's shell; an empty kernel command line."""
    import os

    for name in list(os.environ):
        if name.startswith("HARMONIC_"):
            monkeypatch.delenv(name)
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/vmlinuz\n")
    monkeypatch.setenv("HARMONIC_CMDLINE_FILE", str(cmdline))
    monkeypatch.setenv("HARMONIC_MAAS_TIMEOUT_S", "0.3")
    monkeypatch.setenv("HARMONIC_MAAS_FLUSH_TIMEOUT_S", "1")


def _factory(world_dpkg_rc: int, tmp_path: Path) -> cli.DepsFactory:
    world = make_world(dpkg_rc=world_dpkg_rc)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "ostree-production").write_text("#!/bin/sh\n")
    (bindir / "ostree-production").chmod(0o755)
    return lambda s: plan.Deps(
        runner=world.runner,
        disks=FakeDisks([disk(size_bytes=10**9)]),
        environ={"PATH": f"{bindir}:/usr/bin:/bin"},
        geteuid=lambda: 0,
        sleep=lambda s: None,
        reboot_marker=tmp_path / "reboot-wanted",
    )


@pytest.mark.usefixtures("cli_env")
def test_cli_failure_reaches_maas_with_cause_and_log(
    maas: MaasServer,
    site: Site,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the CLI (settings from HARMONIC_MAAS_*): a dpkg failure exits 5 and MAAS gets FAIL + the log."""
    for name, value in maas.environ().items():
        monkeypatch.setenv(name, value)
    assert cli.main(_cli_args(site, tmp_path), deps_factory=_factory(1, tmp_path)) == ExitCode.PACKAGES
    maas.assert_well_formed()
    final = maas.received()[-1]
    assert final["result"] == "FAIL"
    assert "at step packages" in final["description"]
    assert "files" not in final
    assert "step.failed" in final["description"]
    assert "dependency problems" in final["description"]
    assert maas.token_secret not in json.dumps(maas.received())


@pytest.mark.usefixtures("cli_env")
def test_cli_reboot_failure_after_the_success_reaches_maas(
    maas: MaasServer,
    site: Site,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The success is flushed before the reboot; when the reboot command then fails (exit 6), MAAS gets a FAIL."""
    for name, value in maas.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HARMONIC_REBOOT_ENABLED", "true")
    world = make_world(reboot_rc=1)
    factory = _factory(0, tmp_path)
    code = cli.main(
        _cli_args(site, tmp_path), deps_factory=lambda s: dataclasses.replace(factory(s), runner=world.runner)
    )
    assert code == ExitCode.WRITE
    events = maas.received()
    ends = [i for i, e in enumerate(events) if e["name"] == PARENT and e["event_type"] == "finish"]
    assert [events[i]["result"] for i in ends] == ["SUCCESS", "FAIL"]
    maas.assert_well_formed(events=events[: ends[0] + 1])  # the run, as before
    maas.assert_well_formed(events=events[ends[0] + 1 :])  # then the reboot's own start and FAIL
    final = events[-1]
    assert "at step reboot" in final["description"]
    assert "(exit 6)" in final["description"]
    assert "systemctl reboot" in final["description"]
    assert "last log lines" in final["description"]


@pytest.mark.parametrize("how", ["down", "slow", "500"])
@pytest.mark.usefixtures("cli_env")
def test_cli_result_is_the_same_when_maas_misbehaves(
    how: str,
    site: Site,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """MAAS down, slow or failing: same exit code, run bounded by the flush timeout, drops counted and logged."""
    with MaasServer(delay_s=2.0 if how == "slow" else 0.0, fail_with=500 if how == "500" else None) as server:
        endpoint = server.url if how != "down" else f"http://127.0.0.1:{closed_port()}/MAAS/metadata/status/x"
        for name, value in server.environ(endpoint).items():
            monkeypatch.setenv(name, value)
        started = time.monotonic()
        rc = cli.main(_cli_args(site, tmp_path), deps_factory=_factory(1, tmp_path))
        took = time.monotonic() - started
    assert rc == ExitCode.PACKAGES
    assert took < 6, took
    err = capsys.readouterr().err
    assert "report.dropped" in err
    assert "report.summary" in err


@pytest.mark.usefixtures("cli_env")
def test_plan_mode_and_dry_run_report_nothing(
    maas: MaasServer,
    site: Site,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without -i, or with --dry-run, MAAS hears nothing even when configured."""
    for name, value in maas.environ().items():
        monkeypatch.setenv(name, value)
    args = _cli_args(site, tmp_path)
    assert cli.main(args[1:], deps_factory=_factory(0, tmp_path)) == 0
    assert cli.main([*args, "--dry-run"], deps_factory=_factory(0, tmp_path)) == 0
    time.sleep(0.1)
    assert maas.received() == []


def test_interrupted_run_is_reported_as_failed(maas: MaasServer) -> None:
    """SIGTERM mid-step: the step and the parent finish FAIL with 'INTERRUPTED', the log tail in the description."""
    rep = reporter_for(maas, log_tail=lambda: "download.progress ...\n")
    rep.step_started("download", "fetch")
    rep.step_finished("download", "failed", "interrupted by SIGTERM; a re-run continues where this one stopped")
    rep.run_finished(report("interrupted", exit_code=143, error="interrupted by SIGTERM", failed_step="download"))
    rep.close()
    maas.assert_well_formed()
    final = maas.received()[-1]
    assert final["description"] == (
        "INTERRUPTED at step download: interrupted by SIGTERM (exit 143)\nlast log lines:\ndownload.progress ..."
    )
    assert maas.rolled_back == []


@pytest.mark.usefixtures("cli_env")
def test_internal_error_still_fails_the_machine_in_maas(
    maas: MaasServer,
    site: Site,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug (an unexpected exception) exits 1, and MAAS still gets the parent's FAIL naming it, with the log tail."""
    for name, value in maas.environ().items():
        monkeypatch.setenv(name, value)
    factory = _factory(0, tmp_path)

    def broken(s: config.Settings) -> plan.Deps:
        d = factory(s)

        def boom(argv: tuple[str, ...], answer: str | None) -> tuple[int, str]:
            raise RuntimeError("bug in a handler")

        assert isinstance(d.runner, FakeRunner)
        d.runner.handlers["dpkg-deb"] = boom
        return d

    assert cli.main(_cli_args(site, tmp_path), deps_factory=broken) == 1
    maas.assert_well_formed()
    final = maas.received()[-1]
    assert final["result"] == "FAIL"
    assert "internal error: RuntimeError('bug in a handler')" in final["description"]
    assert "last log lines:" in final["description"]
    assert maas.rolled_back == []


# ---- TLS: the same policy as the downloads ------------------------------------------------------------------


@pytest.mark.parametrize("trusted", [True, False])
def test_https_reports_use_the_ca_file_of_the_downloads(
    trusted: bool,
    tls_cert: tuple[Path, ssl.SSLContext],  # noqa: F811
) -> None:
    """Over https the reporter trusts server.ca_file (as downloads do): with it events arrive, without it none."""
    with MaasServer(tls=tls_cert[1]) as server:
        rep = reporter_for(server, ca_file=tls_cert[0] if trusted else None)
        with capture_logs() as logs:
            rep.step_started("preflight", "check")
            rep.close()
        if trusted:
            assert server.names() == [("start", PARENT, None), ("start", f"{PARENT}/preflight", None)]
        else:
            assert server.received() == []
            reasons = [e["reason"] for e in logs if e["event"] == "report.dropped"]
            assert reasons
            assert "CERTIFICATE_VERIFY_FAILED" in reasons[0]


def test_start_passes_server_ca_file_to_the_reporter(
    tmp_path: Path,
    tls_cert: tuple[Path, ssl.SSLContext],  # noqa: F811
) -> None:
    """reporting.start() builds its transport from the settings' server.ca_file: one TLS policy for the run."""
    with MaasServer(tls=tls_cert[1]) as server:
        settings = config.load(environ={**server.environ(), "HARMONIC_SERVER_CA_FILE": str(tls_cert[0])}, cmdline="")
        rep = reporting.start(settings)
        assert rep is not None
        rep.step_started("preflight", "check")
        rep.close()
        assert [n for _, n, _ in server.names()] == [PARENT, f"{PARENT}/preflight"]


def test_warning_is_a_start_event_under_the_open_step(maas: MaasServer) -> None:
    """A run warning (e.g. no UEFI: a network boot will re-image) is a start event MAAS keeps, nested in its step."""
    rep = reporter_for(maas)
    rep.step_started("record", "look for the install record")
    rep.warning("no UEFI firmware: a later network boot will image this disk again")
    rep.step_finished("record", "ok", "no record")
    rep.run_finished(report("already-installed", note="already installed: release X on /dev/sda; booting the disk"))
    rep.close()
    maas.assert_well_formed()
    events = maas.received()
    warning = [e for e in events if e["name"] == f"{PARENT}/record/warning" and e["event_type"] == "start"]
    assert len(warning) == 1
    assert warning[0]["description"].startswith("WARNING: no UEFI firmware")
    assert (events[-1]["result"], events[-1]["description"]) == (
        "SUCCESS",
        "already installed: release X on /dev/sda; booting the disk",
    )
