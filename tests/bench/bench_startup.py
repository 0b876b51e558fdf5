"""Start-up: `python3.10 dist/harmonic-install.pyz --help` against `python3.10 -c pass`, interleaved.

HARMONIC_TEST_BENCH_PYZ=/path/to/harmonic-install.pyz measures a zipapp built elsewhere (e.g. from branch pack).
When the zipapp cannot be built (no packaging/build_pyz.py on this branch yet), the installer's start-up is
measured as `python3.10 -m harmonic_installer --help` from the venv instead, and the result says so.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.bench.bench_lib import REPO, log, median, python310, run_measured

PYZ = REPO / "dist" / "harmonic-install.pyz"


@dataclass(frozen=True, slots=True)
class Startup:
    subject: str
    argv: list[str]
    runs: int
    median_s: float
    min_s: float
    max_s: float
    baseline_median_s: float
    ratio: float
    cpu_median_s: float
    baseline_cpu_median_s: float
    maxrss_kib: int
    ok: bool


def build_pyz() -> Path | None:
    """dist/harmonic-install.pyz via `make pyz` when this tree can build it; None otherwise."""
    external = os.environ.get("HARMONIC_TEST_BENCH_PYZ")
    if external and Path(external).is_file():
        return Path(external)
    if PYZ.exists():
        return PYZ
    if (REPO / "packaging" / "build_pyz.py").exists():
        log("building dist/harmonic-install.pyz (make pyz)")
        subprocess.run(["make", "-C", str(REPO), "pyz"], check=False, capture_output=True)
    return PYZ if PYZ.exists() else None


def measure(runs: int = 20) -> Startup:
    """Median wall time of `runs` interleaved starts of the installer's --help and of a bare interpreter."""
    py = python310()
    pyz = build_pyz()
    if pyz is not None:
        shown = "dist/harmonic-install.pyz" if pyz == PYZ else str(pyz)
        subject, argv = f"python3.10 {shown} --help", [py, str(pyz), "--help"]
    else:
        venv_py = str(REPO / ".venv" / "bin" / "python")
        subject, argv = (
            "python3.10 -m harmonic_installer --help (venv; no pyz on this branch)",
            [venv_py, "-m", "harmonic_installer", "--help"],
        )
    base = [py, "-c", "pass"]
    for _ in range(2):  # warm the page cache and the pyc files
        run_measured(argv, cwd=Path("/"))
        run_measured(base, cwd=Path("/"))
    mine, theirs, rss, ok = [], [], 0, True
    cpu_mine, cpu_theirs = [], []
    for _ in range(runs):
        m = run_measured(argv, cwd=Path("/"))
        b = run_measured(base, cwd=Path("/"))
        ok = ok and m.returncode == 0 and "Usage" in m.stdout + m.stderr
        mine.append(m.wall_s)
        theirs.append(b.wall_s)
        cpu_mine.append(m.user_s + m.sys_s)
        cpu_theirs.append(b.user_s + b.sys_s)
        rss = max(rss, m.maxrss_kib)
    result = Startup(
        subject,
        argv,
        runs,
        median(mine),
        min(mine),
        max(mine),
        median(theirs),
        median(mine) / median(theirs),
        median(cpu_mine),
        median(cpu_theirs),
        rss,
        ok,
    )
    log(
        f"start-up {subject}: median {result.median_s * 1000:.0f} ms, bare interpreter "
        f"{result.baseline_median_s * 1000:.0f} ms, ratio {result.ratio:.1f}x"
    )
    return result


if __name__ == "__main__":
    print(measure(runs=int(os.environ.get("RUNS", "10"))))
