"""Issue 12 end to end on loopback: real tinyproxy and real nginx, with a relay that tells every close late.

client -> ClosingRelay (close of each upstream connection delayed 0.5 s) -> tinyproxy (Debian) -> nginx,
and `apollo/latest` an nginx `return 302` to the release file. tinyproxy answers and closes without
`Connection: close`; the relay delays that close as QEMU's user networking or a load balancer does. Before
the fix every request that followed a response (the redirect's target, the next file) went out on the dying
connection and every attempt failed with "Server disconnected without sending a response".
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from harmonic_installer.download import ArtifactSpec, Downloader, DownloadPolicy
from harmonic_installer.errors import DownloadError, ExitCode
from harmonic_installer.proxy import ProxyConfig
from tests.e2e.proxy import Proxy, tinyproxy
from tests.support.nginx import Nginx, serve
from tests.support.relay import ClosingRelay

pytestmark = pytest.mark.integration

ISO = "APOLLO_PLATFORM-release-3.22.1.0-2+auto9.iso"
DATA = os.urandom(3 * 1024 * 1024)
DEBS = {"a_1.0_all.deb": os.urandom(200_000), "b_1.0_all.deb": os.urandom(150_000)}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    root = tmp_path_factory.mktemp("www") / "root"
    (root / "apollo").mkdir(parents=True)
    (root / "packages").mkdir()
    (root / "apollo" / ISO).write_bytes(DATA)
    (root / "apollo" / "SHA256SUMS").write_text(f"{hashlib.sha256(DATA).hexdigest()}  {ISO}\n")
    sums = ""
    for name, body in DEBS.items():
        (root / "packages" / name).write_bytes(body)
        sums += f"{hashlib.sha256(body).hexdigest()}  {name}\n"
    (root / "packages" / "SHA256SUMS").write_text(sums)
    with serve(root, extra_server=f"location = /apollo/latest {{ return 302 /apollo/{ISO}; }}") as nginx:
        yield nginx


@pytest.fixture(scope="module")
def proxy(web: Nginx, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with tinyproxy(tmp_path_factory.mktemp("tinyproxy"), allow=(web.host,)) as running:
        yield running


def policy(**overrides: Any) -> DownloadPolicy:
    values: dict[str, Any] = {
        "attempts": 3,
        "max_time_s": 120.0,
        "connect_timeout_s": 5.0,
        "read_timeout_s": 10.0,
        "stall_min_rate": 0,
        "stall_window_s": 60.0,
        "backoff_max_s": 0.2,
        "free_space_margin_bytes": 0,
        "allow_unverified": False,
        "keyring": None,
        "ca_file": None,
        "sums_name": "SHA256SUMS",
    }
    values.update(overrides)
    return DownloadPolicy(**values)


def specs(web: Nginx, dest: Path) -> tuple[list[ArtifactSpec], ArtifactSpec]:
    debs = [
        ArtifactSpec(
            url=f"{web.url}/packages/{name}",
            dest_dir=dest / "work",
            filename=name,
            sums_url=f"{web.url}/packages/SHA256SUMS",
        )
        for name in DEBS
    ]
    iso = ArtifactSpec(
        url=f"{web.url}/apollo/latest",
        dest_dir=dest / "data",
        filename="APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso",
        sums_url=f"{web.url}/apollo/SHA256SUMS",
        adopt_server_name=True,
    )
    return debs, iso


def test_debs_and_redirected_iso_through_tinyproxy_behind_a_late_closing_relay(
    web: Nginx, proxy: Proxy, tmp_path: Path
) -> None:
    """Every file arrives on its first attempt: each request on a connection closed late is resent at once."""
    deb_specs, iso_spec = specs(web, tmp_path)
    with ClosingRelay((proxy.host, proxy.port), close_delay=0.5) as relay:
        config = ProxyConfig(enabled=True, url=relay.url, no_proxy=())
        with capture_logs() as logs, Downloader(policy(), config, progress_bar=None) as dl:
            debs = [dl.fetch(s) for s in deb_specs]
            iso = dl.fetch(iso_spec)
    assert [d.path.read_bytes() for d in debs] == list(DEBS.values())
    assert iso.path.name == ISO
    assert iso.path.read_bytes() == DATA
    assert [e for e in logs if e["event"] == "download.retry_scheduled"] == []
    resent = [e for e in logs if e["event"] == "download.resent"]
    assert resent, "the relay should have made at least one reused connection go stale"
    assert all("Server disconnected without sending a response" in e["error"] for e in resent)
    assert relay.swallowed >= len(resent)
    handled = [line.split()[1] for line in proxy.requests()]
    assert f"{web.url}/apollo/latest" in handled
    assert f"{web.url}/apollo/{ISO}" in handled


def test_direct_to_nginx_without_keepalive_and_connection_close_dropped(web: Nginx, tmp_path: Path) -> None:
    """nginx with keep-alive off, its `Connection: close` dropped by the relay: still one attempt per file."""
    root = web.root
    with (
        serve(
            root,
            extra_http="keepalive_timeout 0;",
            extra_server=f"location = /apollo/latest {{ return 302 /apollo/{ISO}; }}",
        ) as closing,
        ClosingRelay((closing.host, closing.port), close_delay=0.5, drop_connection_close=True) as relay,
    ):
        base = Nginx(relay.url, root, closing.access_log, closing.error_log, "127.0.0.1", relay.port)
        deb_specs, iso_spec = specs(base, tmp_path)
        with capture_logs() as logs, Downloader(policy(), ProxyConfig(False, None, ()), progress_bar=None) as dl:
            for spec in deb_specs:
                dl.fetch(spec)
            iso = dl.fetch(iso_spec)
    assert iso.path.read_bytes() == DATA
    assert [e for e in logs if e["event"] == "download.retry_scheduled"] == []
    assert [e for e in logs if e["event"] == "download.resent"]


@pytest.mark.parametrize(
    ("credentials", "status"), [("", "407 Proxy Authentication Required"), ("ops:Wr0ngPw@", "401 Unauthorized")]
)
def test_refused_proxy_credentials_are_one_line_naming_the_proxy(
    web: Nginx, tmp_path: Path, credentials: str, status: str
) -> None:
    """tinyproxy with BasicAuth: no password (407) or a wrong one (401): exit 4 at once, proxy named, password not."""
    with tinyproxy(tmp_path / "auth", allow=(web.host,), basic_auth=("ops", "right")) as guarded:
        config = ProxyConfig(enabled=True, url=f"http://{credentials}{guarded.host}:{guarded.port}", no_proxy=())
        deb_specs, _iso = specs(web, tmp_path)
        with Downloader(policy(attempts=5), config, progress_bar=None) as dl, pytest.raises(DownloadError) as err:
            dl.fetch(deb_specs[0])
        handled = guarded.requests()
    message = str(err.value)
    assert err.value.exit_code == ExitCode.DOWNLOAD
    assert status in message
    assert f"{guarded.host}:{guarded.port}" in message
    assert "Wr0ngPw" not in message
    assert "proxy.url" in message
    assert len(handled) <= 1
