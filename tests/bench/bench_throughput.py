"""ISO download (+ SHA-256 verification) into the ISO dir: harmonic-install vs wget -O vs curl -o (+ sha256sum).

Every tool fetches `apollo/latest` from one nginx on loopback into the same ISO dir (a tmpfs, as in the MAAS
ephemeral environment), in interleaved rounds (the order rotates), so the ratios come from the same
conditions. Each process is waited for with wait4(): wall time, CPU and peak RSS are its own.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.bench.bench_lib import (
    ISO_NAME,
    REPO,
    WORK,
    GiB,
    Measured,
    MiB,
    empty_dir,
    log,
    make_file,
    median,
    python310,
    run_measured,
    tmpfs,
    warm,
    write_sums,
)
from tests.bench.bench_startup import build_pyz
from tests.support.nginx import serve

VENV_PY = str(REPO / ".venv" / "bin" / "python")
FETCH_SCRIPT = Path(__file__).with_name("bench_fetch.py")
TOOLS = ("harmonic-install", "curl -o", "curl -o + sha256sum", "wget -O")
# Experiments (a tool list on the command line): the download path with httpcore reading N KiB at a time.
EXPERIMENTS = (
    "harmonic-install (venv)",  # the same code run from the checkout's venv (python -m tests.bench.bench_fetch)
    "harmonic-install 64 KiB reads",
    "harmonic-install 256 KiB reads",
    "harmonic-install 1024 KiB reads",
)


@dataclass(frozen=True, slots=True)
class Run:
    tool: str
    size: int
    round: int
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    verified: bool


def commands(tool: str, base: str, iso_dir: Path) -> list[str]:
    """The argv that downloads the ISO into iso_dir with `tool`."""
    url = f"{base}/apollo/latest"
    dest = str(iso_dir / ISO_NAME)
    if tool == "harmonic-install":  # the shipped zipapp, isolated, in a fresh process (start-up included)
        return [python310(), "-I", "-S", str(FETCH_SCRIPT), "--pyz", str(_pyz()), base, str(iso_dir)]
    if tool == "harmonic-install (venv)":
        return [VENV_PY, "-m", "tests.bench.bench_fetch", base, str(iso_dir)]
    if tool.startswith("harmonic-install ") and tool.endswith(" KiB reads"):
        env = f"HARMONIC_BENCH_HTTPCORE_READ={int(tool.split()[1]) * 1024}"
        return ["env", env, VENV_PY, "-m", "tests.bench.bench_fetch", base, str(iso_dir)]
    if tool == "curl -o":
        return ["curl", "-fsS", "-o", dest, url]
    if tool == "curl -o + sha256sum":
        script = (
            'curl -fsS -o "$1/$2" "$3" && curl -fsS "$4" | (cd "$1" && sha256sum --check --strict --quiet '
            "--ignore-missing -)"
        )
        return ["bash", "-c", script, "bench", str(iso_dir), ISO_NAME, url, f"{base}/apollo/SHA256SUMS"]
    if tool == "wget -O":
        return ["wget", "-q", "-O", dest, url]
    raise ValueError(tool)


_built: list[Path] = []


def _pyz() -> Path:
    """dist/harmonic-install.pyz, rebuilt once per benchmark run (never a stale one)."""
    if not _built:
        pyz = build_pyz()
        if pyz is None:
            raise SystemExit("bench: cannot build dist/harmonic-install.pyz (make pyz)")
        _built.append(pyz)
    return _built[0]


def web_root(size: int) -> tuple[Path, str]:
    """WORK/www-<size> laid out like the real server (apollo/latest -> the ISO, SHA256SUMS); its digest."""
    root = WORK / f"www-{size}"
    apollo = root / "apollo"
    iso = apollo / ISO_NAME
    stamp = apollo / ".sha256"
    if iso.exists() and stamp.exists() and iso.stat().st_size == size:
        digest = stamp.read_text().strip()
    else:
        log(f"writing a {size / MiB:.0f} MiB ISO stand-in")
        digest = make_file(iso, size)
        stamp.write_text(digest)
    write_sums(apollo, {ISO_NAME: digest})
    latest = apollo / "latest"
    if not latest.is_symlink():
        latest.symlink_to(ISO_NAME)
    return root, digest


def measure(sizes: list[int], rounds: dict[int, int], tools: tuple[str, ...] = TOOLS) -> list[Run]:
    """Every tool, `rounds[size]` times per size, interleaved; returns every run."""
    runs: list[Run] = []
    for size in sizes:
        root, digest = web_root(size)
        warm(root / "apollo" / ISO_NAME)
        iso_mount = WORK / "isodir"
        with tmpfs(iso_mount, size + 512 * MiB) as iso_dir, serve(root) as web:
            for r in range(rounds[size]):
                order = tools[r % len(tools) :] + tools[: r % len(tools)]
                for tool in order:
                    empty_dir(iso_dir)
                    m = run_measured(commands(tool, web.url, iso_dir), cwd=REPO)
                    ok = m.returncode == 0 and _verified(tool, m, iso_dir, digest, size)
                    runs.append(Run(tool, size, r, m.wall_s, m.user_s + m.sys_s, m.maxrss_kib, ok))
                    log(
                        f"{size / GiB:.2f} GiB round {r + 1}/{rounds[size]} {tool:20s} {m.wall_s:6.2f} s "
                        f"{size / MiB / m.wall_s:7.0f} MiB/s  RSS {m.maxrss_kib / 1024:5.1f} MiB  "
                        f"{'ok' if ok else 'FAILED rc=' + str(m.returncode) + ' ' + m.stderr[-300:]}"
                    )
            empty_dir(iso_dir)
    return runs


def _verified(tool: str, m: Measured, iso_dir: Path, digest: str, size: int) -> bool:
    """Did the tool leave the complete file (and, for the verifying tools, say it matched)?"""
    path = iso_dir / ISO_NAME
    if not path.exists() or path.stat().st_size != size:
        return False
    if tool.startswith("harmonic-install"):
        import json

        art = json.loads(m.stdout.strip().splitlines()[-1])
        return bool(art["sha256"] == digest and art["checksum_source"] == "SHA256SUMS")
    return True  # curl + sha256sum: returncode 0 means sha256sum --check passed; the others do not verify


def summarize(runs: list[Run]) -> list[dict[str, object]]:
    """Per size and tool: median wall, MiB/s, ratios to curl -o and wget -O (medians of per-round ratios)."""
    rows: list[dict[str, object]] = []
    for size in sorted({r.size for r in runs}):
        at = [r for r in runs if r.size == size]
        by_round: dict[int, dict[str, Run]] = {}
        for r in at:
            by_round.setdefault(r.round, {})[r.tool] = r
        for tool in TOOLS + EXPERIMENTS:
            mine = [r for r in at if r.tool == tool]
            if not mine:
                continue

            def ratio(ref: str, tool: str = tool, by_round: dict[int, dict[str, Run]] = by_round) -> float:
                vals = [rd[tool].wall_s / rd[ref].wall_s for rd in by_round.values() if tool in rd and ref in rd]
                return median(vals)

            rows.append(
                {
                    "size": size,
                    "tool": tool,
                    "runs": len(mine),
                    "all_ok": all(r.verified for r in mine),
                    "wall_s": median([r.wall_s for r in mine]),
                    "wall_min_s": min(r.wall_s for r in mine),
                    "wall_max_s": max(r.wall_s for r in mine),
                    "mib_s": size / MiB / median([r.wall_s for r in mine]),
                    "cpu_s": median([r.cpu_s for r in mine]),
                    "maxrss_mib": max(r.maxrss_kib for r in mine) / 1024,
                    "vs_curl": ratio("curl -o"),
                    "vs_wget": ratio("wget -O"),
                }
            )
    return rows


if __name__ == "__main__":
    # python -m tests.bench.bench_throughput [MiB [rounds [tool,tool,...]]]
    size = int(float(sys.argv[1]) * MiB) if len(sys.argv) > 1 else GiB
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    chosen = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else TOOLS
    print(f"machine: {os.cpu_count()} cores; {n} interleaved rounds of {size / MiB:.0f} MiB; ratios are medians")
    for row in summarize(measure([size], {size: n}, chosen)):
        print(
            f"{row['tool']:30s} median {row['wall_s']:6.2f} s  {row['mib_s']:5.0f} MiB/s  CPU {row['cpu_s']:5.2f} s  "
            f"/curl {row['vs_curl']:.2f}  /wget {row['vs_wget']:.2f}  RSS {row['maxrss_mib']:.1f} MiB  "
            f"ok={row['all_ok']}"
        )
