"""Shared pieces of the benchmark: measured child processes, test files, a tmpfs, the machine, statistics."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "tests" / "bench" / "work"
RESULTS = REPO / "tests" / "bench" / "results"
MiB = 1024 * 1024
GiB = 1024 * MiB
RELEASE = "release-3.21.3.0-7+auto15"
ISO_NAME = f"APOLLO_PLATFORM-{RELEASE}.iso"


def python310() -> str:
    """The real Python 3.10 binary (not a pyenv shim, whose own start-up would be measured)."""
    out = subprocess.run([str(REPO / "scripts" / "find-python310.sh")], capture_output=True, text=True, check=True)
    return os.path.realpath(out.stdout.strip())


def log(msg: str) -> None:
    """A progress line on stderr, time-stamped."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Measured:
    """One child process run to completion: wall time, CPU, peak RSS (of it and its waited-for children)."""

    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


def run_measured(
    argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 900.0
) -> Measured:
    """Run argv under /usr/bin/time: wall time from here, CPU and peak RSS of the command (and its children).

    GNU time (a 2 MiB process) forks the command: a child forked straight from this Python process would
    report this process's RSS as its own peak (Linux keeps the pre-exec high-water mark).
    """
    WORK.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    out_path, err_path, time_path = (WORK / f".{kind}-{tag}" for kind in ("out", "err", "time"))
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-o", str(time_path), "-f", "%M %U %S", *argv],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        wall = time.perf_counter() - start
    stdout, stderr = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
    last = time_path.read_text().strip().splitlines()[-1].split()
    for p in (out_path, err_path, time_path):
        p.unlink()
    return Measured(wall, float(last[1]), float(last[2]), int(last[0]), proc.returncode, stdout, stderr)


def make_file(path: Path, size: int, seed: int = 7) -> str:
    """Write `size` incompressible bytes (a repeated 16 MiB random block) and return their SHA-256."""
    import random

    block = random.Random(seed).randbytes(16 * MiB)
    h = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


def write_sums(directory: Path, entries: dict[str, str]) -> None:
    """A SHA256SUMS file in sha256sum's format."""
    (directory / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in sorted(entries.items())))


def warm(path: Path) -> None:
    """Read a file once so nginx serves it from the page cache, as a web server does its hot files."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


@contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs mounted at `path` (the ISO dir in the MAAS ephemeral environment is RAM-backed)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "bench-isodir", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def empty_dir(path: Path) -> None:
    """Remove everything inside `path` (also dot files: .part sidecars)."""
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """min-max as text."""
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = "?"
    flags: set[str] = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    os_name = "?"
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')

    def version(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "?"

    fs = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", str(WORK)], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "sha_ni": "sha_ni" in flags,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "python": version([python310(), "--version"]),
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False).stderr.strip(),
        "curl": " ".join(version(["curl", "--version"]).split()[:2]),
        "wget": " ".join(version(["wget", "--version"]).split()[:3]),
        "sha256sum": version(["sha256sum", "--version"]),
        "work_fs": fs,
        "load_at_start": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save_json(name: str, data: object) -> Path:
    """Write a result file under tests/bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(
        json.dumps(data, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)) + "\n"
    )
    return path


def self_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
