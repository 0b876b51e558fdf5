"""`make demo`: scenario 1 (the baked image) with the guest's serial console live, then a short summary.

Run as root after scripts/bootstrap.sh: `.venv/bin/python -m tests.e2e.demo [--workdir DIR]`.
Exit status 0 only when the guest rebooted after a successful install and the disk holds exactly the ISO.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from tests.e2e import scenarios, vm
from tests.e2e.scenarios import Scenario, ScenarioResult

REPO = Path(__file__).resolve().parents[2]


def _say(text: str = "") -> None:
    print(text, flush=True)


def summary(r: ScenarioResult, *, prep: dict[str, float]) -> list[str]:
    """The lines of the final summary: downloaded, verified, installed, written, release, time per step."""
    lines = ["", "=" * 100, "Summary: scenario 1, baked image (harmonic-installer .deb + enabled unit), QEMU TCG", ""]
    served = {a.url_path: a for a in (*r.web.debs, r.web.iso)}
    lines.append(f"downloaded  from {r.server_url} (nginx access log on the host):")
    for req in r.direct_requests + r.proxied_requests:
        parts = req.split('"')
        if len(parts) < 3:
            continue
        path = parts[1].split()[1] if len(parts[1].split()) > 1 else parts[1]
        status, size = [*parts[2].split(), "-", "-"][:2]
        size_text = f"{int(size):>12,} bytes" if size.isdigit() else ""
        lines.append(f"              {path:<58} HTTP {status}  {size_text}")
    steps = r.finished_steps()

    def detail(step: str) -> str:
        event = steps.get(step, {})
        return str(event.get("detail") or event.get("error") or "(no step.finished line on the console)")

    lines.append(f"verified    {detail('download')}")
    for url_path, art in served.items():
        lines.append(f"              {url_path:<58} sha256 {art.sha256[:16]}... (SHA256SUMS on the server)")
    lines.append(f"installed   {detail('packages').removeprefix('installed: ')} (dpkg, in the guest)")
    holds = r.disk_holds_iso()
    lines.append(f"written     {detail('write')}")
    lines.append(
        f"              host check: the target disk holds exactly the ISO's {r.web.iso.size:,} bytes: "
        + ("yes" if holds else "NO")
    )
    lines.append(f"release     {r.web.release}")
    lines.append("time        " + ", ".join(f"{k} {v:.0f} s" for k, v in prep.items()))
    per_step = []
    for name in scenarios.STEPS:
        event = steps.get(name)
        took = event.get("duration_s") if event else None
        per_step.append(f"{name} {took:.1f} s" if isinstance(took, (int, float)) else f"{name} -")
    lines.append("            steps: " + ", ".join(per_step))
    started = r.vm.first(r"install\.started|harmonic-install\[\d+\]")
    boot = f"installer started {started.t:.0f} s after QEMU started; " if started else ""
    python = f"Python {r.python_version() or '(not seen)'}; "
    lines.append(f"            guest: {python}{boot}QEMU exited after {r.vm.duration_s:.0f} s ({r.vm.outcome})")
    lines.append(f"serial log  {r.vm.serial_log}")
    ok = r.vm.outcome == "reboot" and holds and all(n in steps for n in scenarios.STEPS)
    lines.append("")
    lines.append("RESULT      " + ("OK: installed, written, verified from the host, rebooted" if ok else "FAILED"))
    if not ok:  # the serial console was shown live: add what QEMU itself said
        lines.append(r.vm.explain(serial_lines=0))
    lines.append("=" * 100)
    return lines


def main(argv: list[str] | None = None) -> int:
    """Build what is missing, run scenario 1 live, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "demo")
    args = parser.parse_args(argv)
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    prep: dict[str, float] = {}

    t = time.monotonic()
    _say(f"demo: guest image (cached in {vm.cache_dir()}; the first build takes a few minutes)")
    base = vm.base_image()
    prep["image"] = time.monotonic() - t

    t = time.monotonic()
    _say("demo: building the installer's .deb and zipapp (make deb pyz)")
    build = scenarios.build_installer()
    _say(f"demo:   {build.deb.name}, {build.pyz.name}")
    prep["build"] = time.monotonic() - t

    t = time.monotonic()
    _say("demo: stand-in vendor packages, Apollo ISO and SHA256SUMS for the web server")
    if (workdir / "www").exists():
        shutil.rmtree(workdir / "www")
    web = scenarios.web_tree(workdir / "www", build)
    prep["artifacts"] = time.monotonic() - t

    _say("demo: booting the guest (TCG, no KVM: a few minutes); serial console follows")
    _say("-" * 100)
    r = scenarios.run_scenario(Scenario("baked", live=True), workdir, base=base, build=build, web=web)
    prep["layer"] = r.timings.get("image_s", 0.0)
    prep["vm"] = r.vm.duration_s
    for line in summary(r, prep=prep):
        _say(line)
    ok = r.vm.outcome == "reboot" and r.disk_holds_iso()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
