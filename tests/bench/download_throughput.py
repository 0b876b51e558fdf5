"""Benchmark: Downloader.fetch against a bare httpx iter_raw + sha256 + write loop, real nginx on loopback.

Run: .venv/bin/python -m tests.bench.download_throughput [--size-mib 1024] [--rounds 3] [--dest /dev/shm/dlbench]
The destination defaults to /dev/shm (RAM, like /data in the MAAS ephemeral environment). Prints MiB/s and CPU
seconds for both, the ratio, and the peak RSS (memory must stay flat whatever the size).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import resource
import shutil
import time
from pathlib import Path

import httpx
import structlog

from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy
from harmonic_installer.proxy import ProxyConfig
from tests.support.nginx import serve

WORK = Path(__file__).resolve().parent / "work"


def _make_file(path: Path, size: int) -> str:
    if not path.exists() or path.stat().st_size != size:
        with path.open("wb") as out:
            left = size
            while left:
                block = os.urandom(min(left, 64 << 20))
                out.write(block)
                left -= len(block)
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _bare(url: str, dest: Path) -> str:
    h = hashlib.sha256()
    with (
        httpx.Client(trust_env=False, headers={"Accept-Encoding": "identity"}) as client,
        client.stream("GET", url) as resp,
        dest.open("wb", buffering=1 << 20) as out,
    ):
        for chunk in resp.iter_raw():
            out.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dest", type=Path, default=Path("/dev/shm/dlbench"))
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    root = WORK / "www"
    root.mkdir(parents=True, exist_ok=True)
    size = args.size_mib << 20
    sha = _make_file(root / "big.iso", size)
    policy = DownloadPolicy(
        attempts=1,
        max_time_s=3600,
        connect_timeout_s=5,
        read_timeout_s=30,
        stall_min_rate=1024,
        stall_window_s=60,
        backoff_max_s=1,
        free_space_margin_bytes=0,
        allow_unverified=False,
        keyring=None,
        ca_file=None,
        sums_name="SHA256SUMS",
    )
    with serve(root) as web:
        url = f"{web.url}/big.iso"
        for n in range(args.rounds):
            shutil.rmtree(args.dest, ignore_errors=True)
            args.dest.mkdir(parents=True)
            t0, c0 = time.perf_counter(), time.process_time()
            assert _bare(url, args.dest / "bare") == sha
            t1, c1 = time.perf_counter(), time.process_time()
            (args.dest / "bare").unlink()
            with Downloader(policy, ProxyConfig(enabled=False, url=None, no_proxy=())) as dl:
                art = dl.fetch(ArtifactSpec(url=url, dest_dir=args.dest, filename="big.iso", sha256=sha))
            t2, c2 = time.perf_counter(), time.process_time()
            assert art.sha256 == sha
            bare, fetched = args.size_mib / (t1 - t0), args.size_mib / (t2 - t1)
            print(
                f"round {n}: bare loop {bare:6.0f} MiB/s (cpu {c1 - c0:.2f} s) | fetch() {fetched:6.0f} MiB/s "
                f"(cpu {c2 - c1:.2f} s, incl. fsync + rename) | fetch/bare {fetched / bare:.2f}"
            )
    shutil.rmtree(args.dest, ignore_errors=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB for a {args.size_mib} MiB file")


if __name__ == "__main__":
    main()
