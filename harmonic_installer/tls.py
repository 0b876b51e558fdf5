"""The one TLS policy for every outgoing HTTPS connection (downloads and MAAS reports).

The system's trust store, or `server.ca_file` instead when it is set; certificates and host names always
verified; TLS 1.2 or later. Standard library only, so the reporter and the downloader share it.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """An SSLContext for clients under this policy.

    Raises:
        OSError: the CA file cannot be read; ssl.SSLError: it holds no usable certificate.
    """
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
