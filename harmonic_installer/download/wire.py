"""A response body read straight from the socket into one reused buffer (plain HTTP/1.x with a length).

httpx hands the body over in small fresh `bytes` objects, each copied from the socket by h11 and again by
the caller; for a multi-GB ISO that per-chunk work, not hashing, was most of the gap to `curl -o`. Here
httpx still sends the request, follows the redirects and parses the headers; once the status line and
headers are in, the rest of a plain (not TLS), fixed-length HTTP/1.x body is read with `recv_into` into one
buffer. Anything else (TLS, chunked, no length, an injected test transport) goes through `iter_raw()`.

The connection is never reused after a direct read (httpcore still thinks the body is unread and closes it).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx  # noqa: TID251  # download owner: the response and its transport errors (DESIGN.md)

BUFFER = 1024 * 1024  # one reused receive buffer: large reads, few system calls


def body_chunks(resp: httpx.Response, *, read_timeout_s: float, buffer: int = BUFFER) -> Iterator[bytes | memoryview]:
    """The raw body of `resp`, chunk by chunk; a chunk is valid only until the next one is asked for.

    Errors are those of `iter_raw()`, so a caller cannot tell the two paths apart.

    Raises:
        httpx.ReadTimeout: no byte for `read_timeout_s` seconds.
        httpx.ReadError: the connection failed (reset, ...).
        httpx.RemoteProtocolError: the server closed the connection before the announced length.
    """
    raw = resp.iter_raw()
    length = _direct_length(resp)
    sock = _plain_socket(resp) if length is not None else None
    if sock is None or length is None:
        yield from raw
        return
    try:
        first = next(raw, b"")  # what h11 already holds (all of its buffer, up to the length)
        if first:
            yield first
        left = length - len(first)
        view = memoryview(bytearray(buffer))
        sock.settimeout(read_timeout_s)
        recv_into = sock.recv_into
        while left > 0:
            try:
                n = recv_into(view, min(left, buffer))
            except TimeoutError as exc:  # socket.timeout is TimeoutError on 3.10
                raise httpx.ReadTimeout(f"no data for {read_timeout_s:g} s") from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            if n == 0:  # the words of h11 (the general path), so both paths report a cut-off alike
                raise httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body "
                    f"(received {length - left} bytes, expected {length})"
                )
            left -= n
            yield view[:n]
    finally:
        close = getattr(raw, "close", None)  # a generator: closing it lets httpcore see an unfinished body
        if close is not None:
            close()  # ... and close the connection instead of pooling it


def _direct_length(resp: httpx.Response) -> int | None:
    """The body's length when it may be read directly: HTTP/1.x, one Content-Length, no transfer coding."""
    if resp.http_version not in ("HTTP/1.1", "HTTP/1.0") or resp.request.method == "HEAD":
        return None
    if "transfer-encoding" in resp.headers or resp.status_code in (204, 304):
        return None
    values = resp.headers.get_list("content-length")
    if len(values) != 1 or not values[0].isdigit():
        return None
    return int(values[0])


def _plain_socket(resp: httpx.Response) -> socket.socket | None:
    """The response's own TCP socket, if it is a plain one (not TLS) that httpcore exposes."""
    stream = resp.extensions.get("network_stream")
    get_extra_info = getattr(stream, "get_extra_info", None)
    if get_extra_info is None:
        return None
    sock = get_extra_info("socket")
    if type(sock) is not socket.socket:  # ssl.SSLSocket (a subclass) and anything else: the general path
        return None
    return sock
