"""The results page (Markdown) and its charts (PNG, drawn by gnuplot) from a results dict."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.bench_lib import RESULTS, GiB, MiB

TOOLS = ("harmonic-install", "curl -o", "curl -o + sha256sum", "wget -O")


def _size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**holds**" if ok else "**missed**")


def targets(r: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, holds) for every target of issue 7 that this run measured."""
    out: list[tuple[str, str, bool | None]] = []
    tp = {(row["size"], row["tool"]): row for row in r.get("throughput", [])}
    for size in (GiB, 4 * GiB):
        h = tp.get((size, "harmonic-install"))
        if h is None:
            continue
        out.append((f"{_size(size)}: harmonic-install / curl -o <= 1.0", f"{h['vs_curl']:.2f}x", h["vs_curl"] <= 1.0))
        out.append((f"{_size(size)}: harmonic-install / wget -O <= 0.7", f"{h['vs_wget']:.2f}x", h["vs_wget"] <= 0.7))
    rss = {row["size"]: row["maxrss_mib"] for row in r.get("throughput", []) if row["tool"] == "harmonic-install"}
    for size in (GiB, 4 * GiB):
        if size in rss:
            out.append((f"{_size(size)}: peak RSS < 64 MiB", f"{rss[size]:.1f} MiB", rss[size] < 64))
    if GiB in rss and 4 * GiB in rss:
        growth = rss[4 * GiB] - rss[GiB]
        out.append(("peak RSS flat from 1 to 4 GiB (grows < 4 MiB)", f"{growth:+.1f} MiB", growth < 4))
    cut = [x for x in r.get("resume", []) if x["cuts"] > 0]
    if cut:
        worst = max(x["ratio"] for x in cut)
        ok = worst <= 1.01 and all(x["ok"] and x["cuts_applied"] == x["cuts"] for x in cut)
        out.append(
            (
                f"resume: wire bytes / size with {cut[0]['cuts']} cuts ({_size(cut[0]['size'])}) <= 1.01",
                f"{worst:.6f}",
                ok,
            )
        )
    st = r.get("startup")
    if st:
        prev = st.get("previous") or {}
        was = f"; previous release {prev['median_s']:.3f} s" if "median_s" in prev else ""
        out.append(
            (
                "start-up `--help` < 0.15 s",
                f"{st['median_s']:.3f} s ({st['ratio']:.1f}x `-c pass`{was})",
                st["median_s"] < 0.15,
            )
        )
        if st.get("pyz_bytes"):
            was = f"; previous release {prev['pyz_bytes'] / 1e6:.2f} MB" if "pyz_bytes" in prev else ""
            out.append(("pyz size < 2 MB", f"{st['pyz_bytes'] / 1e6:.2f} MB{was}", st["pyz_bytes"] < 2_000_000))
    for f in r.get("fleet", []):
        out.append(
            (
                f"fleet {f['agents']} agents, jitter {'on' if f['jitter'] else 'off'}: all complete and verify",
                f"{f['verified']}/{f['agents']}",
                f["verified"] == f["agents"],
            )
        )
    by = {(f["agents"], f["jitter"]): f for f in r.get("fleet", [])}
    for n in sorted({f["agents"] for f in r.get("fleet", [])}):
        on, off = by.get((n, True)), by.get((n, False))
        if on and off:
            out.append(
                (
                    f"fleet {n}: jitter spreads the recovery (peak req/s with < without)",
                    f"{on['peak_rps_recovery']} vs {off['peak_rps_recovery']} req/s "
                    f"(100 ms: {on['peak_100ms_recovery']} vs {off['peak_100ms_recovery']})",
                    on["peak_rps_recovery"] < off["peak_rps_recovery"],
                )
            )
    return out


def summary_table(r: dict[str, Any]) -> str:
    lines = ["| target | measured | |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {_mark(ok)} |" for t, m, ok in targets(r)]
    return "\n".join(lines)


def throughput_table(r: dict[str, Any]) -> str:
    lines = [
        "| size | tool | verifies | median s (min-max) | MiB/s | / curl -o | / wget -O | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r.get("throughput", []):
        verifies = "SHA256SUMS" if row["tool"] in ("harmonic-install", "curl -o + sha256sum") else "no"
        flag = "" if row["all_ok"] else " (FAILED)"
        lines.append(
            f"| {_size(row['size'])} | {row['tool']}{flag} | {verifies} | {row['wall_s']:.2f} "
            f"({row['wall_min_s']:.2f}-{row['wall_max_s']:.2f}) | {row['mib_s']:.0f} | {row['vs_curl']:.2f} | "
            f"{row['vs_wget']:.2f} | {row['cpu_s']:.2f} | {row['maxrss_mib']:.1f} |"
        )
    return "\n".join(lines)


def resume_table(r: dict[str, Any]) -> str:
    lines = [
        "| size | cuts (applied) | bytes on the wire | / size | body bytes received | wall s | CPU s | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r.get("resume", []):
        lines.append(
            f"| {_size(x['size'])} | {x['cuts']} ({x['cuts_applied']}) | {x['wire_bytes']} | {x['ratio']:.6f} | "
            f"{x['body_bytes_client']} | {x['wall_s']:.1f} | {x.get('cpu_s', 0):.1f} | {'yes' if x['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def fleet_table(r: dict[str, Any]) -> str:
    lines = [
        "| agents | jitter | file | verified | retries/agent min/median/mean/max | requests | peak req/s in "
        "recovery (at s) | peak per 100 ms | bytes received / ideal | last agent done at s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in r.get("fleet", []):
        q = f["retries_per_agent"]
        lines.append(
            f"| {f['agents']} | {'on' if f['jitter'] else 'off'} | {_size(f['file_size'])} | "
            f"{f['verified']}/{f['agents']} | {q['min']}/{q['median']}/{q['mean']}/{q['max']} | "
            f"{f['requests_total']} | {f['peak_rps_recovery']} ({f['peak_rps_recovery_at_s']}) | "
            f"{f['peak_100ms_recovery']} | {f['bytes_ratio']:.4f} | {f['last_finish_s']} |"
        )
    return "\n".join(lines)


def machine_text(r: dict[str, Any]) -> str:
    m = r["machine"]
    return (
        f"- CPU: {m['cpu']}, {m['cores']} cores (SHA extensions: {'yes' if m['sha_ni'] else 'no'}), "
        f"{m['memory_gib']} GiB RAM; {m['os']}, kernel {m['kernel']}\n"
        f"- {m['python']}; {m['nginx']}; {m['curl']}; {m['wget']}; {m['sha256sum']}\n"
        f"- work files on {m['work_fs']}; the ISO dir is a tmpfs (as in the MAAS ephemeral environment)\n"
        f"- shared machine: load average at start {', '.join(f'{x:.1f}' for x in m['load_at_start'])} "
        f"(other engineers' tests and a VM were running); measured {m['date_utc']}, mode {r['mode']}, "
        f"{r.get('duration_s', 0):.0f} s in all"
    )


def charts(r: dict[str, Any], suffix: str) -> list[str]:
    """throughput.png, rss.png and (if measured) fleet.png; returns the file names written."""
    written: list[str] = []
    rows = r.get("throughput", [])
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if rows:
            sizes = sorted({row["size"] for row in rows})
            tp = {(row["size"], row["tool"]): row for row in rows}
            with open(d / "tp.dat", "w") as f:
                f.write("size " + " ".join(f'"{t}"' for t in TOOLS) + "\n")
                for s in sizes:
                    f.write(
                        f'"{_size(s)}" '
                        + " ".join(f"{tp[(s, t)]['mib_s']:.1f}" if (s, t) in tp else "0" for t in TOOLS)
                        + "\n"
                    )
            with open(d / "rss.dat", "w") as f:
                for s in sizes:
                    f.write(
                        f"{s / MiB:.0f} "
                        + " ".join(f"{tp[(s, t)]['maxrss_mib']:.2f}" if (s, t) in tp else "NaN" for t in TOOLS)
                        + "\n"
                    )
            name_tp, name_rss = f"throughput{suffix}.png", f"rss{suffix}.png"
            tp_dat, rss_dat = d / "tp.dat", d / "rss.dat"
            names = " ".join(t.replace(" ", "") for t in TOOLS)
            _gnuplot(f"""
set terminal pngcairo size 900,500 font ",10"; set output "{RESULTS / name_tp}"
set title "ISO download into a tmpfs ISO dir from nginx on loopback (median MiB/s, higher is better)"
set style data histogram; set style histogram cluster gap 1; set style fill solid 0.8 border -1
set ylabel "MiB/s"; set key top right; set grid ytics; set yrange [0:*]
plot for [i=2:5] "{tp_dat}" using i:xtic(1) title columnhead(i)
""")
            _gnuplot(f"""
set terminal pngcairo size 900,500 font ",10"; set output "{RESULTS / name_rss}"
set title "Peak RSS of the download process against file size"
set xlabel "file size (MiB)"; set ylabel "peak RSS (MiB)"; set logscale x 2; set grid
set key top left; set yrange [0:80]
set arrow from graph 0, first 64 to graph 1, first 64 nohead dt 2 lc rgb "red"
set label "target: 64 MiB" at graph 0.75, first 67 tc rgb "red"
plot for [i=2:5] "{rss_dat}" using 1:i with linespoints lw 2 pt 7 title word("{names}", i-1)
""")
            written += [name_tp, name_rss]
        fleet = [f for f in r.get("fleet", []) if f["agents"] == max(x["agents"] for x in r.get("fleet", []))]
        if fleet:
            plots = []
            for f in fleet:
                p = d / f"fleet-{'on' if f['jitter'] else 'off'}.dat"
                p.write_text("".join(f"{i} {n}\n" for i, n in enumerate(f["rps_series"])))
                plots.append(f'"{p}" using 1:2 with steps lw 2 title "jitter {"on" if f["jitter"] else "off"}"')
            o = fleet[0]["outage"]
            n_agents, down, refused, back = fleet[0]["agents"], o["down_at_s"], o["refused_at_s"], o["back_at_s"]
            name = f"fleet{suffix}.png"
            _gnuplot(f"""
set terminal pngcairo size 900,500 font ",10"; set output "{RESULTS / name}"
set title "{n_agents} agents: requests arriving at nginx per second (503 phase shaded, then refused)"
set xlabel "seconds since start"; set ylabel "requests/s"; set grid
set object 1 rect from {down}, graph 0 to {refused}, graph 1 fc rgb "#ffe0e0" fs solid 0.5 behind
set object 2 rect from {refused}, graph 0 to {back}, graph 1 fc rgb "#e0e0e0" fs solid 0.5 behind
plot {", ".join(plots)}
""")
            written.append(name)
    return written


def _gnuplot(script: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


def write(r: dict[str, Any], *, quick: bool) -> Path:
    """Write the results page (README.md, or quick.md for --quick) and its charts; returns its path."""
    suffix = "-quick" if quick else ""
    pngs = charts(r, suffix)
    page = RESULTS / ("quick.md" if quick else "README.md")
    parts = [
        f"# Benchmark results{' (quick mode)' if quick else ''}",
        "",
        "Produced by `make bench" + ("-quick" if quick else "") + "` (tests/bench/). Medians of several runs, tools "
        "interleaved in the same run; ratios are medians of per-round ratios. Absolute times are context only: "
        "the machine is shared.",
        "",
        "## Machine",
        machine_text(r),
        "",
        "## Targets (issue 7)",
        summary_table(r),
        "",
    ]
    if r.get("throughput"):
        parts += [
            "## ISO download and verification",
            "Every tool fetches `apollo/latest` (a symlink to the ISO) from one nginx on loopback (sendfile, file "
            "in the page cache) into the same ISO dir on a tmpfs. harmonic-install is `Downloader.fetch` in a fresh "
            "Python 3.10 process with the default settings (checksum from SHA256SUMS, .part + rename, fsync). "
            "`curl -o + sha256sum` is `curl -o` then `curl SHA256SUMS | sha256sum --check`. Wall time, CPU and "
            "peak RSS per process from GNU time.",
            "",
            throughput_table(r),
            "",
        ]
        parts += [f"![{p}]({p})" for p in pngs if p.startswith(("throughput", "rss"))]
        parts.append("")
    if r.get("resume"):
        parts += [
            "## Resume efficiency",
            "The download goes through the fault-injecting TCP proxy (tests/support/faults.py), which cuts the "
            "ISO's body 10 times at 1/11, 2/11, ... of the file and counts every byte it forwards (headers too). "
            "The first row is the same download without cuts.",
            "",
            resume_table(r),
            "",
        ]
    st = r.get("startup")
    if st:
        parts += [
            "## Start-up",
            f"`{st['subject']}`: median {st['median_s'] * 1000:.0f} ms (min {st['min_s'] * 1000:.0f}, max "
            f"{st['max_s'] * 1000:.0f}) over {st['runs']} runs; `python3.10 -c pass`: "
            f"{st['baseline_median_s'] * 1000:.0f} ms; ratio {st['ratio']:.1f}x. CPU (user+sys, 10 ms resolution): "
            f"{st['cpu_median_s'] * 1000:.0f} ms against {st['baseline_cpu_median_s'] * 1000:.0f} ms. Peak RSS "
            f"{st['maxrss_kib'] / 1024:.1f} MiB.",
            "",
        ]
    if r.get("fleet"):
        o = r["fleet"][0]
        parts += [
            "## Fleet",
            f"Agents are threads in one process, each running `Downloader.fetch` with the default policy on its own "
            f"copy of one file; nginx caps each connection at total/agents "
            f"({o['total_rate'] / MiB:g} MiB/s in all). At {o['outage']['down_at_s']:g} s nginx is killed (every "
            f"transfer cut) and replaced by one answering 503 with Retry-After: 10; at "
            f"{o['outage']['refused_at_s']:g} s it is gone (connections refused); at {o['outage']['back_at_s']:g} s "
            "the normal server is back. Requests are counted at nginx by arrival time ($msec - $request_time; "
            "requests cut by the kill are not logged). Retries are the download.retry_scheduled events per agent. "
            "Jitter off is a bench-only monkeypatch of the policy's wait (same steps, no randomness).",
            "",
            fleet_table(r),
            "",
        ]
        parts += [f"![{p}]({p})" for p in pngs if p.startswith("fleet")]
        parts.append("")
    findings = Path(__file__).with_name("findings.md")
    if not quick and findings.exists():
        parts += [findings.read_text().rstrip(), ""]
    page.write_text("\n".join(parts) + "\n")
    return page
