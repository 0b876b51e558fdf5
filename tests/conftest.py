"""Suite-wide guards: no test may reach anything but loopback.

Every outbound connection and name lookup made in the test process is checked here: an address outside
127.0.0.0/8 and ::1, or a name other than localhost, raises at once (no waiting on a timeout). Child
processes started by integration tests get the same guarantee from their own fixtures (network
namespaces with only `lo`, or explicit loopback URLs).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest


class NonLoopbackConnection(RuntimeError):
    """A test tried to reach an address that is not loopback."""


def _is_loopback_host(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host in {"localhost", "localhost.localdomain", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _check_address(address: Any) -> None:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return
    if isinstance(address, tuple) and address and _is_loopback_host(address[0]):
        return
    raise NonLoopbackConnection(f"test tried to connect to non-loopback address {address!r}")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_address(address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_address(address)
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if host is not None:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not _is_loopback_host(name):
            raise NonLoopbackConnection(f"test tried to resolve non-loopback name {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """Patch the socket layer for the whole session so only loopback can be reached."""
    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", _guarded_connect)
    mp.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    mp.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Each test starts and ends with structlog's defaults (the CLI configures it per run)."""
    import structlog

    yield
    structlog.reset_defaults()
