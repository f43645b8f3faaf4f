"""Kept-alive HTTP/1.1 connections to each tenant's Orthanc, for the platform's hot paths (frames, sync, archive).

The standard library's client over one small pool per tenant and process: a viewer's frame is
fetched hundreds of times a minute, and the sync and the archive make a few calls per stored
instance; a general-purpose client's per-request work (URL objects, hooks, transports) cost
several times the CPU of the call itself (measured: a GET of an instance's file 0.9-1.4 ms of the
caller's CPU through httpx, 0.13 ms here). Callers get Orthanc's status and headers with the body
still unread, and map transport failures (OSError, http.client.HTTPException) to their own errors.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote, urlencode, urlsplit

from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
# Idle connections kept per tenant and process: a viewer opens 6 at once, and a web process serves a few.
MAX_IDLE_CONNECTIONS = 16
# A connection that failed before any answer came back (Orthanc closed it while idle) is replaced
# and the request sent once more: GETs are safe to repeat, and so is storing an instance (Orthanc
# keeps one copy per SOP Instance UID).
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionError)


def orthanc_query(params) -> str:
    # Orthanc splits "viewport=32,32" and "window=40,400,linear" before decoding: commas stay literal.
    return urlencode(list(params), safe=",")


def _header_lines_parsed(lines: list[bytes]) -> http.client.HTTPMessage:
    """Header lines as http.client's message type, without the email package's parser: that parser also reads a
    multipart answer's (empty) body and compiles a regular expression for each new boundary, and Orthanc's frames
    all come with a new one (measured: a third of the web process's CPU per frame)."""
    fields: list[list[str]] = []
    for raw in lines:
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if not line:
            continue
        if line[0] in " \t" and fields:
            # An obsolete folded line continues the previous header's value.
            fields[-1][1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise http.client.HTTPException(f"malformed header line from the image store: {line[:80]!r}")
        fields.append([name, value.strip()])
    message = http.client.HTTPMessage()
    for name, value in fields:
        message[name] = value
    return message


class _Answer(http.client.HTTPResponse):
    """http.client's response with the headers parsed by _header_lines_parsed; the rest is its begin() as it stands
    in Python 3.11 (status line, 1xx answers skipped, framing decided from the headers)."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _header_lines_parsed(http.client._read_headers(self.fp))
        transfer_encoding = self.headers.get("transfer-encoding")
        self.chunked = bool(transfer_encoding) and transfer_encoding.lower() == "chunked"
        if self.chunked:
            self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        no_body = status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200
        if no_body or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


class _Connection(http.client.HTTPConnection):
    response_class = _Answer

    def connect(self) -> None:
        # A short connect timeout (an Orthanc that is down answers 503 quickly), a long read timeout
        # (a series' metadata takes Orthanc seconds to build).
        self.sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_S)
        self.sock.settimeout(READ_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _TlsConnection(http.client.HTTPSConnection):
    response_class = _Answer

    def connect(self) -> None:
        self.timeout = CONNECT_TIMEOUT_S
        super().connect()
        self.sock.settimeout(READ_TIMEOUT_S)


class _Pool:
    """Kept-alive connections to one tenant's Orthanc, shared by the threads of one process."""

    def __init__(self, http_url: str, username: str, password: str) -> None:
        url = urlsplit(http_url)
        self.tls = url.scheme == "https"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {credentials}", "Accept-Encoding": "identity"}
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection still open (and True), else a new one (and False)."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                factory = _TlsConnection if self.tls else _Connection
                return factory(self.host, self.port, timeout=READ_TIMEOUT_S), False
            if _still_open(connection):
                return connection, True
            connection.close()

    def give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    # Between answers nothing is due from Orthanc: a readable socket means it closed its end
    # (its keep-alive timeout is a second or two), so the connection is not worth a failed send.
    if connection.sock is None:
        return False
    try:
        readable, _, _ = select.select([connection.sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


# Keyed by process too: connections must not cross a fork.
_pools: dict[tuple[int, int, str, str], _Pool] = {}
_pools_lock = threading.Lock()


def _pool(tenant: Tenant) -> _Pool:
    endpoint = orthanc_endpoint(tenant)
    key = (os.getpid(), tenant.pk, endpoint.http_url, endpoint.password)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = _Pool(endpoint.http_url, endpoint.username, endpoint.password)
    return pool


class OrthancResponse:
    """Orthanc's answer with its body still unread; the connection goes back to the pool once it is read."""

    def __init__(self, pool: _Pool, connection: http.client.HTTPConnection, answer: http.client.HTTPResponse):
        self._pool = pool
        self._connection = connection
        self._answer = answer
        self.status_code = answer.status
        self.headers = answer.headers

    def iter_raw(self, chunk_bytes: int) -> Iterator[bytes]:
        while chunk := self._answer.read(chunk_bytes):
            yield chunk
        if self._answer.length:
            # http.client's read(amt) ends quietly when the connection closes before Content-Length
            # (Orthanc killed mid-answer): a short body must never pass for the whole file.
            raise http.client.IncompleteRead(b"", self._answer.length)

    def read(self) -> bytes:
        return self._answer.read()

    def json(self):
        return json.loads(self.read())

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._answer.isclosed() and not self._answer.will_close:
            # Read to the end: the connection is ready for the next request.
            self._pool.give_back(connection)
        else:
            # Abandoned mid-body (the client went away) or Orthanc closes it: never reuse.
            self._answer.close()
            connection.close()


def _send(pool: _Pool, method: str, target: str, headers: dict[str, str], body: bytes | None) -> OrthancResponse:
    while True:
        connection, reused = pool.take()
        try:
            connection.request(method, target, body=body, headers=headers)
            return OrthancResponse(pool, connection, connection.getresponse())
        except _STALE_CONNECTION_ERRORS:
            connection.close()
            if not reused:
                raise
        except BaseException:
            connection.close()
            raise


def orthanc_request(
    tenant: Tenant,
    method: str,
    path: str,
    *,
    params=(),
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> OrthancResponse:
    """Send one request to the tenant's Orthanc; returns once its status and headers are in, the body unread.

    Raises OSError or http.client.HTTPException when Orthanc cannot be reached or answers garbage.
    """
    pool = _pool(tenant)
    sent = dict(pool.headers)
    if headers:
        sent.update(headers)
    # UIDs from a URL that the index did not check arrive decoded: encode them again.
    target = quote(f"{pool.prefix}{path}", safe="/,")
    if query := orthanc_query(params):
        target += f"?{query}"
    return _send(pool, method, target, sent, body)
