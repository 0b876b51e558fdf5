"""OAuth 1.0 with the PLAINTEXT signature (RFC 5849 3.4.4), as MAAS checks it (piston3's OAuth handler).

The one signer of the project: the target's status reports (reporting.py, with the metadata credentials
MAAS gives the node) and the operator's REST API client (fleet/client.py, with the user's API key, whose
consumer secret is always empty) both build their `Authorization` header here.
"""

from __future__ import annotations

from urllib.parse import quote


def header(
    *, consumer_key: str, token_key: str, token_secret: str, consumer_secret: str = "", timestamp: int, nonce: str
) -> str:
    """The `Authorization` header value; the signature is `consumer_secret&token_secret`, each percent-encoded."""
    signature = f"{_escape(consumer_secret)}&{_escape(token_secret)}"
    params = (
        ("oauth_nonce", nonce),
        ("oauth_timestamp", str(timestamp)),
        ("oauth_version", "1.0"),
        ("oauth_signature_method", "PLAINTEXT"),
        ("oauth_consumer_key", consumer_key),
        ("oauth_token", token_key),
        ("oauth_signature", signature),
    )
    return "OAuth " + ", ".join(f'{name}="{_escape(value)}"' for name, value in params)


def _escape(value: str) -> str:
    return quote(value, safe="~")
