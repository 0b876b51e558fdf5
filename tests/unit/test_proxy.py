"""proxy: the per-URL decision honours names, suffixes, IPs and CIDR ranges; child env is a copy."""

from __future__ import annotations

import pytest

from harmonic_installer import config, proxy
from harmonic_installer.proxy import ProxyConfig

SEED = ProxyConfig(True, config.SEED_PROXY_URL, config.SEED_NO_PROXY)


@pytest.mark.parametrize(
    ("url", "direct"),
    [
        ("http://172.22.31.150:8080/apollo/latest", True),  # inside 172.22.0.0/16 (wget/httpx get this wrong)
        ("http://172.22.5.10/x", True),
        ("http://172.23.0.1/x", False),
        ("http://44.10.4.101:5240/MAAS", True),  # /32
        ("http://44.10.4.102/", False),
        ("http://localhost:8080/", True),
        ("http://127.0.0.1/", True),
        ("http://host.spoc.charterlab.com/", True),  # domain suffix
        ("http://spoc.charterlab.com/", True),
        ("http://evilspoc.charterlab.com.example/", False),
        ("http://notspoc.charterlab.com/", False),
        ("https://example.org/", False),
    ],
)
def test_seed_no_proxy_decisions(url: str, direct: bool) -> None:
    """The seed's no_proxy list is honoured per URL, CIDR ranges included."""
    assert (SEED.proxy_for(url) is None) is direct


def test_ipv6_and_wildcard_entries() -> None:
    """Bracketed IPv6 CIDRs, leading-dot domains and '*' work."""
    cfg = ProxyConfig(True, "http://127.0.0.1:3128", ("[2600:6ce6:4410:803::/64]", ".svc"))
    assert cfg.proxy_for("http://[2600:6ce6:4410:803::5]/") is None
    assert cfg.proxy_for("http://[2600:6ce6:4410:804::5]/") == "http://127.0.0.1:3128"
    assert cfg.proxy_for("http://api.svc/") is None
    assert ProxyConfig(True, "http://p:1", ("*",)).proxy_for("http://anything/") is None


def test_disabled_proxy_is_direct_and_clears_child_env() -> None:
    """Without -p nothing goes through the proxy, and inherited proxy variables are removed."""
    cfg = ProxyConfig(False, config.SEED_PROXY_URL, config.SEED_NO_PROXY)
    assert cfg.proxy_for("https://example.org/") is None
    env = cfg.child_env({"PATH": "/bin", "http_proxy": "http://stale:1", "HTTPS_PROXY": "http://stale:1"})
    assert env == {"PATH": "/bin"}


def test_child_env_sets_both_spellings_and_does_not_touch_base() -> None:
    """Children get http(s)_proxy/no_proxy in both cases; the caller's mapping is not modified."""
    base = {"PATH": "/bin"}
    env = SEED.child_env(base)
    assert base == {"PATH": "/bin"}
    assert env["http_proxy"] == env["HTTPS_PROXY"] == config.SEED_PROXY_URL
    assert "172.22.0.0/16" in env["no_proxy"].split(",")


def test_describe_redacts_credentials() -> None:
    """The proxy description for logs hides user:password."""
    cfg = ProxyConfig(True, "http://bob:pw123@127.0.0.1:3128", ())
    assert "pw123" not in cfg.describe()


def test_resolve_follows_the_p_flag() -> None:
    """resolve() enables the proxy only when -p was given."""
    s = config.load(environ={}, cmdline="", run=config.RunFlags(proxy=True))
    assert proxy.resolve(s).enabled
    assert not proxy.resolve(config.load(environ={}, cmdline="")).enabled
