"""The sandbox demo: a complete `harmonic-install -p -i` on real parts, shown live, then checked and summarised.

    python -m tests.support.demo WORKDIR [--iso-mib N] [--disk-mib N]

Run it through scripts/sandbox-demo.sh (or `make sandbox-demo`), which bootstraps the machine first and
cleans up after it. Exit status: 0 when the install succeeded and every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from tests.support.loopdev import MiB, first_difference, loop_device
from tests.support.sandbox import Command, Proxy, Sandbox, SessionResult, WebServer, installer_command
from tests.support.standin import WebRoot, build_web_root

QUERY = Command(("dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\\n", "ostree-upgrade*"))


def _title(text: str) -> None:
    print(f"\n=== {text}", flush=True)


@contextmanager
def _timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    print(f"    {what}: {time.monotonic() - started:.1f} s", flush=True)


def _short(sha: str) -> str:
    return f"{sha[:12]}..{sha[-4:]}"


def _summary(web: WebRoot, report: dict[str, Any], result: SessionResult, disk_ok: bool, disk: str) -> list[str]:
    """The checks' outcomes as lines; failures start with 'FAIL'."""
    lines: list[str] = []
    lines.append(f"outcome: {report.get('outcome')} (exit {report.get('exit_code')})")
    lines.append("steps:")
    for step in report.get("steps", []):
        lines.append(f"  {step['name']:<10} {step['status']:<8} {step['duration_s']:>7.2f} s  {step['detail'][:90]}")
    lines.append("downloaded and verified:")
    expected = {sha: path for path, (_, sha) in web.expected().items()}
    for art in report.get("artifacts", []):
        mark = "ok " if art["sha256"] in expected else "FAIL unknown hash"
        lines.append(
            f"  {mark} {art['label']:<42} {art['size']:>10,} bytes sha256 {_short(art['sha256'])} "
            f"({art['checksum_source']}) -> {art['path']}"
        )
    query = result.commands[1].stdout if len(result.commands) > 1 else ""
    installed = [ln for ln in query.splitlines() if ln.endswith(" ii ")]
    lines.append("installed (dpkg-query in the isolated root):")
    lines.extend(f"  ok  {ln.strip()}" for ln in installed)
    if len(installed) != len(web.debs):
        lines.append(f"  FAIL expected {len(web.debs)} installed packages")
    lines.append("written:")
    lines.append(
        f"  {'ok ' if disk_ok else 'FAIL'} {disk}: first {web.iso.size:,} bytes "
        f"{'equal' if disk_ok else 'differ from'} {web.iso.name} byte for byte"
    )
    proxied = result.proxied_requests()
    lines.append(f"network: {len(proxied)} requests through the proxy, {len(result.web_access)} reached nginx")
    lines.extend(f"  {line}" for line in proxied)
    if len(proxied) != len(result.web_access) or not proxied:
        lines.append("  FAIL some requests did not go through the proxy")
    return lines


def run(workdir: Path, *, iso_mib: int, disk_mib: int, block_delay: float) -> int:
    """Build everything under workdir, install, check; 0 when all checks pass."""
    _title("1/4 stand-in vendor artifacts (real .debs, an ISO 9660 image, SHA256SUMS)")
    with _timed("built"):
        web = build_web_root(workdir / "www", iso_size=iso_mib * MiB + 3 * 2048)
    for art in (*web.debs, web.iso):
        print(f"    {art.url_path:<56} {art.size:>12,} bytes  sha256 {_short(art.sha256)}")
    print("    apollo/latest -> 302 to the ISO's real name")

    _title("2/4 isolated root (Debian bookworm, cached) with this checkout's installer")
    with _timed("ready"):
        sandbox = Sandbox(workdir / "sandbox")
    if block_delay:
        sandbox.write("/etc/ostree-standin.conf", f"BLOCK_DELAY={block_delay}\n")
        print(f"    the stand-in ostree-production sleeps {block_delay} s per MiB written (time for a Ctrl-C)")
    server = WebServer(web.root, extra_server=web.latest_redirect())
    proxy = Proxy()

    _title(f"3/4 loop device as the target disk ({disk_mib} MiB, sparse, all zeros)")
    with loop_device(workdir, size=disk_mib * MiB) as disk:
        print(f"    {disk.path} backed by {disk.backing}")
        _title("4/4 harmonic-install -p -i in fresh namespaces (only lo; nginx 127.0.0.2, tinyproxy 127.0.0.1)")
        command = dataclasses.replace(installer_command(server, proxy, disk.path), echo_stdout=False)
        print(f"    $ {' '.join(command.argv)}\n", flush=True)
        started = time.monotonic()
        result = sandbox.run([command, QUERY], web=server, proxy=proxy, devices=disk.nodes(), echo=True)
        elapsed = time.monotonic() - started
        disk_ok = first_difference(disk.path, web.iso.path) is None

    if not result.commands:
        print(f"\nFAIL: the session ran no command (status {result.status})\n{result.driver_stderr}")
        return 1
    install = result.commands[0]
    try:
        report: dict[str, Any] = json.loads(install.stdout)
    except ValueError:
        print(f"\nFAIL: no JSON report from harmonic-install (exit {install.returncode})")
        return 1
    _title(f"summary (harmonic-install exit {install.returncode}, session {elapsed:.1f} s)")
    lines = _summary(web, report, result, disk_ok, disk.path)
    print("\n".join(f"    {ln}" for ln in lines))
    failed = install.returncode != 0 or any(ln.lstrip().startswith("FAIL") for ln in lines)
    print(f"\n{'DEMO FAILED' if failed else 'DEMO PASSED'}", flush=True)
    return 1 if failed else 0


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Parse the arguments and run the demo."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.demo")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--iso-mib", type=int, default=64)
    parser.add_argument("--disk-mib", type=int, default=1024)
    parser.add_argument("--block-delay", type=float, default=0, help="slow the write down (seconds per MiB)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    # Interactive by nature: Ctrl-C must work even when started with SIGINT ignored (a background job);
    # SIGTERM unwinds the same way, so the loop device is detached either way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args.workdir, iso_mib=args.iso_mib, disk_mib=args.disk_mib, block_delay=args.block_delay)
    except KeyboardInterrupt:
        print("\ninterrupted: the session, its mounts, its network namespace and the loop device are gone")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
