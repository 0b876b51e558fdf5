"""The download tests' fixtures (defined in kit.py, which other test modules import too)."""

from tests.unit.download.kit import clock, gpg_key, srv, tls_cert

__all__ = ["clock", "gpg_key", "srv", "tls_cert"]
