"""runner: argv in, CommandResult out; failures, timeouts, answers and interrupts handled."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from harmonic_installer.errors import CommandError
from harmonic_installer.runner import SubprocessRunner


def test_success_returns_output_and_logs_argv() -> None:
    """A successful command returns its combined output; start and finish are logged with argv and rc."""
    with capture_logs() as logs:
        result = SubprocessRunner().run(["sh", "-c", "echo out; echo err >&2"])
    assert result.returncode == 0
    assert "out" in result.output
    assert "err" in result.output
    events = [e for e in logs if e["event"] in {"command.started", "command.finished"}]
    assert [e["event"] for e in events] == ["command.started", "command.finished"]
    assert events[1]["argv"] == ["sh", "-c", "echo out; echo err >&2"]
    assert events[1]["rc"] == 0


def test_failure_raises_with_rc_and_tail() -> None:
    """A non-zero exit raises CommandError carrying argv, rc and the output tail."""
    with pytest.raises(CommandError) as info:
        SubprocessRunner().run(["sh", "-c", "echo boom; exit 3"])
    assert info.value.returncode == 3
    assert "boom" in info.value.output_tail
    assert "exit status 3" in str(info.value)


def test_check_false_returns_the_failure() -> None:
    """With check=False a failing command is a result, not an exception."""
    assert SubprocessRunner().run(["false"], check=False).returncode == 1


def test_check_false_nonzero_status_is_logged_as_an_answer_not_an_error() -> None:
    """With check=False a non-zero status is logged as command.finished at info level with its rc, no error."""
    with capture_logs() as logs:
        SubprocessRunner().run(["sh", "-c", "echo nope; exit 1"], check=False)
    assert [e["log_level"] for e in logs if e["log_level"] in {"error", "warning", "critical"}] == []
    finished = [e for e in logs if e["event"] == "command.finished"]
    assert [(e["log_level"], e["rc"]) for e in finished] == [("info", 1)]


def test_check_true_nonzero_status_is_an_error_event() -> None:
    """With check (the default) a non-zero status is logged as command.failed at error level with the tail."""
    with capture_logs() as logs, pytest.raises(CommandError):
        SubprocessRunner().run(["sh", "-c", "echo boom; exit 2"])
    failed = [e for e in logs if e["event"] == "command.failed"]
    assert [(e["log_level"], e["rc"]) for e in failed] == [("error", 2)]
    assert "boom" in failed[0]["output_tail"]


def test_missing_program_is_a_command_error() -> None:
    """A program that does not exist gives a one-line CommandError, not an OSError."""
    with pytest.raises(CommandError, match="cannot run /nonexistent/tool"):
        SubprocessRunner().run(["/nonexistent/tool"])


def _alive(pid: int) -> bool:
    """True when pid exists and is not a zombie waiting for a reaper."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """A child past its timeout is killed together with its own children."""
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandError, match=r"did not finish within 0\.5 s"):
        SubprocessRunner().run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - started < 10
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    assert not _alive(grandchild)


def test_answer_is_fed_to_prompts() -> None:
    """answer='y' answers every read on stdin, like the original `yes |`."""
    script = 'read a; read b; echo "got $a $b"'
    result = SubprocessRunner().run(["sh", "-c", script], answer="y")
    assert "got y y" in result.output


def test_no_answer_means_eof_on_stdin() -> None:
    """Without an answer the child reads EOF (a prompt is never left waiting)."""
    result = SubprocessRunner().run(["sh", "-c", "read a || echo eof"], timeout=10)
    assert "eof" in result.output


def test_env_is_exactly_what_was_given() -> None:
    """The child's environment is the mapping passed, not ours plus it."""
    result = SubprocessRunner().run(["/usr/bin/env"], env={"ONLY": "this"})
    assert result.output.strip() == "ONLY=this"


def test_output_lines_carry_the_step_of_the_caller() -> None:
    """A command's output lines are logged from a reader thread, still under the step that ran the command."""
    with (
        capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
        structlog.contextvars.bound_contextvars(step="write"),
    ):
        SubprocessRunner().run(["sh", "-c", "echo one"], log_output=True)
    lines = [e for e in logs if e["event"] == "command.output" and "line" in e]
    assert [(e["line"], e.get("step")) for e in lines] == [("one", "write")]


def test_log_output_streams_lines() -> None:
    """log_output logs each output line as command.output."""
    with capture_logs() as logs:
        SubprocessRunner().run(["sh", "-c", "echo one; echo two"], log_output=True)
    lines = [e["line"] for e in logs if e["event"] == "command.output" and "line" in e]
    assert lines == ["one", "two"]


def test_interrupt_stops_the_child(tmp_path: Path) -> None:
    """An exception raised while waiting (a signal handler's) stops the child before propagating."""
    pidfile = tmp_path / "pid"

    class Stop(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Stop

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
        with pytest.raises(Stop):
            SubprocessRunner().run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"])
    finally:
        signal.signal(signal.SIGUSR1, previous)
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not _alive(child)


def test_no_python_code_runs_in_the_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """Popen gets no preexec_fn (unsafe while the reporter thread runs); a new session and setpriv do its work."""
    import subprocess

    seen: list[dict[str, object]] = []
    real = subprocess.Popen

    def spy(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        seen.append({"argv": args[0], **kwargs})
        return real(*args, **kwargs)  # type: ignore[call-overload,no-any-return]  # a spy: arguments passed through

    monkeypatch.setattr(subprocess, "Popen", spy)
    result = SubprocessRunner().run(["sh", "-c", "echo $$; ps -o sid= -p $$"])
    assert result.returncode == 0
    (call,) = seen
    assert call.get("preexec_fn") is None
    assert call["start_new_session"] is True
    pid, sid = result.output.split()
    assert pid == sid  # the child leads its own session (and process group)


_ORPHAN_PROBE = """
import sys
from harmonic_installer.runner import SubprocessRunner
SubprocessRunner().run(["sh", "-c", "echo $$ > " + sys.argv[1] + "; exec sleep 60"])
"""


def test_child_gets_sigterm_when_the_runner_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the process running a command still stops the command (the death signal, set without preexec)."""
    import subprocess
    import sys

    pidfile = tmp_path / "pid"
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_PROBE, str(pidfile)])
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert parent.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert _alive(child)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_missing_program_on_the_childs_path_is_a_command_error() -> None:
    """A bare name not on the child's PATH fails to start with one line, like a missing absolute path."""
    with pytest.raises(CommandError, match="cannot run no-such-tool-here"):
        SubprocessRunner().run(["no-such-tool-here"], env={"PATH": "/usr/bin:/bin"})


def test_a_child_that_survives_sigkill_does_not_hang_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """After SIGKILL the wait is bounded: a child stuck in the kernel is logged, and the run goes on."""
    import subprocess

    from harmonic_installer import runner

    class Stuck:
        pid = 999_999_999

        def poll(self) -> None:
            return None

        def wait(self, timeout: float | None = None) -> int:
            if timeout is None:
                raise AssertionError("an unbounded wait after SIGKILL")
            raise subprocess.TimeoutExpired("stuck", timeout)

    killed: list[int] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr(runner, "_REAP_AFTER_KILL_S", 0.01)
    with capture_logs() as logs:
        runner._stop(Stuck(), grace=0.01)  # type: ignore[arg-type]  # Stuck has the pid, poll and wait _stop uses
    assert killed == [signal.SIGTERM, signal.SIGKILL]
    assert [e["event"] for e in logs] == ["command.unkillable"]
