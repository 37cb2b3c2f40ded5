"""A counting proxy in front of moto's server (tests/loopback_aws.py), for the bench.

The proxy parses just enough HTTP/1.1 to see where each request starts and how long its body is, records
every request (service from the SigV4 scope, operation from X-Amz-Target or S3's method and query, body
bytes), and forwards the bytes unchanged. It can also answer GET/HEAD of chosen S3 objects itself, from a
local file with `sendfile`, honouring Range and If-Match: moto reads a whole object into memory for every
ranged GET (1 GB per 8-16 MB part), which would make its server, not the client under test, the bottleneck.
"""

from __future__ import annotations

import email.utils
import os
import re
import socket
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.loopback_aws import operation_of, service_of

_PIECE = 1 << 16


@dataclass(frozen=True)
class Seen:
    """One request as the proxy received it."""

    time: float
    service: str
    operation: str
    method: str
    target: str
    body_bytes: int
    body_start: bytes = b""  # the first 256 bytes of the body


@dataclass(frozen=True)
class Served:
    """An S3 object the proxy answers itself, from a local file."""

    path: Path
    size: int
    etag: str
    modified: float
    crc64nvme: str | None = None


class CountingProxy:
    """A loopback HTTP/1.1 proxy that records every request and forwards it byte for byte."""

    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)
        self._upstream = (up.hostname or "127.0.0.1", up.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._served: dict[str, Served] = {}
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="bench-proxy", daemon=True).start()

    # what it saw

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def mark(self) -> int:
        """A position in the record, for `since`."""
        with self._lock:
            return len(self._seen)

    def since(self, mark: int) -> list[Seen]:
        with self._lock:
            return self._seen[mark:]

    def serve(self, bucket: str, key: str, path: Path, crc64nvme: str | None = None) -> None:
        """Answer GET/HEAD of s3://bucket/key from `path` (a multipart-style ETag, so no MD5 is implied), with
        S3's full-object CRC64NVME where given (sent, as S3 does, to whole-object requests asking for checksums)."""
        stat = path.stat()
        parts = max(1, -(-stat.st_size // (8 << 20)))
        etag = f'"{uuid.uuid4().hex}-{parts}"'
        with self._lock:
            self._served[f"{bucket}/{key}"] = Served(path, stat.st_size, etag, stat.st_mtime, crc64nvme)

    def close(self) -> None:
        self._closed = True
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                s.close()

    # the server

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.add(s)

    def _untrack(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        with suppress(OSError):
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._track(client)
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        reader = client.makefile("rb", buffering=_PIECE)
        try:
            while True:
                request_line = reader.readline(_PIECE)
                if not request_line:
                    return
                if not request_line.strip():
                    continue
                head = [request_line]
                headers: dict[str, str] = {}
                while True:
                    line = reader.readline(_PIECE)
                    if not line:
                        return
                    head.append(line)
                    if not line.strip():
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                method, target = request_line.decode("latin-1").split()[:2]
                service = service_of(headers.get("authorization", ""))
                served = self._served_for(service, method, target)
                if served is not None:
                    self._record(service, method, target, headers, b"", 0)
                    self._answer(client, method, headers, served)
                    continue
                if upstream is None:
                    upstream = socket.create_connection(self._upstream)
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._track(upstream)
                    threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
                upstream.sendall(b"".join(head))
                start, size = self._forward_body(reader, upstream, headers)
                self._record(service, method, target, headers, start, size)
        except OSError:
            return
        finally:
            with suppress(OSError):
                reader.close()
            if upstream is not None:
                self._untrack(upstream)
            self._untrack(client)

    def _forward_body(self, reader: Any, upstream: socket.socket, headers: dict[str, str]) -> tuple[bytes, int]:
        """Copy the request body (Content-Length or chunked) upstream; its first bytes and its size on the wire."""
        start = b""
        size = 0

        def send(data: bytes, *, framing: bool = False) -> None:
            nonlocal start, size
            upstream.sendall(data)
            if not framing and len(start) < 256:
                start += data[: 256 - len(start)]
            size += len(data)

        def copy(left: int) -> None:
            while left:
                piece = reader.read(min(left, _PIECE))
                if not piece:
                    raise OSError("client closed mid-body")
                send(piece)
                left -= len(piece)

        if "chunked" not in headers.get("transfer-encoding", "").lower():
            copy(int(headers.get("content-length") or 0))
            return start, size
        while True:
            size_line = reader.readline(_PIECE)
            send(size_line, framing=True)
            n = int(size_line.split(b";")[0].strip() or b"0", 16)
            if n == 0:
                while True:  # trailers up to the blank line
                    line = reader.readline(_PIECE)
                    send(line, framing=True)
                    if not line.strip():
                        return start, size
            copy(n + 2)  # data and its CRLF

    def _pump(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(_PIECE):
                client.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def _record(self, service: str, method: str, target: str, headers: dict[str, str], start: bytes, size: int) -> None:
        operation = operation_of(service, method, target, headers, start)
        seen = Seen(time.time(), service, operation, method, target, size, start)
        with self._lock:
            self._seen.append(seen)

    # S3 objects answered from local files

    def _served_for(self, service: str, method: str, target: str) -> Served | None:
        if service != "s3" or method not in ("GET", "HEAD") or not self._served:
            return None
        parts = urlsplit(target)
        if parts.query and "partNumber" in parse_qs(parts.query):
            return None
        with self._lock:
            return self._served.get(unquote(parts.path.lstrip("/")))

    def _answer(self, client: socket.socket, method: str, headers: dict[str, str], served: Served) -> None:
        common = [
            ("x-amz-request-id", uuid.uuid4().hex[:16]),
            ("Date", email.utils.formatdate(usegmt=True)),
        ]
        if_match = headers.get("if-match")
        if if_match is not None and if_match.strip() not in (served.etag, "*"):
            body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PreconditionFailed</Code></Error>"
            _send_head(client, "412 Precondition Failed", [*common, ("Content-Length", str(len(body)))])
            client.sendall(b"" if method == "HEAD" else body)
            return
        first, last = 0, served.size - 1
        status = "200 OK"
        extra: list[tuple[str, str]] = []
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("range", "").strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                first = int(m.group(1))
                last = min(int(m.group(2)), served.size - 1) if m.group(2) else served.size - 1
            else:
                first = max(0, served.size - int(m.group(2)))
            status = "206 Partial Content"
            extra.append(("Content-Range", f"bytes {first}-{last}/{served.size}"))
        elif served.crc64nvme and headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            extra += [("x-amz-checksum-crc64nvme", served.crc64nvme), ("x-amz-checksum-type", "FULL_OBJECT")]
        length = last - first + 1
        _send_head(
            client,
            status,
            [
                *common,
                ("Content-Type", "application/x-gzip"),
                ("Content-Length", str(length)),
                ("ETag", served.etag),
                ("Last-Modified", email.utils.formatdate(served.modified, usegmt=True)),
                ("Accept-Ranges", "bytes"),
                *extra,
            ],
        )
        if method == "HEAD":
            return
        with open(served.path, "rb") as f:
            offset, left = first, length
            while left:
                sent = os.sendfile(client.fileno(), f.fileno(), offset, min(left, 1 << 24))
                if sent == 0:
                    raise OSError("client went away")
                offset += sent
                left -= sent


def _send_head(client: socket.socket, status: str, headers: list[tuple[str, str]]) -> None:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), "", ""]
    client.sendall("\r\n".join(lines).encode("latin-1"))
