"""Shared helpers and fixtures of the download package tests: a fake clock, the policy, scripted servers, keys."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from harmonic_installer.download import (
    ArtifactSpec,
    Downloader,
    DownloadPolicy,
)
from harmonic_installer.proxy import ProxyConfig
from harmonic_installer.runner import CommandResult, SubprocessRunner
from tests.support.faults import ScriptedServer

CONTENT = bytes(range(256)) * 1200  # 307,200 bytes: several read buffers


SHA = hashlib.sha256(CONTENT).hexdigest()


ISO_NAME = "APOLLO_PLATFORM-release-3.22.0.0-1+auto3.iso"


def Direct() -> ProxyConfig:
    """Proxy decision: connect directly."""
    return ProxyConfig(enabled=False, url=None, no_proxy=())


def ViaProxy(proxy: str) -> ProxyConfig:
    """Proxy decision: always use `proxy`."""
    return ProxyConfig(enabled=True, url=proxy, no_proxy=())


class FakeClock:
    """A monotonic clock that only moves when slept on (or told to)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def policy(**overrides: Any) -> DownloadPolicy:
    values: dict[str, Any] = {
        "attempts": 4,
        "max_time_s": 600.0,
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "stall_min_rate": 0,
        "stall_window_s": 5.0,
        "backoff_max_s": 2.0,
        "free_space_margin_bytes": 0,
        "allow_unverified": False,
        "keyring": None,
        "ca_file": None,
        "sums_name": "SHA256SUMS",
    }
    values.update(overrides)
    return DownloadPolicy(**values)


@pytest.fixture
def srv() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def downloader(clock: FakeClock, proxy: Any = None, **kw: Any) -> Downloader:
    pol = kw.pop("pol", None) or policy()
    return Downloader(pol, proxy or Direct(), clock=clock, sleep=clock.sleep, **kw)


def sums_line(name: str, data: bytes = CONTENT, star: bool = False) -> str:
    return f"{hashlib.sha256(data).hexdigest()} {'*' if star else ' '}{name}\n"


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def spec_for(srv: ScriptedServer, tmp_path: Path, name: str = "a.deb", **kw: Any) -> ArtifactSpec:
    kw.setdefault("sums_url", f"{srv.url}/p/SHA256SUMS")
    return ArtifactSpec(url=f"{srv.url}/p/{name}", dest_dir=tmp_path / "dest", filename=name, **kw)


def url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir() if p.name.startswith("."))


def stream_response(chunks: Sequence[bytes], headers: dict[str, str], tick: Callable[[], None] | None = None) -> Any:
    class Stream(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for c in chunks:
                if tick:
                    tick()
                yield c

    return Stream()


def iso_spec(srv: ScriptedServer, tmp_path: Path, **kw: Any) -> ArtifactSpec:
    kw.setdefault("sums_url", f"{srv.url}/apollo/SHA256SUMS")
    return ArtifactSpec(
        url=f"{srv.url}/apollo/latest",
        dest_dir=tmp_path / "data",
        filename="APOLLO_PLATFORM-release-3.21.3.0-7+auto15.iso",
        adopt_server_name=True,
        label="Apollo ISO",
        **kw,
    )


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (its PEM file, a server context using it)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return cert, ctx


class RecordingRunner(SubprocessRunner):
    """The real runner, remembering the argv it ran."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:
        self.calls.append(list(argv))
        return super().run(argv, **kw)


@pytest.fixture(scope="module")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Callable[[bytes], bytes]]]:
    """A throwaway signing key: (keyring file for gpgv, function that makes a detached signature)."""
    home = tmp_path_factory.mktemp("gnupg")
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            ["gpg", "--batch", "--quiet", *args], env=env, input=data, capture_output=True, check=True
        ).stdout

    gpg("--passphrase", "", "--quick-gen-key", "Test Signer <signer@example.invalid>", "ed25519", "sign", "never")
    keyring = home / "trusted.gpg"
    keyring.write_bytes(gpg("--export"))
    yield keyring, lambda data: gpg("--detach-sign", "--output", "-", data=data)
    subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False)
