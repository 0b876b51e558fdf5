"""A real run against a real systemd-journald: each event once in the journal with its fields, lines on the console.

journald runs in a private mount namespace (tmpfs over /run/systemd, /run/log and /var/log/journal, so the
host's journal, if any, is never touched), systemd-cat connects the installer's stdout (and in the second case
its stderr too) to journald's stream socket as the unit's StandardOutput=journal+console does, and
$JOURNAL_STREAM names that stream as systemd would. The run is `-i` on a disk that does not exist: not a
target, exit 0, nothing done.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harmonic_installer.log import parse_line

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
JOURNALD = Path("/lib/systemd/systemd-journald")

needs_journald = pytest.mark.skipif(
    os.geteuid() != 0 or not JOURNALD.exists() or not all(shutil.which(t) for t in ("unshare", "systemd-cat")),
    reason="needs root, systemd-journald, unshare and systemd-cat",
)

SCRIPT = """set -eu
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mount -t tmpfs tmpfs /var/log/journal
{journald} >"$WORK/journald.out" 2>&1 &
JPID=$!
trap 'kill $JPID' EXIT
i=0
while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
systemd-cat -t harmonic-install sh -c "$RUN"
sleep 0.5
journalctl --no-pager -o json SYSLOG_IDENTIFIER=harmonic-install >"$WORK/journal.json"
"""
# Shell words: the interpreter's path may hold spaces (a checkout under a long home path).
INSTALLER = (
    f"{shlex.quote(sys.executable)} -m harmonic_installer -i --disk /dev/disk/by-id/no-such-disk"
    ' --state-dir "$WORK/state" --server-url http://127.0.0.1:9'
)


def _journal_run(tmp_path: Path, run: str) -> list[dict[str, str]]:
    if not Path("/run/systemd").is_dir() or not Path("/var/log/journal").is_dir():
        pytest.skip("no /run/systemd or /var/log/journal to mount over")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARMONIC_", "JOURNAL_"))}
    env.update(WORK=str(tmp_path), RUN=run, PYTHONPATH=str(REPO))
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT.format(journald=JOURNALD)]
    result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr + (tmp_path / "journald.out").read_text()
    lines = (tmp_path / "journal.json").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("_")} for line in lines]


@needs_journald
def test_under_the_unit_the_console_gets_lines_and_the_journal_each_event_once_with_its_fields(
    tmp_path: Path,
) -> None:
    """As the unit runs it (stdout the journal stream, stderr the console): every event is one journal entry with
    EVENT, STEP, ... fields, the console shows it as a readable line, and the report reaches the journal."""
    console = tmp_path / "console.txt"
    stream = "export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/1)"
    run = f"exec 2>{shlex.quote(str(console))}; {stream}; exec {INSTALLER}"
    entries = _journal_run(tmp_path, run)
    events = [e for e in entries if "EVENT" in e]
    names = [e["EVENT"] for e in events]
    assert names[0] == "install.started"
    assert names.count("step.finished") == 1
    assert "install.not_a_target" in names
    finished = next(e for e in events if e["EVENT"] == "step.finished")
    assert finished["STEP"] == "preflight"
    assert finished["STATUS"] == "skipped"
    assert finished["PRIORITY"] == "6"
    assert finished["SYSLOG_IDENTIFIER"] == "harmonic-install"
    assert finished["MESSAGE"].startswith("preflight step.finished status=skipped duration_s=")
    report = [e["MESSAGE"] for e in entries if "EVENT" not in e]
    assert "Not a target host: nothing done" in report  # stdout: the stream, as before
    logged, said = [], []
    for line in console.read_text().splitlines():
        try:
            logged.append(parse_line(line).message)
        except ValueError:
            said.append(line)
    assert logged == names  # the same events, as lines, in the same order
    assert not any(m.startswith(("20", "{")) for m in report), report  # no log line in the journal a second time
    assert said == [
        "harmonic-install: disk /dev/disk/by-id/no-such-disk not found: this host is not a Harmonic cOS target; "
        "nothing done"
    ]


@needs_journald
def test_when_stderr_is_the_journal_stream_each_event_is_in_the_journal_once(tmp_path: Path) -> None:
    """StandardError=journal (a drop-in): the native entries replace the lines, so nothing is in the journal twice."""
    run = f"export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/2); exec {INSTALLER}"
    entries = _journal_run(tmp_path, run)
    events = [e["EVENT"] for e in entries if "EVENT" in e]
    assert "step.finished" in events
    stream = [e["MESSAGE"] for e in entries if "EVENT" not in e]
    assert not any("step.finished" in m for m in stream), stream
    assert "Not a target host: nothing done" in stream
