"""cloud-init's webhook reporter configuration, as MAAS gives it to the ephemeral OS.

MAAS gives the ephemeral Ubuntu a `reporting: {maas: {type: webhook, endpoint, consumer_key, token_key,
token_secret}}` section (fetched by cloud-init through `cloud-config-url=` and kept in
/etc/cloud/cloud.cfg.d/91_kernel_cmdline_url.cfg). That file is YAML, and the zipapp runs without a YAML
library, so we read cloud-init's own merge of it, which cloud-init writes as JSON under /run/cloud-init
(root only, 0600) in its network stage, before user-data's runcmd and before our systemd unit (After=
cloud-final.service) run, as `cloud-init query` reads it (cloudinit/cmd/query.py). In order:

1. combined-cloud-config.json `reporting`: every source merged, user-data and vendor-data included
   (cloud-init 23.3 and later: the jammy MAAS images carry 24.x and later).
2. instance-data-sensitive.json `merged_system_cfg.reporting` (23.3 and later), else `merged_cfg.reporting`
   (every cloud-init 22.x that Ubuntu 22.04 shipped): /etc/cloud/cloud.cfg and cloud.cfg.d merged, which
   includes the file MAAS's cloud-config-url became.

Read-only: no network, and a file we cannot read is skipped with a warning, never an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from harmonic_installer.config import redact_url

log = structlog.get_logger()

COMBINED_JSON = "/run/cloud-init/combined-cloud-config.json"
INSTANCE_DATA_JSON = "/run/cloud-init/instance-data-sensitive.json"
_MERGED_KEYS = ("merged_system_cfg", "merged_cfg")  # cloud-init 23.3+ writes both; 22.x only merged_cfg


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One webhook reporter: where to post and how to sign (any credential may be empty)."""

    endpoint: str
    consumer_key: str = ""
    consumer_secret: str = ""
    token_key: str = ""
    token_secret: str = ""
    source: str = ""

    def __repr__(self) -> str:  # never show the secrets
        return f"WebhookConfig(endpoint={redact_url(self.endpoint)!r}, source={self.source!r}, secrets=***)"

    @property
    def signed(self) -> bool:
        """True when any OAuth credential is set (else events are posted unsigned, as cloud-init does)."""
        return bool(self.consumer_key or self.token_key or self.token_secret or self.consumer_secret)


def find_webhook(*, combined: str = COMBINED_JSON, instance_data: str = INSTANCE_DATA_JSON) -> WebhookConfig | None:
    """The MAAS webhook reporter cloud-init is configured with, or None.

    Prefers the reporter named `maas`; otherwise the first webhook (by name) with an endpoint.
    """
    reporting, source = _reporting(Path(combined), ())
    if reporting is None:
        reporting, source = _reporting(Path(instance_data), _MERGED_KEYS)
    if not reporting:
        return None
    names = sorted(reporting, key=lambda n: (n != "maas", n))
    for name in names:
        handler = reporting[name]
        if not isinstance(handler, Mapping) or handler.get("type") != "webhook":
            continue
        endpoint = handler.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            continue
        return WebhookConfig(
            endpoint=endpoint,
            consumer_key=_text(handler.get("consumer_key")),
            consumer_secret=_text(handler.get("consumer_secret")),
            token_key=_text(handler.get("token_key")),
            token_secret=_text(handler.get("token_secret")),
            source=f"{source} (reporting.{name})",
        )
    return None


def _text(value: object) -> str:
    if value is None:
        return ""
    return str(value)


def _reporting(path: Path, under: tuple[str, ...]) -> tuple[dict[str, Any] | None, str]:
    """The `reporting` section of a cloud-init JSON file (at the top, or in the first of `under` present);
    None when the file is absent or unusable, {} when it has no reporting section."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("report.config_unreadable", path=str(path), error=str(exc))
        return None, ""
    if not isinstance(data, dict):
        log.warning("report.config_unreadable", path=str(path), error="not a JSON object")
        return None, ""
    source = str(path)
    for key in under:
        if isinstance(data.get(key), dict):
            data, source = data[key], f"{path} {key}"
            break
    else:
        if under:
            return {}, source
    reporting = data.get("reporting")
    return (dict(reporting) if isinstance(reporting, dict) else {}), source
