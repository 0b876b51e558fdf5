"""Start-up: `python3.10 -I -S dist/harmonic-install.pyz --help` against `python3.10 -c pass`, interleaved.

Started as it ships (the unit, the wrapper and the user-data all run `python3 -I -S <pyz>`), and printed with
the archive's size beside the previous release's figures (PREVIOUS).

HARMONIC_TEST_BENCH_PYZ=/path/to/harmonic-install.pyz measures a zipapp built elsewhere (e.g. from branch pack).
When the zipapp cannot be built (no packaging/build_pyz.py on this branch yet), the installer's start-up is
measured as `python3.10 -m harmonic_installer --help` from the venv instead, and the result says so.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.bench.bench_lib import REPO, log, median, python310, run_measured

PYZ = REPO / "dist" / "harmonic-install.pyz"
# The previous release: main before rich, pygments, markdown-it and anyio were left out of the archive. Its pyz
# is rebuilt from git (same lock, same wheels) and measured in the same run, interleaved with this one.
PREVIOUS_RELEASE = "dec3777"
TARGET_PYZ_BYTES = 2_000_000
TARGET_MEDIAN_S = 0.15


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
    pyz_bytes: int | None = None
    previous: dict[str, str | int | float] | None = None  # release, pyz_bytes, median_s of PREVIOUS_RELEASE, same run


def build_pyz() -> Path | None:
    """dist/harmonic-install.pyz rebuilt by `make pyz` (never a stale one) when this tree can; None otherwise."""
    external = os.environ.get("HARMONIC_TEST_BENCH_PYZ")
    if external and Path(external).is_file():
        return Path(external)
    if (REPO / "packaging" / "build_pyz.py").exists():
        log("building dist/harmonic-install.pyz (make pyz)")
        subprocess.run(["make", "-C", str(REPO), "pyz"], check=False, capture_output=True)
    return PYZ if PYZ.exists() else None


def build_previous_pyz(workdir: Path) -> Path | None:
    """The pyz of PREVIOUS_RELEASE, built from `git archive` with its own build script; None if that fails."""
    src = workdir / "previous"
    src.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE], capture_output=True, check=False, timeout=120
    )
    if archive.returncode != 0:
        log(f"previous release {PREVIOUS_RELEASE}: git archive failed, not measured")
        return None
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True, timeout=120)
    out = workdir / "previous.pyz"
    build = [python310(), str(src / "packaging/build_pyz.py"), "--offline", "--output", str(out)]
    build += ["--wheel-dir", str(REPO / ".cache" / "wheels")]
    done = subprocess.run(build, capture_output=True, check=False, timeout=600)
    return out if done.returncode == 0 and out.exists() else None


def measure(runs: int = 20) -> Startup:
    """Median wall time of `runs` interleaved starts of the installer's --help and of a bare interpreter."""
    py = python310()
    pyz = build_pyz()
    if pyz is not None:
        shown = "dist/harmonic-install.pyz" if pyz == PYZ else str(pyz)
        subject, argv = f"python3.10 -I -S {shown} --help", [py, "-I", "-S", str(pyz), "--help"]
    else:
        venv_py = str(REPO / ".venv" / "bin" / "python")
        subject, argv = (
            "python3.10 -m harmonic_installer --help (venv; no pyz on this branch)",
            [venv_py, "-m", "harmonic_installer", "--help"],
        )
    base = [py, "-c", "pass"]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        prev_pyz = build_previous_pyz(Path(tmp))
        # The previous release was started with -I only (that is what it shipped).
        prev_argv = [py, "-I", str(prev_pyz), "--help"] if prev_pyz is not None else None
        return _measure(subject, argv, base, prev_pyz, prev_argv, pyz, runs)


def _measure(
    subject: str,
    argv: list[str],
    base: list[str],
    prev_pyz: Path | None,
    prev_argv: list[str] | None,
    pyz: Path | None,
    runs: int,
) -> Startup:
    for _ in range(2):  # warm the page cache and the pyc files
        run_measured(argv, cwd=Path("/"))
        run_measured(base, cwd=Path("/"))
        if prev_argv:
            run_measured(prev_argv, cwd=Path("/"))
    mine, theirs, before, rss, ok = [], [], [], 0, True
    cpu_mine, cpu_theirs = [], []
    for _ in range(runs):
        m = run_measured(argv, cwd=Path("/"))
        b = run_measured(base, cwd=Path("/"))
        if prev_argv:
            before.append(run_measured(prev_argv, cwd=Path("/")).wall_s)
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
        pyz.stat().st_size if pyz is not None else None,
        {"release": PREVIOUS_RELEASE, "pyz_bytes": prev_pyz.stat().st_size, "median_s": median(before)}
        if prev_pyz is not None and before
        else None,
    )
    prev = result.previous or {}
    log(
        f"start-up {subject}: median {result.median_s * 1000:.0f} ms (target < {TARGET_MEDIAN_S * 1000:.0f} ms; "
        f"previous release {float(prev.get('median_s', 0)) * 1000:.0f} ms), bare interpreter "
        f"{result.baseline_median_s * 1000:.0f} ms, ratio {result.ratio:.1f}x"
    )
    if result.pyz_bytes is not None:
        log(
            f"pyz size {result.pyz_bytes:,} bytes (target < {TARGET_PYZ_BYTES:,}; previous release "
            f"{prev.get('pyz_bytes', '?'):,})"
        )
    return result


if __name__ == "__main__":
    print(measure(runs=int(os.environ.get("RUNS", "10"))))
