"""log: JSON and console lines never carry the secrets a traceback's frames hold (Settings, proxy, OAuth)."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from harmonic_installer import config, maas_status
from harmonic_installer import log as logsetup

TOKEN_SECRET = "tok3nS3cretXYZ"
CONSUMER_SECRET = "c0nsumerS3cretXYZ"
PROXY_PASSWORD = "pr0xyPassw0rdXYZ"


def _settings() -> config.Settings:
    return config.load(
        environ={
            "HARMONIC_MAAS_ENDPOINT": "http://127.0.0.1:5240/MAAS/metadata/status/abc",
            "HARMONIC_MAAS_CONSUMER_KEY": "ck",
            "HARMONIC_MAAS_CONSUMER_SECRET": CONSUMER_SECRET,
            "HARMONIC_MAAS_TOKEN_KEY": "tk",
            "HARMONIC_MAAS_TOKEN_SECRET": TOKEN_SECRET,
            "HARMONIC_PROXY_URL": f"http://user:{PROXY_PASSWORD}@127.0.0.1:3128",
        },
        cmdline="",
    )


def _fail_holding_secrets(settings: config.Settings) -> None:
    target = maas_status.resolve_target(settings, find=lambda: None)
    assert target is not None
    headers = {"Authorization": maas_status.oauth_header(target, timestamp=1, nonce="n")}
    proxy = settings.proxy.url
    raise RuntimeError(f"boom with {len(headers)} headers via a proxy of {len(proxy)} chars")


@pytest.mark.parametrize("as_json", [True, False])
def test_logged_exception_never_prints_secrets_from_frame_locals(as_json: bool) -> None:
    """log.exception() renders the traceback (file, line, function) but no frame's locals: no secret reaches a line."""
    out = io.StringIO()
    logsetup.configure(stream=out, json=as_json)
    settings = _settings()
    try:
        _fail_holding_secrets(settings)
    except RuntimeError:
        structlog.get_logger().exception("thing.failed")
    text = out.getvalue()
    assert "_fail_holding_secrets" in text  # the traceback is there
    assert "boom with 1 headers" in text
    for secret in (TOKEN_SECRET, CONSUMER_SECRET, PROXY_PASSWORD, "oauth_signature"):
        assert secret not in text
    if as_json:
        record = json.loads(text.splitlines()[-1])
        frames = record["exception"][0]["frames"]
        assert frames
        assert all("locals" not in f for f in frames)
