"""The shared helpers of issue 15's duplicates: hashing, formats, urls, noproxy, and the one name rule."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harmonic_installer import config, formats, hashing, noproxy, proxy, urls
from harmonic_installer.download.naming import _problem as server_name_problem
from harmonic_installer.errors import ConfigError
from harmonic_installer.names import is_plain_name


def test_sha256_stream_and_file(tmp_path: Path) -> None:
    """One hash: the whole file, or a prefix of a stream, with the count of bytes hashed."""
    data = bytes(range(256)) * 9000  # more than one block
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hashing.sha256_file(path) == (hashlib.sha256(data).hexdigest(), len(data))
    hasher, n = hashing.sha256_stream(io.BytesIO(data), 1000)
    assert (hasher.hexdigest(), n) == (hashlib.sha256(data[:1000]).hexdigest(), 1000)
    hasher, n = hashing.sha256_stream(io.BytesIO(b"ab"), 10)
    assert (hasher.hexdigest(), n) == (hashlib.sha256(b"ab").hexdigest(), 2)


@pytest.mark.parametrize(
    ("n", "largest", "text"),
    [
        (0, "GiB", "0 B"),
        (1023, "GiB", "1023 B"),
        (1024, "GiB", "1.0 KiB"),
        (1536, "GiB", "1.5 KiB"),
        (1024**2, "GiB", "1.0 MiB"),
        (3 * 1024**4, "GiB", "3072.0 GiB"),  # download messages: GiB is the largest unit (unchanged)
        (3 * 1024**4, "TiB", "3.0 TiB"),  # preflight's disk sizes go on to TiB (unchanged)
        (512.6, "GiB", "513 B"),  # a rate
    ],
)
def test_one_byte_formatter(n: float, largest: str, text: str) -> None:
    """human_bytes gives the texts download and preflight gave before they shared it."""
    assert formats.human_bytes(n, largest=largest) == text


def test_one_http_date_parser() -> None:
    """An HTTP-date parses to an aware datetime (UTC without a zone); a timestamp, or ValueError, for skew."""
    assert formats.http_date("Mon, 07 Dec 2026 10:00:00 GMT") == datetime(2026, 12, 7, 10, tzinfo=timezone.utc)
    assert formats.http_date("Mon, 07 Dec 2026 10:00:00 -0000") == datetime(2026, 12, 7, 10, tzinfo=timezone.utc)
    assert formats.http_date("garbage") is None
    assert formats.http_timestamp("Thu, 01 Jan 1970 00:01:00 GMT") == 60.0
    with pytest.raises(ValueError, match="not an HTTP-date"):
        formats.http_timestamp("garbage")


@pytest.mark.parametrize(
    ("url", "ok"),
    [("http://h/x", True), ("https://h:8443", True), ("ftp://h/x", False), ("http:///x", False), ("h/x", False)],
)
def test_one_url_rule(url: str, ok: bool) -> None:
    """is_http_url: http or https with a host; config refuses what it refuses."""
    assert urls.is_http_url(url) is ok
    if not ok:
        with pytest.raises(ConfigError, match=r"server\.url"):
            config.load(environ={"HARMONIC_SERVER_URL": url}, cmdline="")


@pytest.mark.parametrize(
    ("entry", "host", "bypassed"),
    [
        ("*", "anything.example", True),
        ("example.com", "a.example.com", True),
        (".example.com", "example.com", True),
        ("*.example.com", "b.example.com", True),
        ("Example.COM:8080", "example.com", True),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("[fd00::/8]", "[fd00::1]", True),
        ("10.0.0.0/8", "example.com", False),
        ("example.com", "notexample.com", False),
        ("example.com", "10.0.0.1", False),
    ],
)
def test_one_no_proxy_grammar(entry: str, host: str, bypassed: bool) -> None:
    """config accepts the entry, and proxy matches hosts with the same parse."""
    noproxy.parse_entry(entry)
    settings = config.load(environ={"HARMONIC_PROXY_NO_PROXY": entry}, cmdline="")
    assert settings.proxy.no_proxy == (entry,)
    assert proxy.bypasses(host, settings.proxy.no_proxy) is bypassed


@pytest.mark.parametrize("entry", ["*example.com", "exa mple.com", "host:port", "-bad.example"])
def test_no_proxy_entries_refused_alike(entry: str) -> None:
    """An entry config refuses is one the parser refuses, and it matches nothing."""
    with pytest.raises(ValueError, match="is not a host, domain, IP or CIDR range"):
        noproxy.parse_entry(entry)
    with pytest.raises(ConfigError, match="no_proxy"):
        config.load(environ={"HARMONIC_PROXY_NO_PROXY": entry}, cmdline="")
    assert not noproxy.bypasses("example.com", (entry,))


@pytest.mark.parametrize(
    "name",
    ["a.iso", "APOLLO_PLATFORM-release-3.22.0.0-1+auto3.iso", ".hidden.iso", "a..iso", "a b.iso", "x" * 256, "é.iso"],
)
def test_server_names_follow_the_config_rule(name: str) -> None:
    """A name a server offers is taken exactly when config takes it as a file name (checksums.name): names.py."""
    try:
        config.load(environ={"HARMONIC_CHECKSUMS_NAME": name}, cmdline="")
        config_ok = True
    except ConfigError:
        config_ok = False
    assert (server_name_problem(name, ".iso") is None) is config_ok is is_plain_name(name)
