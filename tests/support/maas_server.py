"""A stand-in for MAAS's metadata status endpoint, for unit, integration and VM tests.

`POST /MAAS/metadata/status/<system_id>` as MAAS's StatusHandler accepts it: an ASCII JSON object with
`event_type`, `origin`, `name`, `description` (and `timestamp`, `result`, `files`), signed with OAuth 1.0
PLAINTEXT. Unlike MAAS (which only looks at the token key) it checks the whole signature, the timestamp
against its own clock (to exercise the clock-skew correction) and that no nonce is used twice.

Like MAAS with a machine deployed in memory (the default, `in_memory_deploy=True`), a message that carries
`files` is answered 204 and then rolled back whole (MAAS stores files into the current installation script
set, which such a deploy does not have): it lands in `rolled_back`, never in `events`. `event_log()` is what
the operator sees in MAAS's event log for a Deployed machine (`maas <profile> events query id=<system_id>
level=DEBUG`): starts at DEBUG, FAILs at ERROR, nothing else. `tls=` serves https with that context.

It can be told to misbehave: `fail_with = 500`, `delay_s = 3` (slow), `skew_s = 3600` (its clock, and its
`Date` header, run an hour ahead). `closed_port()` gives a port where nothing listens (MAAS down).

Use from a VM test: start it on loopback, forward a guest address to `server.port`, then give the guest
either `server.cloud_config(endpoint)` as /etc/cloud/cloud.cfg.d/91_kernel_cmdline_url.cfg (what MAAS
does) or `server.kernel_params(endpoint)` on the kernel command line; afterwards `server.events` holds
what arrived and `server.assert_well_formed()` checks nesting and order.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http.server
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

PATH = re.compile(r"^/MAAS/metadata/status/(?P<system_id>[\w-]+)$")
REQUIRED = ("event_type", "origin", "name", "description")
RESULTS = {"SUCCESS", "WARN", "FAIL", "FAILURE"}
TIMESTAMP_WINDOW_S = 300


@dataclass
class Rejection:
    """A request the server refused, and why."""

    status: int
    reason: str


@dataclass
class MaasServer:
    """The metadata status endpoint on 127.0.0.1 (a ThreadingHTTPServer in a daemon thread)."""

    system_id: str = "xk4p7q"
    consumer_key: str = "Dj9fzjKaSV8MyhUvsd"
    token_key: str = "gsCXJF5Bmq3qpNa3JH"
    token_secret: str = "dBTHUxgPZe3gGZ3tfW5z64X5EjZaNRwu"
    consumer_secret: str = ""
    host: str = "127.0.0.1"
    fail_with: int | None = None  # answer every request with this status (e.g. 500)
    delay_s: float = 0.0  # wait this long before answering
    skew_s: float = 0.0  # the server's clock (and Date header) is this far ahead of ours
    in_memory_deploy: bool = True  # a message with `files` is rolled back whole, as MAAS does for these deploys
    tls: ssl.SSLContext | None = None  # serve https with this server context
    events: list[dict[str, Any]] = field(default_factory=list)
    rolled_back: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    _nonces: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: http.server.ThreadingHTTPServer | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> MaasServer:
        """Listen on a free loopback port."""
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                owner._handle(self)

            def do_GET(self) -> None:
                self._plain(405, "only POST")

            def _plain(self, status: int, text: str) -> None:
                owner._answer(self, status, text)

            def date_time_string(self, timestamp: float | None = None) -> str:
                return email.utils.formatdate(owner.now(), usegmt=True)  # the Date header: the server's clock

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="maas-server", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        """Stop listening (the port is closed afterwards: MAAS is then 'down')."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> MaasServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The loopback port it listens on."""
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The status endpoint URL for this machine, as MAAS would give it."""
        return self.endpoint(f"{self.host}:{self.port}")

    def endpoint(self, host_port: str) -> str:
        """The status URL as seen from elsewhere (e.g. a VM reaching this server through a forward)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host_port}/MAAS/metadata/status/{self.system_id}"

    # ---- what to give the machine -------------------------------------------------------------------------

    def cloud_config(self, endpoint: str | None = None) -> str:
        """A cloud.cfg.d file as MAAS's preseed reaches the ephemeral OS (yaml.safe_dump, block style)."""
        endpoint = endpoint or self.url
        maas_host = endpoint.split("/")[2]
        return (
            "#cloud-config\n"
            "datasource:\n"
            "  MAAS:\n"
            f"    consumer_key: {self.consumer_key}\n"
            f"    metadata_url: http://{maas_host}/MAAS/metadata/\n"
            f"    token_key: {self.token_key}\n"
            f"    token_secret: {self.token_secret}\n"
            "power_state:\n"
            "  condition: test ! -e /tmp/block-reboot\n"
            "  delay: now\n"
            "  mode: reboot\n"
            "  timeout: 1800\n"
            "reporting:\n"
            "  maas:\n"
            f"    consumer_key: {self.consumer_key}\n"
            f"    endpoint: {endpoint}\n"
            f"    token_key: {self.token_key}\n"
            f"    token_secret: {self.token_secret}\n"
            "    type: webhook\n"
            "rsyslog:\n"
            "  remotes:\n"
            f"    maas: {maas_host.split(':')[0]}:5247\n"
        )

    def kernel_params(self, endpoint: str | None = None) -> list[str]:
        """`harmonic.maas.*` kernel parameters pointing the installer at this server."""
        return [
            f"harmonic.maas.endpoint={endpoint or self.url}",
            f"harmonic.maas.consumer_key={self.consumer_key}",
            f"harmonic.maas.token_key={self.token_key}",
            f"harmonic.maas.token_secret={self.token_secret}",
        ]

    def environ(self, endpoint: str | None = None) -> dict[str, str]:
        """The same as HARMONIC_MAAS_* environment variables."""
        return {
            "HARMONIC_MAAS_ENDPOINT": endpoint or self.url,
            "HARMONIC_MAAS_CONSUMER_KEY": self.consumer_key,
            "HARMONIC_MAAS_TOKEN_KEY": self.token_key,
            "HARMONIC_MAAS_TOKEN_SECRET": self.token_secret,
        }

    # ---- what arrived -------------------------------------------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        """A copy of the accepted events, in arrival order."""
        with self._lock:
            return list(self.events)

    def names(self) -> list[tuple[str, str, str | None]]:
        """(event_type, name, result) of each accepted event."""
        return [(e["event_type"], e["name"], e.get("result")) for e in self.received()]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0) -> bool:
        """Wait until `predicate(events)` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.received()):
                return True
            time.sleep(0.02)
        return predicate(self.received())

    def files(self) -> dict[str, bytes]:
        """Every attached file MAAS kept, by path, decoded (none for an in-memory deploy: those roll back)."""
        return {f["path"]: base64.b64decode(f["content"]) for e in self.received() for f in e.get("files", [])}

    def event_log(self) -> list[tuple[str, str, str, str]]:
        """(level, type, action, description) of what MAAS's event log shows for a Deployed machine, in order.

        As MAAS's status worker and `add_event_to_node_event_log`: a `start` is a "Node status event" at DEBUG,
        a `finish` with result exactly FAIL a "Node post-installation failure" at ERROR ("FAILURE" a DEBUG
        status event); successful finishes and `progress` events are not logged at all. The action is the
        event's name; the description is "'<origin>' <description>".
        """
        shown = []
        for e in self.received():
            text = f"'{e['origin']}' {e['description']}"
            if e["event_type"] == "start":
                shown.append(("DEBUG", "Node status event", e["name"], text))
            elif e["event_type"] == "finish" and e.get("result") == "FAIL":
                shown.append(("ERROR", "Node post-installation failure", e["name"], text))
            elif e["event_type"] == "finish" and e.get("result") == "FAILURE":
                shown.append(("DEBUG", "Node status event", e["name"], text))
        return shown

    def assert_well_formed(
        self, parent: str = "harmonic-installer", events: list[dict[str, Any]] | None = None
    ) -> None:
        """Events (all received, or those given) nest under `parent`: it starts first and finishes last; every
        finish follows its start; a child finishes before its parent; a FAIL below bubbles up to the parent."""
        events = self.received() if events is None else events
        assert events, "no events arrived"
        assert (events[0]["event_type"], events[0]["name"]) == ("start", parent), events[0]
        open_: list[str] = []
        failed_below = False
        for event in events:
            name, kind = event["name"], event["event_type"]
            assert name == parent or name.startswith(parent + "/"), f"{name} is not under {parent}"
            if kind == "start":
                if name not in open_:
                    assert not open_ or name.startswith(open_[-1] + "/"), f"{name} started outside {open_[-1:]}"
                    open_.append(name)
                continue
            assert kind == "finish", event
            assert open_[-1:] == [name], f"finish of {name} while {open_} are open"
            open_.pop()
            if name != parent and event.get("result") == "FAIL":
                failed_below = True
            if name == parent:
                assert event is events[-1], "events after the parent's finish"
                if failed_below:
                    assert event.get("result") == "FAIL", "a failed step did not fail the parent"
        assert not open_, f"never finished: {open_}"

    # ---- the handler --------------------------------------------------------------------------------------

    def now(self) -> float:
        """The server's clock."""
        return time.time() + self.skew_s

    def _answer(self, req: http.server.BaseHTTPRequestHandler, status: int, text: str = "") -> None:
        body = text.encode()
        try:
            req.send_response(status)
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)
        except OSError:
            pass  # the client gave up (timed out): nothing to answer

    def _reject(self, req: http.server.BaseHTTPRequestHandler, status: int, reason: str) -> None:
        with self._lock:
            self.rejections.append(Rejection(status, reason))
        self._answer(req, status, reason)

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            self._reject(req, self.fail_with, "told to fail")
            return
        match = PATH.match(req.path)
        if not match or match.group("system_id") != self.system_id:
            self._reject(req, 404, f"no such status URL {req.path}")
            return
        problem = self._check_oauth(req.headers.get("Authorization"))
        if problem:
            self._reject(req, 401, problem)
            return
        try:
            message = json.loads(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            self._reject(req, 400, f"payload is not ASCII JSON: {exc}")
            return
        problem = _check_message(message)
        if problem:
            self._reject(req, 400, problem)
            return
        with self._lock:  # recorded before the answer so a test sees it once the client has its 204
            if message.get("files") and self.in_memory_deploy:
                self.rolled_back.append(message)  # no installation script set: the whole message is lost
            else:
                self.events.append(message)
        self._answer(req, 204)  # MAAS answers 204 whether or not the message is then stored

    def _check_oauth(self, header: str | None) -> str:
        if not header or not header.startswith("OAuth "):
            return "no OAuth Authorization header"
        params: dict[str, str] = {}
        for part in header[len("OAuth ") :].split(","):
            key, sep, value = part.strip().partition("=")
            if not sep or len(value) < 2 or value[0] != '"' or value[-1] != '"':
                return f"malformed OAuth parameter {part.strip()[:40]!r}"
            params[key] = unquote(value[1:-1])
        expected_sig = f"{_escape(self.consumer_secret)}&{_escape(self.token_secret)}"
        checks = {
            "oauth_signature_method": "PLAINTEXT",
            "oauth_consumer_key": self.consumer_key,
            "oauth_token": self.token_key,
            "oauth_signature": expected_sig,
        }
        for key, want in checks.items():
            if params.get(key) != want:
                return f"bad {key}"
        if params.get("oauth_version", "1.0") != "1.0":
            return "bad oauth_version"
        nonce = params.get("oauth_nonce", "")
        if not nonce:
            return "no oauth_nonce"
        with self._lock:
            if nonce in self._nonces:
                return "nonce used twice"
            self._nonces.add(nonce)
        try:
            stamp = int(params.get("oauth_timestamp", ""))
        except ValueError:
            return "bad oauth_timestamp"
        if abs(stamp - self.now()) > TIMESTAMP_WINDOW_S:
            return f"oauth_timestamp {stamp} is {stamp - self.now():+.0f} s off the server clock"
        return ""


def _escape(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="~")


def _check_message(message: object) -> str:
    if not isinstance(message, dict):
        return "payload is not a JSON object"
    missing = [k for k in REQUIRED if k not in message]
    if missing:
        return f"Missing parameter(s) {', '.join(missing)} in status message."
    if message["event_type"] not in {"start", "progress", "finish"}:
        return f"bad event_type {message['event_type']!r}"
    if not all(isinstance(message[k], str) and message[k] for k in REQUIRED):
        return "event_type, origin, name and description must be non-empty strings"
    if not isinstance(message.get("timestamp"), (int, float)):
        return "timestamp missing or not a number (MAAS needs it for the event log)"
    if "result" in message and message["result"] not in RESULTS:
        return f"bad result {message['result']!r}"
    if message["event_type"] == "finish" and "result" not in message:
        return "finish without result"
    for sent in message.get("files", []):
        if not isinstance(sent, dict) or not sent.get("path") or sent.get("encoding") != "base64":
            return "files need path and encoding base64"
        try:
            base64.b64decode(sent.get("content", ""), validate=True)
        except (binascii.Error, ValueError):
            return f"file {sent['path']} content is not base64"
    return ""


def closed_port() -> int:
    """A loopback port where nothing listens (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(**kwargs: Any) -> Iterator[MaasServer]:
    """A started MaasServer, stopped afterwards."""
    server = MaasServer(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
