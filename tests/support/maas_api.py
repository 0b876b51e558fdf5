"""A stand-in for MAAS's REST API 2.0 (and its metadata status endpoint), driven by a scripted timeline.

Built from canonical/maas (trunk after 3.8; the same in 3.5 for what is used here):
- OAuth (src/maasserver/api/auth.py `MAASAPIAuthentication`, piston3 `send_oauth_error`): every request needs
  `Authorization: OAuth ...` with PLAINTEXT signature `&<token_secret>` (the consumer secret is empty,
  apiclient/creds.py), a fresh nonce and a timestamp within 300 s; otherwise 401 text/plain
  "Authorization Error: Invalid API key." (unknown consumer) or "Authorization Error: '<reason>'".
- `GET users/?op=whoami` (api/users.py): the key's user; the check `maas login` makes (maascli/auth.py).
- `GET machines/` (api/nodes.py `NodesHandler.read`, node_constraint_filter_forms.py `ReadNodesForm`):
  filters `id`, `hostname` (each repeatable, any of), `tags` (all of), `pool`, `zone`; different filters
  AND; an unknown tag/pool/zone is 400 JSON {"tags": ["No such tag(s): 'x'."]}. Objects carry the
  machines.py DISPLAYED_MACHINE_FIELDS used by fleet: system_id, hostname, fqdn, status (int), status_name,
  owner, osystem, distro_series, ephemeral_deploy, tag_names, zone and pool as {id, name, description,
  resource_uri}, power_state, status_message, error_description.
- `POST machines/<id>/?op=deploy` (api/machines.py `MachineHandler.deploy`): 404 "No Machine matches the
  given query."; a Ready machine is allocated to the caller first; then anything but Allocated is 409
  "Can't deploy a machine that is in the '<status>' state" (node_status.py NODE_TRANSITIONS); `install_kvm`
  true is 400 (removed in 4.0); `distro_series` must name a known release or uploaded image, else 400 (after
  the allocation, as MAAS does); `user_data` base64 and `ephemeral_deploy` are stored; the machine turns
  Deploying with a "Deploying" INFO event (models/node.py `_start_deployment`) and its timeline starts.
- `GET events/?op=query` (api/events.py): `id`/`hostname` filters, `level` minimum (DEBUG, INFO, WARNING,
  ERROR, CRITICAL; default INFO; unknown: 400), `limit` (default 100, more than 1000: 400), `after`/`before`
  paging exactly as MAAS pages (newest first; `after` takes the oldest `limit` newer events), both: 400.
  Events: {username, node, hostname, id, level, created "%a, %d %b. %Y %H:%M:%S", type, description}.
- `GET tags/<name>/` (api/tags.py): {name, definition, comment, kernel_opts, resource_uri}; 404 "No Tag
  matches the given query."; `GET boot-resources/` (api/boot_resources.py `boot_resource_to_dict`);
  `GET maas/?op=get_config&name=...` (api/maas.py: the value as JSON, e.g. the global kernel_opts string).
- `POST /MAAS/metadata/status/<system_id>` (src/metadataserver/api_twisted.py `_processMessage`, api.py
  `add_event_to_node_event_log`): only `start` events and results FAIL/FAILURE are logged, as
  "'<origin>' <description>": while Deploying "Node installation" (DEBUG) / "Node installation failure"
  (ERROR); for a Deployed node FAIL is "Node post-installation failure" (ERROR), anything else "Node status
  event" (DEBUG). A message with `files` for an in-memory deploy is dropped whole (no installation script
  set). The node is found by the OAuth token key alone, as MAAS does.

The timeline (per machine, seconds after its deploy or after `start_timeline`) is applied lazily, on each
request, so tests need no threads or sleeps beyond the scheduled times.
"""

from __future__ import annotations

import base64
import binascii
import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

API = "/MAAS/api/2.0/"
LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
CREATED_FORMAT = "%a, %d %b. %Y %H:%M:%S"
STATUS_CODES = {"New": 0, "Ready": 4, "Deployed": 6, "Broken": 8, "Deploying": 9, "Allocated": 10}
STATUS_CODES["Failed deployment"] = 11


@dataclass
class Step:
    """One scripted thing that happens to a machine `after_s` seconds into its timeline."""

    after_s: float
    apply: Callable[[MaasApi, ApiMachine], None]
    label: str = ""


@dataclass
class ApiMachine:
    """A machine as MAAS holds it, plus its scripted timeline."""

    system_id: str
    hostname: str
    status_name: str = "Ready"
    owner: str | None = None
    tags: list[str] = field(default_factory=list)
    pool: str = "default"
    zone: str = "default"
    osystem: str = ""
    distro_series: str = ""
    ephemeral_deploy: bool = False
    error_description: str = ""
    status_message: str = ""
    timeline: list[Step] = field(default_factory=list)
    token_key: str = ""
    user_data: bytes | None = None
    deploy_params: dict[str, str] = field(default_factory=dict)
    _t0: float | None = None
    _done: int = 0

    def to_json(self) -> dict[str, Any]:
        """The object `machines read` returns (the fields fleet reads, in MAAS's shape)."""
        return {
            "system_id": self.system_id,
            "hostname": self.hostname,
            "fqdn": f"{self.hostname}.maas",
            "domain": {"name": "maas", "id": 0},
            "status": STATUS_CODES.get(self.status_name, 8),
            "status_name": self.status_name,
            "status_message": self.status_message,
            "owner": self.owner,
            "osystem": self.osystem,
            "distro_series": self.distro_series,
            "ephemeral_deploy": self.ephemeral_deploy,
            "tag_names": list(self.tags),
            "zone": {"id": 1, "name": self.zone, "description": "", "resource_uri": f"{API}zones/{self.zone}/"},
            "pool": {"id": 0, "name": self.pool, "description": "", "resource_uri": f"{API}resourcepool/0/"},
            "power_state": "on" if self.status_name in ("Deploying", "Deployed") else "off",
            "power_type": "ipmi",
            "error_description": self.error_description,
            "node_type": 0,
            "node_type_name": "Machine",
            "resource_uri": f"{API}machines/{self.system_id}/",
        }


# ---- timeline actions ------------------------------------------------------------------------------------


def status(name: str, message: str = "") -> Callable[[MaasApi, ApiMachine], None]:
    """MAAS changes the machine's status (with its "Node changed status" and status events)."""

    def apply(api: MaasApi, m: ApiMachine) -> None:
        old, m.status_name = m.status_name, name
        m.status_message = message or name
        api.add_event(m, "Node changed status", "DEBUG", f"From '{old}' to '{name}'")
        if name in ("Deployed", "Deploying"):
            api.add_event(m, name, "INFO", "")

    return apply


def ours(event_type: str, description: str, result: str | None = None) -> Callable[[MaasApi, ApiMachine], None]:
    """Our installer posts a status message (processed as MAAS's status worker does)."""

    def apply(api: MaasApi, m: ApiMachine) -> None:
        message: dict[str, Any] = {"event_type": event_type, "origin": "harmonic-installer", "name": "x"}
        message["description"] = description
        if result is not None:
            message["result"] = result
        api.status_message(m, message)

    return apply


def maas_event(type_: str, level: str, description: str = "") -> Callable[[MaasApi, ApiMachine], None]:
    """MAAS logs an event of its own (power, PXE, cloud-init's)."""

    def apply(api: MaasApi, m: ApiMachine) -> None:
        api.add_event(m, type_, level, description)

    return apply


def fail_deployment(error: str) -> Callable[[MaasApi, ApiMachine], None]:
    """MAAS gives up (power on failed, or the deploy timed out): Failed deployment with an error description."""

    def apply(api: MaasApi, m: ApiMachine) -> None:
        api.add_event(m, "Failed to power on node", "ERROR", error)
        m.error_description = error
        status("Failed deployment", error)(api, m)

    return apply


def install_success(
    release: str = "release-3.21.3.0-7+auto15", disk: str = "/dev/sda", *, at: float = 0.0, gap: float = 0.05
) -> list[Step]:
    """A whole successful install as MAAS logs it: Deployed at user-data fetch, then our start events."""
    descriptions = [
        "harmonic-install 1.0: installing Harmonic cOS",
        "check root, the target disk and the tools",
        "decide proxy use per server",
        "fetch and verify the vendor packages and the Apollo ISO",
        "downloading Apollo ISO: 900 MiB of 3,000 MiB (30%)",
        "install the vendor packages with dpkg",
        f"write the ISO to {disk} with ostree-production",
        "reboot into Harmonic cOS",
        f"Harmonic cOS {release} installed on {disk}",
    ]
    steps = [Step(at, status("Deployed"), "user-data fetched")]
    steps += [Step(at + gap * (i + 1), ours("start", d), d) for i, d in enumerate(descriptions)]
    return steps


def install_failure(
    cause: str, step: str = "download", exit_code: int = 4, *, at: float = 0.0, gap: float = 0.05
) -> list[Step]:
    """Deployed, a few steps, then the step's FAIL and the run's FAIL (what MAAS logs at ERROR)."""
    return [
        Step(at, status("Deployed")),
        Step(at + gap, ours("start", "harmonic-install 1.0: installing Harmonic cOS")),
        Step(at + 2 * gap, ours("start", "fetch and verify the vendor packages and the Apollo ISO")),
        Step(at + 3 * gap, ours("finish", cause, "FAIL")),
        Step(at + 4 * gap, ours("finish", f"FAILED at step {step}: {cause} (exit {exit_code})", "FAIL")),
    ]


def goes_silent(*, at: float = 0.0, gap: float = 0.05) -> list[Step]:
    """Deployed, starts, then never another word."""
    return [
        Step(at, status("Deployed")),
        Step(at + gap, ours("start", "harmonic-install 1.0: installing Harmonic cOS")),
        Step(at + 2 * gap, ours("start", "install the vendor packages with dpkg")),
    ]


# ---- the server --------------------------------------------------------------------------------------------


@dataclass
class MaasApi:
    """The REST API on 127.0.0.1 (a ThreadingHTTPServer in a daemon thread)."""

    consumer_key: str = "cK9fzjKaSV8MyhUvsd"
    token_key: str = "tKCXJF5Bmq3qpNa3JH"
    token_secret: str = "sBTHUxgPZe3gGZ3tfW5z64X5EjZaNRwu"
    username: str = "admin"
    machines: list[ApiMachine] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # name -> kernel_opts
    pools: set[str] = field(default_factory=lambda: {"default"})
    zones: set[str] = field(default_factory=lambda: {"default"})
    images: list[str] = field(default_factory=lambda: ["custom/harmonic-installer"])
    skew_s: float = 0.0
    config: dict[str, Any] = field(default_factory=lambda: {"kernel_opts": ""})  # maas get-config values
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path?query)
    deploys: list[str] = field(default_factory=list)  # system_ids, in order
    rejections: list[tuple[int, str]] = field(default_factory=list)
    _nonces: set[str] = field(default_factory=set)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _server: http.server.ThreadingHTTPServer | None = None

    # ---- lifecycle

    def start(self) -> MaasApi:
        """Listen on a free loopback port."""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                owner._handle(self, "GET")

            def do_POST(self) -> None:
                owner._handle(self, "POST")

            def date_time_string(self, timestamp: float | None = None) -> str:
                import email.utils

                return email.utils.formatdate(owner.now(), usegmt=True)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        """The MAAS URL as an operator gives it."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/MAAS/"

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        assert self._server is not None
        return int(self._server.server_address[1])

    def kernel_params(self, system_id: str, host_port: str) -> list[str]:
        """`harmonic.maas.*` parameters pointing a machine's installer at this server's status endpoint.

        `host_port` is how the machine reaches this server (e.g. a VM's forwarded address). The machine's
        token key (MAAS identifies the node by it) is set here if it has none.
        """
        node = self.machine(system_id)
        node.token_key = node.token_key or f"node-{system_id}-token"
        return [
            f"harmonic.maas.endpoint=http://{host_port}/MAAS/metadata/status/{system_id}",
            f"harmonic.maas.consumer_key=node-{system_id}-consumer",
            f"harmonic.maas.token_key={node.token_key}",
            "harmonic.maas.token_secret=node-secret",
        ]

    @property
    def api_key(self) -> str:
        """consumer:token:secret."""
        return f"{self.consumer_key}:{self.token_key}:{self.token_secret}"

    def now(self) -> float:
        """The server's clock."""
        return time.time() + self.skew_s

    def machine(self, system_id: str) -> ApiMachine:
        """A machine by system_id."""
        return next(m for m in self.machines if m.system_id == system_id)

    def start_timeline(self, system_id: str) -> None:
        """Start a machine's timeline now (for watching machines deployed 'earlier')."""
        with self._lock:
            self.machine(system_id)._t0 = time.monotonic()

    # ---- events

    def add_event(self, m: ApiMachine, type_: str, level: str, description: str) -> None:
        """Log an event for a machine."""
        with self._lock:
            self.events.append(
                {
                    "username": m.owner or "unknown",
                    "node": m.system_id,
                    "hostname": m.hostname,
                    "id": len(self.events) + 1,
                    "level": level,
                    "created": datetime.fromtimestamp(self.now(), timezone.utc).strftime(CREATED_FORMAT),
                    "type": type_,
                    "description": description,
                }
            )

    def status_message(self, m: ApiMachine, message: dict[str, Any]) -> None:
        """What MAAS's status worker does with one status message (api_twisted.py `_processMessage`)."""
        result = message.get("result")
        failed = result in ("FAIL", "FAILURE")
        if message.get("files") and m.ephemeral_deploy:
            return  # no installation script set for an in-memory deploy: the whole message is rolled back
        if message["event_type"] != "start" and not failed:
            return
        if m.status_name == "Deploying":
            type_, level = (
                ("Node installation", "DEBUG")
                if result in ("SUCCESS", None)
                else ("Node installation failure", "ERROR")
            )
        elif m.status_name == "Deployed" and result == "FAIL":
            type_, level = "Node post-installation failure", "ERROR"
        else:
            type_, level = "Node status event", "DEBUG"
        self.add_event(m, type_, level, f"'{message['origin']}' {message['description']}")

    def _advance(self) -> None:
        now = time.monotonic()
        for m in self.machines:
            while m._t0 is not None and m._done < len(m.timeline) and now >= m._t0 + m.timeline[m._done].after_s:
                m.timeline[m._done].apply(self, m)
                m._done += 1

    # ---- HTTP

    def _answer(
        self,
        req: http.server.BaseHTTPRequestHandler,
        status_code: int,
        body: Any,
        content_type: str = "application/json",
    ) -> None:
        data = (json.dumps(body) if content_type == "application/json" else str(body)).encode()
        if status_code >= 400:
            self.rejections.append((status_code, data.decode()))
        try:
            req.send_response(status_code)
            req.send_header("Content-Type", content_type)
            req.send_header("Content-Length", str(len(data)))
            if status_code == 401:
                req.send_header("WWW-Authenticate", 'OAuth realm="OAuth"')
            req.end_headers()
            req.wfile.write(data)
        except OSError:
            pass

    def _handle(self, req: http.server.BaseHTTPRequestHandler, method: str) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        parts = urlsplit(req.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        form = parse_qs(raw.decode("ascii", "replace"), keep_blank_values=True) if method == "POST" else {}
        with self._lock:
            self.requests.append((method, req.path))
            self._advance()
            status_match = re.fullmatch(r"/MAAS/metadata/status/([\w-]+)", parts.path)
            if status_match and method == "POST":
                self._status_endpoint(req, req.headers.get("Authorization"), raw)
                return
            problem = self._check_oauth(req.headers.get("Authorization"))
            if problem:
                self._answer(req, 401, f"Authorization Error: {problem}", "text/plain")
                return
            if not parts.path.startswith(API):
                self._answer(req, 404, "Not Found", "text/plain")
                return
            self._route(req, method, parts.path[len(API) :], query, form)

    def _status_endpoint(self, req: http.server.BaseHTTPRequestHandler, header: str | None, raw: bytes) -> None:
        token = re.search(r'oauth_token="([^"]*)"', header or "")
        node = next(
            (m for m in self.machines if token and m.token_key and m.token_key == unquote(token.group(1))), None
        )
        self._answer(req, 204, "", "text/plain")
        if node is None:
            return  # MAAS drops messages whose token it does not know
        try:
            message = json.loads(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return
        if isinstance(message, dict) and all(
            isinstance(message.get(k), str) for k in ("event_type", "origin", "name", "description")
        ):
            self.status_message(node, message)

    def _check_oauth(self, header: str | None) -> str:
        if not header or not header.startswith("OAuth "):
            return "'Missing OAuth parameters'"
        params: dict[str, str] = {}
        for part in header[len("OAuth ") :].split(","):
            key, _, value = part.strip().partition("=")
            params[key] = unquote(value.strip('"'))
        if params.get("oauth_consumer_key") != self.consumer_key:
            return "Invalid API key."
        if params.get("oauth_token") != self.token_key:
            return f"'Invalid access token: {params.get('oauth_token')}'"
        if (
            params.get("oauth_signature_method") != "PLAINTEXT"
            or params.get("oauth_signature") != f"&{self.token_secret}"
        ):
            return "'Invalid signature.'"
        try:
            stamp = int(params.get("oauth_timestamp", ""))
        except ValueError:
            return "'Missing OAuth parameters'"
        if abs(stamp - self.now()) > 300:
            now = int(self.now())
            return f"'Expired timestamp: given {stamp} and now {now} has a greater difference than threshold 300'"
        nonce = params.get("oauth_nonce", "")
        if not nonce or nonce in self._nonces:
            return "'Nonce already used'"
        self._nonces.add(nonce)
        return ""

    def _route(
        self,
        req: http.server.BaseHTTPRequestHandler,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
    ) -> None:
        op = (query.get("op") or [""])[0]
        if method == "GET" and path == "users/" and op == "whoami":
            self._answer(
                req,
                200,
                {
                    "username": self.username,
                    "email": f"{self.username}@example.com",
                    "is_superuser": True,
                    "is_local": True,
                },
            )
        elif method == "GET" and path == "machines/":
            self._machines_read(req, query)
        elif method == "POST" and re.fullmatch(r"machines/[\w-]+/", path) and op == "deploy":
            self._deploy(req, path.split("/")[1], form)
        elif method == "GET" and path == "events/" and op == "query":
            self._events_query(req, query)
        elif method == "GET" and re.fullmatch(r"tags/[^/]+/", path):
            name = unquote(path.split("/")[1])
            if name not in self.tags:
                self._answer(req, 404, "No Tag matches the given query.", "text/plain")
            else:
                self._answer(
                    req,
                    200,
                    {
                        "name": name,
                        "definition": "",
                        "comment": "",
                        "kernel_opts": self.tags[name],
                        "resource_uri": f"{API}tags/{name}/",
                    },
                )
        elif method == "GET" and path == "maas/" and op == "get_config":
            name = (query.get("name") or [""])[0]
            self._answer(req, 200, self.config.get(name))
        elif method == "GET" and path == "boot-resources/":
            items = [
                {
                    "id": i + 1,
                    "type": "Uploaded",
                    "name": n,
                    "architecture": "amd64/generic",
                    "resource_uri": f"{API}boot-resources/{i + 1}/",
                }
                for i, n in enumerate(self.images)
            ]
            self._answer(req, 200, items)
        else:
            self._answer(req, 404, "Not Found", "text/plain")

    def _machines_read(self, req: http.server.BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        errors: dict[str, list[str]] = {}
        unknown_tags = [t for t in query.get("tags", []) if t not in self.tags]
        if unknown_tags:
            names = ", ".join(f"'{t}'" for t in unknown_tags)
            errors["tags"] = [f"No such tag(s): {names}."]
        for key, known in (("pool", self.pools), ("zone", self.zones)):
            missing = [v for v in query.get(key, []) if v not in known]
            if missing:
                errors[key] = [f"No such {key}(s): {', '.join(missing)}."]
        if errors:
            self._answer(req, 400, errors)
            return
        result = []
        for m in self.machines:
            if "id" in query and m.system_id not in query["id"]:
                continue
            if "hostname" in query and m.hostname not in query["hostname"]:
                continue
            if not all(t in m.tags for t in query.get("tags", [])):
                continue
            if "pool" in query and m.pool not in query["pool"]:
                continue
            if "zone" in query and m.zone not in query["zone"]:
                continue
            result.append(m.to_json())
        self._answer(req, 200, result)

    def _deploy(self, req: http.server.BaseHTTPRequestHandler, system_id: str, form: dict[str, list[str]]) -> None:
        m = next((x for x in self.machines if x.system_id == system_id), None)
        if m is None:
            self._answer(req, 404, "No Machine matches the given query.", "text/plain")
            return
        params = {k: v[0] for k, v in form.items()}
        if params.get("install_kvm", "").lower() in ("true", "1"):
            self._answer(req, 400, "Support for install_kvm allocation parameter has been removed.", "text/plain")
            return
        if m.status_name == "Ready":
            m.status_name, m.owner = "Allocated", self.username
        if m.status_name != "Allocated":
            self._answer(req, 409, f"Can't deploy a machine that is in the '{m.status_name}' state", "text/plain")
            return
        series = params.get("distro_series", "jammy")
        known = {"jammy", "ubuntu/jammy", "noble", "ubuntu/noble"}
        known |= set(self.images) | {i.removeprefix("custom/") for i in self.images}
        if series not in known:
            self._answer(req, 400, {"distro_series": [f"'{series}' is not a valid distro_series."]})
            return
        if "user_data" in params:
            try:
                m.user_data = base64.b64decode(params["user_data"], validate=True)
            except (binascii.Error, ValueError):
                self._answer(req, 400, {"user_data": ["not base64"]})
                return
        m.deploy_params = params
        m.ephemeral_deploy = params.get("ephemeral_deploy", "").lower() in ("true", "1")
        m.osystem, m.distro_series = (
            ("custom", series.removeprefix("custom/"))
            if series.removeprefix("custom/") in {i.removeprefix("custom/") for i in self.images}
            else ("ubuntu", series.removeprefix("ubuntu/"))
        )
        m.status_name = "Deploying"
        self.add_event(m, "Deploying", "INFO", "")
        self.add_event(m, "Node powered on", "DEBUG", "")
        self.deploys.append(system_id)
        m._t0 = time.monotonic()
        self._answer(req, 200, m.to_json())

    def _events_query(self, req: http.server.BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        def one(name: str) -> str | None:
            return query[name][0] if name in query else None

        level = one("level") or "INFO"
        if level not in LEVELS:
            self._answer(req, 400, f"Unrecognised log level: {level}", "text/plain")
            return
        limit = int(one("limit") or 100)
        if limit > 1000:
            self._answer(req, 400, f"Requested number of events {limit} is greater than limit: 1000", "text/plain")
            return
        limit = max(limit, 1)
        after, before = one("after"), one("before")
        if after is not None and before is not None:
            self._answer(
                req, 400, "There is undetermined behaviour when both `after` and `before` are specified.", "text/plain"
            )
            return
        events = [e for e in self.events if LEVELS[e["level"]] >= LEVELS[level]]
        if "id" in query:
            events = [e for e in events if e["node"] in query["id"]]
        if "hostname" in query:
            events = [e for e in events if e["hostname"] in query["hostname"]]
        if after is None and before is None:
            chosen = sorted(events, key=lambda e: -e["id"])[:limit]
        elif after is None:
            chosen = sorted((e for e in events if e["id"] < int(str(before))), key=lambda e: -e["id"])[:limit]
        else:
            chosen = list(reversed(sorted((e for e in events if e["id"] > int(after)), key=lambda e: e["id"])[:limit]))
        self._answer(req, 200, {"count": len(chosen), "events": chosen, "next_uri": "", "prev_uri": None})


@contextmanager
def running(**kwargs: Any) -> Iterator[MaasApi]:
    """A started MaasApi, stopped afterwards."""
    api = MaasApi(**kwargs).start()
    try:
        yield api
    finally:
        api.stop()
