"""The proxy decision per URL (names, domain suffixes, IPs and CIDR ranges) and the child environment.

Neither wget nor httpx honour CIDR entries in no_proxy (ecosystem.md §6.4), so the decision is made here
and handed to the HTTP client explicitly. `os.environ` is never modified.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from harmonic_installer import noproxy
from harmonic_installer.config import Settings, redact_url

_PROXY_VARS = frozenset(
    {"http_proxy", "https_proxy", "no_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"}
)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Whether and how requests go through the HTTP proxy."""

    enabled: bool
    url: str | None
    no_proxy: tuple[str, ...]

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL to use for `url`, or None to connect directly."""
        if not self.enabled or not self.url:
            return None
        host = urlsplit(url).hostname
        if host is None:
            return self.url
        return None if bypasses(host, self.no_proxy) else self.url

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """A copy of `base` with the proxy variables set (or removed when the proxy is off)."""
        env = {k: v for k, v in base.items() if k not in _PROXY_VARS}
        if self.enabled and self.url:
            # Passed as given: curl honours CIDR entries, wget and urllib match names only.
            no_proxy = ",".join(self.no_proxy)
            env.update(http_proxy=self.url, https_proxy=self.url, no_proxy=no_proxy)
            env.update(HTTP_PROXY=self.url, HTTPS_PROXY=self.url, NO_PROXY=no_proxy)
        return env

    def describe(self) -> str:
        """One line for logs and the report; credentials redacted."""
        if not self.enabled or not self.url:
            return "off (direct connections)"
        return f"{redact_url(self.url)} except {','.join(self.no_proxy) or 'nothing'}"


def resolve(settings: Settings) -> ProxyConfig:
    """The proxy configuration for this run (-p enables it)."""
    return ProxyConfig(enabled=settings.mode.proxy, url=settings.proxy.url, no_proxy=settings.proxy.no_proxy)


def bypasses(host: str, no_proxy: tuple[str, ...]) -> bool:
    """True when `host` matches a no_proxy entry: '*', a name, a domain suffix, an IP or a CIDR range."""
    return noproxy.bypasses(host, no_proxy)
