"""Fetch one file with harmonic_installer.download in its own process (for the SIGKILL resume test).

Usage: python download_driver.py URL DEST_DIR FILENAME SHA256
Prints the VerifiedArtifact as one JSON line on stdout (last line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy
from harmonic_installer.proxy import ProxyConfig


def main() -> int:
    url, dest, filename, sha256 = sys.argv[1:5]
    policy = DownloadPolicy(
        attempts=3,
        max_time_s=120.0,
        connect_timeout_s=5.0,
        read_timeout_s=60.0,
        stall_min_rate=0,
        stall_window_s=60.0,
        backoff_max_s=0.5,
        free_space_margin_bytes=0,
        allow_unverified=False,
        keyring=None,
        ca_file=None,
        sums_name="SHA256SUMS",
    )
    with Downloader(policy, ProxyConfig(enabled=False, url=None, no_proxy=())) as dl:
        art = dl.fetch(ArtifactSpec(url=url, dest_dir=Path(dest), filename=filename, sha256=sha256))
    print(json.dumps({"path": str(art.path), "sha256": art.sha256, "bytes_transferred": art.bytes_transferred}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
