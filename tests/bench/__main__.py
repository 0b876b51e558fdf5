"""`make bench` / `make bench-quick`: every measurement of issue 7 in one run, then the results page.

Usage: .venv/bin/python -m tests.bench [--quick] [--only throughput,resume,startup,fleet] [--keep-files]
Results: tests/bench/results/{results.json,README.md,*.png}. Needs root (tmpfs mount) and nginx.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict

from tests.bench import bench_report, bench_resume, bench_startup, bench_throughput
from tests.bench.bench_lib import REPO, RESULTS, WORK, GiB, MiB, log, machine

PARTS = ("throughput", "resume", "startup", "fleet")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller files, fewer runs, one smaller fleet")
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    ap.add_argument("--keep-files", action="store_true", help="keep the generated multi-GB files in tests/bench/work")
    a = ap.parse_args(argv)
    parts = [p for p in a.only.split(",") if p]
    started = time.monotonic()
    results: dict[str, object] = {"mode": "quick" if a.quick else "full", "machine": machine()}
    log(f"mode {results['mode']}: {', '.join(parts)}")
    try:
        if "throughput" in parts:
            if a.quick:
                sizes, rounds = [256 * MiB, GiB], {256 * MiB: 3, GiB: 3}
            else:
                sizes, rounds = [256 * MiB, GiB, 4 * GiB], {256 * MiB: 3, GiB: 5, 4 * GiB: 3}
            runs = bench_throughput.measure(sizes, rounds)
            results["throughput_runs"] = [asdict(r) for r in runs]
            results["throughput"] = bench_throughput.summarize(runs)
        if "resume" in parts:
            size = 256 * MiB if a.quick else GiB
            results["resume"] = [asdict(r) for r in bench_resume.measure(size, cuts=10, runs=1 if a.quick else 3)]
        if "startup" in parts:
            results["startup"] = asdict(bench_startup.measure(runs=10 if a.quick else 30))
        if "fleet" in parts:
            fleet = []
            scenarios = (
                [(50, {"transfer": 12.0, "out_at": 5.0, "t503": 5.0, "tref": 5.0})]
                if a.quick
                else [
                    (50, {"transfer": 25.0, "out_at": 8.0, "t503": 15.0, "tref": 15.0}),
                    (200, {"transfer": 25.0, "out_at": 8.0, "t503": 15.0, "tref": 15.0}),
                ]
            )
            for agents, p in scenarios:
                for jitter in ("on", "off"):
                    argv_f = [
                        str(REPO / ".venv/bin/python"),
                        "-m",
                        "tests.bench.bench_fleet",
                        "--agents",
                        str(agents),
                        "--jitter",
                        jitter,
                        "--transfer-s",
                        str(p["transfer"]),
                        "--out-at",
                        str(p["out_at"]),
                        "--t503",
                        str(p["t503"]),
                        "--trefused",
                        str(p["tref"]),
                    ]
                    log(f"fleet: {agents} agents, jitter {jitter}")
                    out = subprocess.run(argv_f, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
                    if out.returncode != 0 or not out.stdout.strip():
                        log(f"fleet run failed: {out.stderr[-1500:]}")
                        continue
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    log(
                        f"fleet {agents} jitter {jitter}: {r['verified']}/{agents} verified, retries/agent "
                        f"{r['retries_per_agent']}, peak rps in recovery {r['peak_rps_recovery']} "
                        f"(100 ms: {r['peak_100ms_recovery']}), bytes {r['bytes_ratio']:.4f}x ideal"
                    )
                    fleet.append(r)
            results["fleet"] = fleet
    finally:
        if not a.keep_files:
            for www in WORK.glob("www-*"):
                shutil.rmtree(www, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "results-quick.json" if a.quick else "results.json"
    (RESULTS / name).write_text(json.dumps(results, indent=1) + "\n")
    page = bench_report.write(results, quick=a.quick)
    log(f"done in {results['duration_s']:.0f} s: {RESULTS / name}, {page}")
    print(bench_report.summary_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
