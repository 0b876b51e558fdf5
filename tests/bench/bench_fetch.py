"""The production download path in a fresh process: settings -> plan.artifact_specs -> Downloader.fetch(ISO).

Usage: python -m tests.bench.bench_fetch SERVER_URL ISO_DIR [key=value ...]
   or: python3.10 -I -S tests/bench/bench_fetch.py --pyz dist/harmonic-install.pyz SERVER_URL ISO_DIR [...]
With --pyz the code comes from the zipapp as it ships, in an isolated interpreter (no site-packages, no
PYTHON* variables), as the unit and the wrapper start it: the whole process is what an operator runs.
Extra key=value pairs are settings (e.g. download.attempts=12). HARMONIC_BENCH_HTTPCORE_READ=<bytes>
sets httpcore's socket read size for an experiment (the tuning measured in results/README.md). The
checksum comes from the server's SHA256SUMS, as in production. Logs go to stderr as JSON (what the
installer logs on a serial console); the last stdout line is the VerifiedArtifact as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    if argv[:1] == ["--pyz"]:
        sys.path.insert(0, argv[1])  # the zipapp's own code and its bundled dependencies, nothing else
        argv = argv[2:]
    from harmonic_installer import config, log
    from harmonic_installer.download import Downloader, DownloadPolicy
    from harmonic_installer.plan import artifact_specs
    from harmonic_installer.proxy import ProxyConfig

    read_size = os.environ.get("HARMONIC_BENCH_HTTPCORE_READ")
    if read_size:  # bench-only experiment: httpcore's socket read size (default 64 KiB)
        import httpcore

        httpcore.HTTP11Connection.READ_NUM_BYTES = int(read_size)
    server, iso_dir, *pairs = argv
    flags: dict[str, str] = {"server.url": server, "paths.iso_dir": iso_dir}
    for pair in pairs:
        key, value = pair.split("=", 1)
        flags[key] = value
    settings = config.load(flags=flags, environ={}, config_file=None)
    log.configure(stream=sys.stderr, json=True)
    _debs, iso = artifact_specs(settings)
    imported = time.perf_counter()
    with Downloader(DownloadPolicy.from_settings(settings), ProxyConfig(enabled=False, url=None, no_proxy=())) as dl:
        art = dl.fetch(iso)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "path": str(art.path),
                "sha256": art.sha256,
                "size": art.size,
                "bytes_transferred": art.bytes_transferred,
                "checksum_source": art.checksum_source,
                "startup_s": imported - started,
                "fetch_s": done - imported,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
