"""The one OAuth 1.0 PLAINTEXT signer: what MAAS's piston3 checks, for both the reporter and the fleet client."""

from __future__ import annotations

from harmonic_installer import maas_status, oauth
from harmonic_installer.cloudinit_cfg import WebhookConfig
from harmonic_installer.fleet.client import ApiKey, oauth_header


def test_header_is_plaintext_with_both_secrets_escaped() -> None:
    """The signature is escaped(consumer secret) & escaped(token secret), then escaped again as a parameter."""
    header = oauth.header(
        consumer_key="ck", consumer_secret="c s", token_key="tk", token_secret="t&s", timestamp=7, nonce="n"
    )
    assert header == (
        'OAuth oauth_nonce="n", oauth_timestamp="7", oauth_version="1.0", oauth_signature_method="PLAINTEXT", '
        'oauth_consumer_key="ck", oauth_token="tk", oauth_signature="c%2520s%26t%2526s"'
    )


def test_reporter_and_fleet_sign_alike() -> None:
    """The same key gives the same header from the status client and the fleet client (empty consumer secret)."""
    target = WebhookConfig(endpoint="http://127.0.0.1/", consumer_key="ck", token_key="tk", token_secret="ts")
    via_status = maas_status.oauth_header(target, timestamp=1700000000, nonce="n1")
    via_fleet = oauth_header(ApiKey("ck", "tk", "ts"), timestamp=1700000000, nonce="n1")
    assert via_status == via_fleet
    assert 'oauth_signature="%26ts"' in via_fleet
