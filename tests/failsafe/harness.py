"""Run the real entry point as a child process, with tripwires instead of the tools that change the host.

The host-level failsafe tests run `python -m harmonic_installer` from this checkout on the host. They must
never install a package or reboot the host, so PATH starts with a directory whose `dpkg`, `dpkg-query`,
`dpkg-deb`, `ostree-production` and reboot command only note that they were called and fail (exit 99).
Tests that need the real tools run in the isolated root (tests/support/sandbox.py) instead.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harmonic_installer.log import LogLine, parse_line
from tests.support.loopdev import LoopDevice, MiB, loop_device, read_device

REPO = Path(__file__).resolve().parents[2]


def _log_line(line: str) -> LogLine | None:
    try:
        return parse_line(line)
    except ValueError:
        return None


TRIPWIRES = ("dpkg", "dpkg-query", "dpkg-deb", "ostree-production", "tripwire-reboot")


@dataclass(frozen=True, slots=True)
class Run:
    """How one run of the installer ended."""

    returncode: int
    stdout: str
    stderr: str

    def operator_lines(self) -> list[str]:
        """The stderr lines meant for the operator alone: everything that is not a log line (log.parse_line)."""
        return [line for line in self.stderr.splitlines() if line.strip() and _log_line(line) is None]

    def log_events(self) -> list[dict[str, object]]:
        """The log lines on stderr, each read back (log.parse_line) as a dict shaped like a JSON log record."""
        return [parsed.as_event() for parsed in map(_log_line, self.stderr.splitlines()) if parsed is not None]

    def explain(self) -> str:
        """Everything, for an assertion message."""
        return f"rc={self.returncode}\n--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-5000:]}"


class Host:
    """A scratch area for one test: tripwire tools, directories under tmp_path, and the env to run in."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.bin = tmp_path / "tripwire-bin"
        self.trips = tmp_path / "tripwire.log"
        self.work = tmp_path / "work"
        self.data = tmp_path / "data"
        self.state = tmp_path / "state"
        self.bin.mkdir()
        for name in TRIPWIRES:
            tool = self.bin / name
            tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {self.trips}\nexit 99\n')
            tool.chmod(0o755)

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A clean environment: tripwires first on PATH, no kernel command line, no HARMONIC_* but `extra`."""
        return {
            "PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "HARMONIC_CMDLINE_FILE": "/dev/null",
            "HARMONIC_REBOOT_COMMAND": str(self.bin / "tripwire-reboot"),
            **(extra or {}),
        }

    def dirs(self) -> list[str]:
        """Flags that keep every directory the installer uses under tmp_path."""
        return ["--working-dir", str(self.work), "--iso-dir", str(self.data), "--state-dir", str(self.state)]

    def tripped(self) -> str:
        """What the tripwires saw ('' when nothing reached dpkg, the vendor tool or the reboot)."""
        return self.trips.read_text() if self.trips.exists() else ""

    def created(self) -> list[str]:
        """Files the installer left under its directories (the run lock under the state dir excepted)."""
        found = []
        for top in (self.work, self.data, self.state):
            if top.exists():
                found += [str(p.relative_to(self.root)) for p in top.rglob("*") if p.is_file()]
        return sorted(f for f in found if f != "state/lock")

    def popen(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        """Start the installer (python -m harmonic_installer from this checkout) without waiting."""
        return subprocess.Popen(
            [sys.executable, "-m", "harmonic_installer", *args],
            cwd=REPO,
            env=self.env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120) -> Run:
        """Run the installer to completion."""
        proc = self.popen(args, env)
        out, err = proc.communicate(timeout=timeout)
        return Run(proc.returncode, out, err)


def fill_pattern(device: str, size: int) -> None:
    """Fill a device with a recognisable non-zero pattern (so a wipe or a stray write shows)."""
    block = (b"FAILSAFE-PATTERN-" * 4096)[:MiB]
    fd = os.open(device, os.O_WRONLY)
    try:
        for offset in range(0, size, MiB):
            os.pwrite(fd, block[: min(MiB, size - offset)], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def patterned_disk(directory: Path, size: int) -> Iterator[LoopDevice]:
    """A loop device whose bytes are a known pattern, not zeros."""
    with loop_device(directory, size=size) as loop:
        fill_pattern(loop.path, size)
        yield loop


def digest(device: str, size: int) -> str:
    """The SHA-256 of a device's first `size` bytes, read past the page cache."""
    return hashlib.sha256(read_device(device, size)).hexdigest()


def no_traceback(run: Run) -> bool:
    """No Python traceback anywhere in the output."""
    return "Traceback" not in run.stderr and "Traceback" not in run.stdout


def one_line(run: Run) -> str | None:
    """The single operator line on stderr, or None when there is not exactly one."""
    lines = run.operator_lines()
    return lines[0] if len(lines) == 1 else None


__all__ = ["Host", "Run", "digest", "no_traceback", "one_line", "os", "patterned_disk"]
