"""A TCP fault proxy on loopback: an unreliable network and a busy AWS, between cloudtrain and an endpoint.

It listens on 127.0.0.1, parses just enough HTTP/1.1 to know where each request and response body starts
and ends, forwards everything else byte for byte to the real endpoint (moto's server, or the SageMaker
control plane stand-in in front of it), and on a schedule:

- drops the connection after N bytes of a request body (an upload cut off mid-way: the client sees a
  reset while sending, as when a NAT or a load balancer drops a long-lived connection);
- drops the connection after N bytes of a response body, with a FIN (a download cut off mid-way: the
  client has the status and headers, then the body ends early; botocore retries neither a streamed body
  nor, since it reads without checking Content-Length, notices a short JSON or XML one);
- answers in the endpoint's place with a throttling error: S3's `503 SlowDown` XML, the JSON services'
  `400 ThrottlingException`, the query services' (STS) `400 Throttling` XML;
- answers with any other error (action `error`), for instance one whose message echoes a credential;
- holds a response back for `seconds` before relaying it (action `delay`): a GET stuck in a socket read;
- adds response headers (action `add_headers`): what AWS sends and moto does not, such as the
  CRC64NVME checksum S3 computes for every object uploaded without one.

A schedule is a list of `Fault`s, each matching requests by service (from the SigV4 credential scope),
operation (`X-Amz-Target` for JSON services, inferred from method and query for S3) and a regex on the
request target; it lets `skip` matches pass, then acts on the next `times`. Every request is recorded
in `log` (with its body, but for S3's) and every fault counts its `hits`, so a test can check the faults
really happened and what was sent on the wire.

`Expect: 100-continue` is answered by the proxy itself and not forwarded, so it can see a request's
body (and cut it) before the endpoint does.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from tests.loopback_aws import operation_of, service_of

Action = Literal["drop_request", "drop_response", "throttle", "error", "add_headers", "delay"]
_CHUNK = 1 << 16
_HEAD_LIMIT = 1 << 16
_KEPT_BODY = 1 << 20  # request bodies kept in the log, but for S3's (uploads)


@dataclass(frozen=True)
class Request:
    """A request's head, as the proxy sees it."""

    method: str
    target: str  # path and query
    headers: dict[str, str]  # lower-case names

    @property
    def service(self) -> str:
        """The service the request is signed for (`s3`, `sagemaker`, `sts`, `logs` ...), '' if unsigned."""
        return service_of(self.headers.get("authorization", ""))

    @property
    def operation(self) -> str:
        """The API operation, as far as the head tells (S3's are inferred from the method and query)."""
        return operation_of(self.service, self.method, self.target, self.headers)


@dataclass
class Fault:
    """One line of a schedule: what to do to which requests, how many times."""

    action: Action
    service: str | None = None
    operation: str | None = None
    target: str | None = None  # regex searched in the request target (path and query)
    after: int = 0  # drop_*: body bytes let through before the connection is dropped
    skip: int = 0  # matching requests let through before acting
    times: int = 1  # matching requests acted on after that
    status: int = 400  # error: the status, error code and message answered
    code: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # add_headers: added to the response's head
    seconds: float = 0.0  # delay: how long the response is held back
    matched: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)

    def matches(self, request: Request) -> bool:
        return (
            (self.service is None or request.service == self.service)
            and (self.operation is None or request.operation == self.operation)
            and (self.target is None or re.search(self.target, request.target) is not None)
        )

    def take(self, request: Request) -> bool:
        """Whether to act on this request (counts it either way)."""
        if not self.matches(request):
            return False
        self.matched += 1
        if self.skip < self.matched <= self.skip + self.times:
            self.hits += 1
            return True
        return False

    def __str__(self) -> str:
        what = "/".join(p for p in (self.service, self.operation, self.target) if p) or "any"
        return f"{self.action}({what}, after={self.after}) hit {self.hits}/{self.times}"


@dataclass(frozen=True)
class Seen:
    """One request through the proxy and the fault applied to it, if any."""

    service: str
    operation: str
    method: str
    target: str
    fault: Action | None
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


class _Dropped(Exception):
    """The schedule dropped this connection."""


class FaultProxy:
    """The proxy: `with FaultProxy(upstream_url, faults) as proxy:` then point the client at `proxy.url`."""

    def __init__(self, upstream: str, faults: list[Fault] | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = list(faults or [])
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._open: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="faultproxy", daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.close()
        self._thread.join(5)

    def unfired(self) -> list[Fault]:
        """Faults that did not act as often as scheduled (a test whose faults never fired proves nothing)."""
        return [f for f in self.faults if f.hits < f.times]

    def seen(self, operation: str) -> list[Seen]:
        return [s for s in self.log if s.operation == operation]

    # -- plumbing ---------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="faultproxy-conn", daemon=True).start()

    @contextlib.contextmanager
    def _tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        with self._lock:
            self._open.add(sock)
        try:
            yield sock
        finally:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._tracked(client))
            reader = _Reader(client)
            try:
                while True:
                    head = reader.head()
                    if head is None:
                        return  # the client closed its keep-alive connection
                    request, raw_head = _parse_request(head)
                    fault = self._choose(request)
                    if request.headers.get("expect", "").lower() == "100-continue":
                        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                        raw_head = _without_header(raw_head, "expect")
                    dropping = fault is not None and fault.action == "drop_request"
                    body = reader.body(request.headers, limit=fault.after if dropping and fault else None)
                    kept = body if request.service != "s3" and len(body) <= _KEPT_BODY else b""
                    action = fault.action if fault else None
                    self.log.append(
                        Seen(request.service, request.operation, request.method, request.target, action, kept)
                    )
                    if dropping:
                        _reset(client)
                        raise _Dropped
                    if fault is not None and fault.action in ("throttle", "error"):
                        client.sendall(_error_response(request, fault))
                        continue
                    if upstream is None:
                        upstream = stack.enter_context(self._tracked(socket.create_connection(self.upstream)))
                        upstream_reader = _Reader(upstream)
                    if fault is not None and fault.action == "delay":
                        time.sleep(fault.seconds)
                    upstream.sendall(raw_head + body)
                    response_head = upstream_reader.head()
                    if response_head is None:
                        return
                    if fault is not None and fault.action == "add_headers":
                        added = "".join(f"{name}: {value}\r\n" for name, value in fault.headers.items())
                        response_head = response_head[:-2] + added.encode() + b"\r\n"
                    client.sendall(response_head)
                    status, response_headers = _parse_response(response_head)
                    limit = fault.after if fault is not None and fault.action == "drop_response" else None
                    complete = upstream_reader.relay_body(client, request.method, status, response_headers, limit=limit)
                    if limit is not None:
                        _close_gently(client)
                        raise _Dropped
                    if not complete or response_headers.get("connection", "").lower() == "close":
                        return
            except (_Dropped, OSError, ValueError):
                return

    def _choose(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.take(request):
                    return fault
        return None


class _Reader:
    """Buffered reads of heads and bodies from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(_CHUNK)
        self.buffer += data
        return bool(data)

    def head(self) -> bytes | None:
        """Bytes up to and including the blank line; None at a clean end of stream before any byte."""
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _HEAD_LIMIT:
                raise ValueError("head too long")
            if not self._fill():
                if self.buffer:
                    raise ValueError("connection closed inside a head")
                return None
        end = self.buffer.index(b"\r\n\r\n") + 4
        head, self.buffer = self.buffer[:end], self.buffer[end:]
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise ValueError("connection closed inside a body")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise ValueError("connection closed inside a chunked body")
        end = self.buffer.index(b"\r\n") + 2
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def chunks(self) -> Iterator[bytes]:
        """A chunked body's raw bytes (sizes, data and trailers), piece by piece."""
        while True:
            size_line = self.line()
            yield size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while (trailer := self.line()) != b"\r\n":
                    yield trailer
                yield b"\r\n"
                return
            yield self.exactly(size + 2)

    def body(self, headers: dict[str, str], limit: int | None = None) -> bytes:
        """A request body (Content-Length or chunked); with `limit`, at most that many bytes of it."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = b""
            for piece in self.chunks():
                out += piece
                if limit is not None and len(out) >= limit:
                    return out[:limit]
            return out
        length = int(headers.get("content-length", "0") or 0)
        return self.exactly(length if limit is None else min(length, limit))

    def relay_body(
        self, dest: socket.socket, method: str, status: int, headers: dict[str, str], limit: int | None
    ) -> bool:
        """Copy a response body to dest (at most `limit` bytes); False if it ran until the connection closed."""
        sent = 0

        def send(data: bytes) -> bool:
            nonlocal sent
            if limit is not None and sent + len(data) >= limit:
                dest.sendall(data[: limit - sent])
                sent = limit
                return False
            dest.sendall(data)
            sent += len(data)
            return True

        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            for piece in self.chunks():
                if not send(piece):
                    return True
            return True
        if "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                if not self.buffer and not self._fill():
                    raise ValueError("upstream closed inside a body")
                data, self.buffer = self.buffer[:left], self.buffer[left:]
                left -= len(data)
                if not send(data):
                    return True
            return True
        while self.buffer or self._fill():  # no length: the body runs until the connection closes
            data, self.buffer = self.buffer, b""
            if not send(data):
                return True
        return False


def _parse_request(head: bytes) -> tuple[Request, bytes]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    return Request(method, target, _headers(lines[1:])), head


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split(" ", 2)[1]), _headers(lines[1:])


def _headers(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _without_header(head: bytes, name: str) -> bytes:
    lines = head.split(b"\r\n")
    kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() != name.encode()]
    return b"\r\n".join(kept)


def _error_response(request: Request, fault: Fault) -> bytes:
    """What the endpoint's service answers when it throttles (or fails with the fault's error)."""
    throttling = fault.action == "throttle"
    if request.service == "s3":
        status = 503 if throttling else fault.status
        code = "SlowDown" if throttling else fault.code
        message = "Please reduce your request rate." if throttling else fault.message
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{_xml(message)}</Message>"
            "<RequestId>FAULTPROXY</RequestId></Error>"
        ).encode()
        content_type, extra = "application/xml", ""
    elif request.headers.get("x-amz-target") or "json" in request.headers.get("content-type", ""):
        status = 400 if throttling else fault.status
        code = "ThrottlingException" if throttling else fault.code
        message = "Rate exceeded" if throttling else fault.message
        body = json.dumps({"__type": code, "message": message}).encode()
        content_type, extra = "application/x-amz-json-1.1", f"x-amzn-ErrorType: {code}\r\n"
    else:  # query protocol (STS)
        status = 400 if throttling else fault.status
        code = "Throttling" if throttling else fault.code
        message = "Rate exceeded" if throttling else fault.message
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{_xml(message)}</Message>"
            "</Error><RequestId>FAULTPROXY</RequestId></ErrorResponse>"
        ).encode()
        content_type, extra = "text/xml", ""
    if request.method == "HEAD":
        body = b""  # S3 answers HEAD errors with the status alone
    head = (
        f"HTTP/1.1 {status} {'Slow Down' if status == 503 else 'Error'}\r\n"
        f"Content-Type: {content_type}\r\n{extra}x-amzn-RequestId: FAULTPROXY\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (what a dropped connection looks like to a sender)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _close_gently(sock: socket.socket) -> None:
    """End the stream (FIN) after what was sent, so the reader gets every byte and then an early end."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    sock.close()
