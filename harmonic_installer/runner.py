"""The only place that runs commands: argv in, CommandResult out, every run logged.

Children run in their own session (process group) with an environment built from a copy; their combined
output is read line by line (optionally streamed to the log), a timeout kills the whole group, and an interrupt
(SIGINT/SIGTERM turned into an exception by the CLI) stops the child before it propagates. No Python code runs
in the child between fork and exec (no `preexec_fn`: unsafe while other threads, such as the MAAS reporter,
are alive): the death signal is set by util-linux's `setpriv --pdeathsig TERM`, which then execs the command.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import os
import shutil
import signal
import subprocess  # noqa: TID251  # the one user of subprocess (DESIGN.md)
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

import structlog

from harmonic_installer.errors import CommandError

log = structlog.get_logger()

_TAIL_LINES = 40
_MAX_KEPT_BYTES = 4 * 1024 * 1024
_ANSWERS = 64  # like `yes`, but bounded: a tool asking more than this is not behaving as expected
_STOP_GRACE_S = 10.0
_REAP_AFTER_KILL_S = 10.0  # a child still there this long after SIGKILL is stuck in the kernel (D state)


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished command did."""

    argv: tuple[str, ...]
    returncode: int
    output: str
    duration_s: float

    @property
    def tail(self) -> str:
        """The last lines of the output, for error messages and logs."""
        return "\n".join(self.output.splitlines()[-_TAIL_LINES:])


class Runner(Protocol):
    """Runs a command; the injected edge for every module that needs one."""

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        answer: str | None = None,
        check: bool = True,
        log_output: bool = False,
    ) -> CommandResult:
        """Run argv to completion.

        Args:
            argv: the command and its arguments (never a shell string).
            env: the child's complete environment (default: a copy of ours).
            timeout: seconds before the child's process group is killed.
            answer: a line fed to every prompt on stdin (the original piped `yes`); None gives /dev/null.
            check: raise CommandError on a non-zero exit status (else it is returned, logged as an answer).
            log_output: log each output line as it arrives (`command.output`), for long-running tools.

        Raises:
            CommandError: not found, timed out, or non-zero exit with check.
        """
        ...


class SubprocessRunner:
    """The real Runner."""

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        answer: str | None = None,
        check: bool = True,
        log_output: bool = False,
    ) -> CommandResult:
        """Run argv to completion (see Runner.run)."""
        args = tuple(argv)
        child_env = dict(env) if env is not None else dict(os.environ)
        log.info("command.started", argv=list(args), timeout_s=timeout)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                _dies_with_us(args, child_env),
                stdin=subprocess.PIPE if answer is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,
            )
        except OSError as exc:
            log.error("command.not_started", argv=list(args), error=str(exc))
            raise CommandError(f"cannot run {args[0]}: {exc.strerror or exc}", argv=args, returncode=None) from exc

        collector = _OutputCollector(proc.stdout, args[0], log_output)  # type: ignore[arg-type]
        collector.start()
        if answer is not None and proc.stdin is not None:
            threading.Thread(target=_feed_answers, args=(proc.stdin, answer), daemon=True).start()
        try:
            rc = _wait(proc, timeout)
        except BaseException:
            _stop(proc)
            collector.join(timeout=5)
            log.warning("command.stopped", argv=list(args), duration_s=round(time.monotonic() - started, 3))
            raise
        collector.join(timeout=30)
        duration = round(time.monotonic() - started, 3)
        result = CommandResult(args, rc if rc is not None else -9, collector.text(), duration)
        if rc is None:
            log.error("command.timed_out", argv=list(args), timeout_s=timeout, output_tail=result.tail)
            raise CommandError(
                f"{_short(args)} did not finish within {timeout:g} s and was killed",
                argv=args,
                returncode=None,
                output_tail=result.tail,
            )
        if rc != 0 and check:
            log.error("command.failed", argv=list(args), rc=rc, duration_s=duration, output_tail=result.tail)
            raise CommandError(
                f"{_short(args)} failed with exit status {rc}",
                argv=args,
                returncode=rc,
                output_tail=result.tail,
            )
        # With check=False a non-zero status is an answer the caller reads (dpkg-query: "not installed"),
        # not a failure: the caller logs at error level if it is one.
        log.info("command.finished", argv=list(args), rc=rc, duration_s=duration)
        log.debug("command.output", argv=list(args), output=result.output[-8192:])
        return result


def _short(args: tuple[str, ...]) -> str:
    text = " ".join(args)
    return f"`{text if len(text) <= 120 else text[:117] + '...'}`"


def _dies_with_us(args: tuple[str, ...], env: Mapping[str, str]) -> tuple[str, ...]:
    """argv that gives the child SIGTERM when we die (even by SIGKILL), so no vendor tool or dpkg outlives the
    installer and meets a second one at the same disk: `setpriv --pdeathsig TERM -- argv` (util-linux, present on
    Ubuntu 22.04) sets the signal and execs the command. Unchanged where setpriv is missing (logged once).

    Raises:
        FileNotFoundError: the program is not found on the child's PATH (as Popen would say without setpriv).
    """
    setpriv = _setpriv()
    if setpriv is None:
        return args
    program = args[0]
    if "/" in program:
        if not os.access(program, os.X_OK) or os.path.isdir(program):
            raise FileNotFoundError(2, "No such file or directory (or not executable)", program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(2, "No such file or directory", program)
    return (setpriv, "--pdeathsig", "TERM", "--", *args)


@functools.cache
def _setpriv() -> str | None:
    found = shutil.which("setpriv", path=os.environ.get("PATH", os.defpath) + ":/usr/bin:/bin")
    if found is None:
        log.warning(
            "command.no_death_signal",
            reason="setpriv (util-linux) not found: a child may outlive a killed installer",
        )
    return found


def _wait(proc: subprocess.Popen[bytes], timeout: float | None) -> int | None:
    """Wait in short slices so signal handlers run; None when the timeout expired (child killed)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                _stop(proc, grace=2.0)
                return None


def _stop(proc: subprocess.Popen[bytes], grace: float = _STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, then SIGKILL it after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=_REAP_AFTER_KILL_S)
        except subprocess.TimeoutExpired:  # stuck in the kernel (a hung disk or NFS): do not hang with it
            log.error(
                "command.unkillable",
                pid=proc.pid,
                waited_s=_REAP_AFTER_KILL_S,
                hint="the process ignores SIGKILL (uninterruptible sleep, usually a hung device); check dmesg",
            )


def _feed_answers(stdin: IO[bytes], answer: str) -> None:
    line = (answer + "\n").encode()
    try:
        for _ in range(_ANSWERS):
            stdin.write(line)
            stdin.flush()
    except (OSError, ValueError):
        pass  # the child closed stdin or exited: it has all the answers it wanted
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


class _OutputCollector(threading.Thread):
    """Reads a child's output line by line, keeping up to a cap and optionally logging each line."""

    def __init__(self, stream: IO[bytes], program: str, log_lines: bool) -> None:
        super().__init__(daemon=True)
        # The caller's log context (the step being run), so each output line says which step it belongs to.
        self._context = contextvars.copy_context()
        self._stream = stream
        self._program = os.path.basename(program)
        self._log_lines = log_lines
        self._kept: collections.deque[bytes] = collections.deque()
        self._kept_bytes = 0

    def run(self) -> None:
        self._context.run(self._collect)

    def _collect(self) -> None:
        for raw in iter(self._stream.readline, b""):
            self._kept.append(raw)
            self._kept_bytes += len(raw)
            while self._kept_bytes > _MAX_KEPT_BYTES and len(self._kept) > 1:
                self._kept_bytes -= len(self._kept.popleft())
            if self._log_lines:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    log.info("command.output", program=self._program, line=line)
        self._stream.close()

    def text(self) -> str:
        return b"".join(self._kept).decode("utf-8", "replace")
