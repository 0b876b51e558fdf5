"""MAAS's REST API 2.0 as the MAAS CLI speaks it: OAuth 1.0 PLAINTEXT with the user's API key.

Endpoints used (canonical/maas, src/maasserver/api/): `users/?op=whoami` (users.py, the check `maas login`
makes: src/maascli/auth.py `check_valid_apikey`), `machines/` read with filters (nodes.py
`NodesHandler.read`, filters from node_constraint_filter_forms.py `ReadNodesForm`), `machines/<id>/?op=deploy`
(machines.py `MachineHandler.deploy`), `events/?op=query` (events.py), `tags/<name>/` (tags.py),
`boot-resources/` (boot_resources.py), `maas/?op=get_config` (maas.py). Errors: 401 from piston3's
`send_oauth_error` ("Authorization Error: ..."), 400 from MAASAPIValidationError (a JSON object of field
errors, or text), 409 NodeStateViolation, 404 text.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from harmonic_installer import __version__, maas_clock, oauth
from harmonic_installer.fleet.errors import FleetError, FleetExit, NotFound, Rejected
from harmonic_installer.fleet.transport import Response, Transport
from harmonic_installer.urls import is_http_url

TIMESTAMP_WINDOW_S = 300  # piston3's OAuth check refuses timestamps further off the server's clock
Query = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A MAAS API key: consumer key, token key, token secret (the consumer secret is always empty)."""

    consumer_key: str
    token_key: str
    token_secret: str

    @classmethod
    def parse(cls, text: str, where: str) -> ApiKey:
        """'ck:tk:ts' as MAAS shows it (apiclient/creds.py `convert_string_to_tuple`)."""
        parts = text.strip().split(":")
        if len(parts) != 3 or not all(parts) or any(c.isspace() for c in text.strip()):
            raise FleetError(
                f"the API key from {where} is not three colon-separated parts (consumer:token:secret)",
                FleetExit.USAGE,
            )
        return cls(*parts)

    def __repr__(self) -> str:
        return f"ApiKey(consumer_key={self.consumer_key!r}, token=***)"


def oauth_header(key: ApiKey, *, timestamp: int, nonce: str) -> str:
    """The Authorization header oauthlib builds for the MAAS CLI (apiclient/maas_client.py `MAASOAuth`):
    PLAINTEXT (oauth.py) with an empty consumer secret."""
    return oauth.header(
        consumer_key=key.consumer_key,
        token_key=key.token_key,
        token_secret=key.token_secret,
        timestamp=timestamp,
        nonce=nonce,
    )


def api_url(url: str) -> str:
    """A MAAS URL as `maas login` stores it: ending in /api/<version>/ (maascli/utils.py `api_url`)."""
    parts = urlsplit(url.strip())
    if not is_http_url(url.strip()):
        raise FleetError(f"--maas-url must be an http:// or https:// URL, got {url!r}", FleetExit.USAGE)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    if re.search(r"/api/[0-9.]+/?$", path) is None:
        path += "api/2.0/"
    return parts._replace(path=path, query="", fragment="").geturl()


def _text(response: Response) -> str:
    """MAAS's error body as one line: field errors joined, text trimmed."""
    raw = response.body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = []
        for field, errors in data.items():
            items = errors if isinstance(errors, list) else [errors]
            parts.append(f"{field}: " + " ".join(str(e) for e in items))
        raw = "; ".join(parts)
    return " ".join(raw.split())[:500] or f"HTTP {response.status}"


class MaasClient:
    """Signed requests to one MAAS; JSON in and out."""

    def __init__(
        self,
        url: str,
        key: ApiKey,
        *,
        transport: Transport,
        timeout_s: float = 30.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.url = api_url(url)
        self._key = key
        self._transport = transport
        self._timeout = timeout_s
        self._wall = wall
        self._skew = 0

    # ---- the endpoints ------------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The user the key belongs to (also proves the key and the URL)."""
        return self._dict(self.get("users/", [("op", "whoami")]))

    def machines(self, query: Query) -> list[dict[str, Any]]:
        """`machines read` with filters (repeat a key for several values)."""
        data = self.get("machines/", query)
        if not isinstance(data, list):
            raise FleetError(f"MAAS at {self.url}: machines read did not return a list")
        return [m for m in data if isinstance(m, dict)]

    def deploy(self, system_id: str, params: Query) -> dict[str, Any]:
        """`machine deploy`: POST op=deploy with the parameters as a form."""
        return self._dict(self.post(f"machines/{quote(system_id)}/", "deploy", params))

    def events(self, query: Query) -> dict[str, Any]:
        """`events query` (op=query) with filters and paging."""
        return self._dict(self.get("events/", [("op", "query"), *query]))

    def tag(self, name: str) -> dict[str, Any]:
        """One tag (name, definition, comment, kernel_opts); NotFound when there is none."""
        return self._dict(self.get(f"tags/{quote(name, safe='')}/", []))

    def config(self, name: str) -> Any:
        """A MAAS setting (`maas get-config`: api/maas.py `get_config`), e.g. the global kernel_opts."""
        return self.get("maas/", [("op", "get_config"), ("name", name)])

    def boot_resources(self) -> list[dict[str, Any]]:
        """Every boot resource (synced and uploaded images)."""
        data = self.get("boot-resources/", [])
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []

    # ---- requests -----------------------------------------------------------------------------------------

    def get(self, path: str, query: Query) -> Any:
        """GET a path below the API URL; the parsed JSON answer."""
        return self._call("GET", path, query, None)

    def post(self, path: str, op: str, form: Query) -> Any:
        """POST op=<op> (in the query string, as the MAAS CLI sends it) with a urlencoded form."""
        return self._call("POST", path, [("op", op)], urlencode(list(form)).encode("ascii"))

    def _dict(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise FleetError(f"MAAS at {self.url} answered something other than a JSON object")
        return data

    def _call(self, method: str, path: str, query: Query, body: bytes | None) -> Any:
        url = self.url + path + (("?" + urlencode(list(query))) if query else "")
        response = self._send(method, url, body)
        if response.status == 401 and self._learn_skew(response):
            response = self._send(method, url, body)
        if 200 <= response.status < 300:
            try:
                return json.loads(response.body.decode("utf-8")) if response.body.strip() else None
            except ValueError as exc:
                raise FleetError(f"MAAS at {self.url} answered {path} with something that is not JSON") from exc
        text = _text(response)
        if response.status == 401:
            raise FleetError(f"MAAS at {self.url} refused the API key (401: {text})", FleetExit.AUTH)
        if response.status == 404:
            raise NotFound(f"MAAS: {text} ({path})")
        if response.status in (400, 403, 409):
            raise Rejected(f"MAAS refused ({response.status}): {text}", response.status)
        raise FleetError(f"MAAS at {self.url} answered {method} {path} with HTTP {response.status}: {text}")

    def _send(self, method: str, url: str, body: bytes | None) -> Response:
        headers = {
            "Accept": "application/json",
            "User-Agent": f"harmonic-install-fleet/{__version__}",
            "Authorization": oauth_header(
                self._key, timestamp=int(self._wall()) + self._skew, nonce=secrets.token_hex(16)
            ),
        }
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            return self._transport.request(method, url, headers, body, self._timeout)
        except OSError as exc:
            raise FleetError(f"cannot reach MAAS at {self.url}: {exc}") from exc

    def _learn_skew(self, response: Response) -> bool:
        """After a 401: adopt the server's clock when ours is off by more than OAuth allows; True to retry."""
        skew = maas_clock.server_skew(response.headers, self._wall())
        if skew is None:
            return False
        if abs(skew) < TIMESTAMP_WINDOW_S or skew == self._skew:
            return False
        self._skew = skew
        return True
