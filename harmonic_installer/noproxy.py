"""The no_proxy grammar, parsed once: '*', a host or domain suffix (optionally '.x', '*.x', ':port'), an IP or a
CIDR range (IPv6 optionally in brackets). config.py validates entries with it, proxy.py matches hosts with it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Entry:
    """One no_proxy entry: everything, a network, or a name with its subdomains (lower case, no port)."""

    everything: bool = False
    network: Network | None = None
    name: str | None = None

    def matches(self, host: str, addr: Address | None) -> bool:
        """`host` (lower case, no brackets or trailing dot; `addr` its IP address if it is one) is bypassed."""
        if self.everything:
            return True
        if self.network is not None:
            return addr is not None and addr.version == self.network.version and addr in self.network
        if addr is not None or self.name is None:
            return False
        return host == self.name or host.endswith("." + self.name)


def parse_entry(raw: str) -> Entry:
    """The entry `raw` stands for.

    Raises:
        ValueError: it is not a host, domain, IP or CIDR range.
    """
    entry = raw.strip().lower()
    if entry == "*":
        return Entry(everything=True)
    bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    try:
        return Entry(network=ipaddress.ip_network(bare, strict=False))
    except ValueError:
        pass
    name = bare[1:] if bare.startswith(".") else bare
    name = name[2:] if name.startswith("*.") else name
    if ":" in name:  # host:port entries are accepted by curl; the port is ignored for matching
        name, _, port = name.rpartition(":")
        if not port.isdigit():
            name = ""
    if not _NAME.fullmatch(name):
        raise ValueError(f"no_proxy entry {raw!r} is not a host, domain, IP or CIDR range")
    return Entry(name=name)


def bypasses(host: str, entries: tuple[str, ...]) -> bool:
    """True when `host` matches one of the no_proxy `entries` (entries that do not parse match nothing)."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        addr: Address | None = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    for raw in entries:
        if not raw.strip():
            continue
        try:
            entry = parse_entry(raw)
        except ValueError:
            continue
        if entry.matches(host, addr):
            return True
    return False
