"""Streaming from a tenant's Orthanc to the client: never buffered, URLs rewritten to the platform's, gzip on request.

Orthanc's DICOMweb plugin writes absolute URLs (BulkDataURI, Content-Location) from the
`Forwarded` header it receives; we send a fixed placeholder host, so the one prefix to rewrite
is known in advance whatever address the tenant's Orthanc has.

The relay speaks HTTP/1.1 to Orthanc over tenants.orthanc_http's kept-alive connections: a viewer's
frame is a few hundred kilobytes fetched hundreds of times a minute, and a general-purpose client's
per-request work cost more CPU than the rest of the request once the access decision is cached.
"""

from __future__ import annotations

import base64
import hmac
import http.client
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.exceptions import APIException, NotAcceptable, NotFound, ParseError

from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint
from tenants.orthanc_http import OrthancResponse, orthanc_query, orthanc_request
from tenants.viewsets import NOT_FOUND_MESSAGE

logger = logging.getLogger(__name__)

_PLACEHOLDER_HOST = "orthanc.readroom.invalid"
ORTHANC_URL_PREFIX = f"https://{_PLACEHOLDER_HOST}/dicom-web/".encode()
_FORWARDED = f"host={_PLACEHOLDER_HOST};proto=https"
# A 512 x 512 CT frame in two reads; more would only grow what each streaming request holds.
CHUNK_BYTES = 256 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
# gzip level 3: on a series' metadata JSON (repetitive, megabytes) it is as fast as level 1 and a third
# smaller (measured here: 2.1 MB to 44 KB in 4.6 ms, against 69 KB in 5.1 ms); levels from 4 on cost more.
GZIP_LEVEL = 3


class OrthancUnreachable(APIException):
    status_code = 503
    default_detail = "The clinic's image store is not answering; try again shortly."


class OrthancFailed(APIException):
    status_code = 502
    default_detail = "The clinic's image store could not produce this representation."


def public_base_url(tenant: Tenant) -> str:
    return f"{settings.READROOM_PUBLIC_URL.rstrip('/')}/dicomweb/{tenant.slug}"


def _orthanc_reason(response: OrthancResponse) -> str:
    try:
        answer = response.json()
    except ValueError:
        return ""
    return str(answer.get("Details") or answer.get("Message") or "")[:300] if isinstance(answer, dict) else ""


def orthanc_open(tenant: Tenant, path: str, *, params=(), accept: str | None = None) -> OrthancResponse:
    """Send a GET to the tenant's Orthanc and return once the headers are in; the body is still unread."""
    headers = {"Forwarded": _FORWARDED}
    if accept:
        headers["Accept"] = accept
    try:
        response = orthanc_request(tenant, "GET", path, params=params, headers=headers)
    except (OSError, http.client.HTTPException) as error:
        logger.warning("tenant %s: Orthanc did not answer GET %s: %s", tenant.pk, path, error.__class__.__name__)
        raise OrthancUnreachable() from error
    if response.status_code < 400:
        return response
    try:
        reason = _orthanc_reason(response)
    except (OSError, http.client.HTTPException):
        reason = ""
    finally:
        response.close()
    if response.status_code == 404:
        # Same answer as a UID the index does not hold: nothing to learn from the difference.
        raise NotFound(NOT_FOUND_MESSAGE)
    if response.status_code in (400, 406, 415):
        if "content type" in reason or "transfer syntax" in reason.lower():
            raise NotAcceptable(f"The image store cannot produce this representation: {reason}")
        raise ParseError(f"The image store refused the request: {reason}" if reason else None)
    logger.warning("tenant %s: Orthanc answered HTTP %s for GET %s", tenant.pk, response.status_code, path)
    raise OrthancFailed()


def rewrite_chunks(chunks: Iterator[bytes], old: bytes, new: bytes) -> Iterator[bytes]:
    """Replace `old` by `new`, also where it straddles two chunks, holding back one chunk at a time.

    For a body that is not multipart (a series' metadata JSON); a multipart one has its URLs in its part
    headers only (rewrite_part_headers). A chunk without `old` goes out as the same object (no copy).
    """
    keep = len(old) - 1
    held = b""
    for chunk in chunks:
        # Pieces shorter than a match are joined first; between two longer ones, only a match across
        # the seam fits in these 2 * keep bytes, and then the two are rewritten as one.
        if len(held) < keep or len(chunk) < keep or old in held[-keep:] + chunk[:keep]:
            held += chunk
            continue
        yield held.replace(old, new)
        held = chunk
    if held:
        yield held.replace(old, new)


def rewrite_part_headers(chunks: Iterator[bytes], boundary: bytes, old: bytes, new: bytes) -> Iterator[bytes]:
    """Replace `old` by `new` in the part headers of a multipart body only, never in a part's content.

    A frame's or a bulk data's bytes are whatever the file holds, the placeholder URL's bytes included;
    only the part headers (Content-Location) carry Orthanc's URLs. Parts are found by their delimiter
    (`CRLF--boundary`, which by definition occurs in no content), also across chunk seams. A chunk of
    content that cannot hold (the start of) a delimiter goes out as the same object, uncopied.
    """
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) - 1
    # A virtual CRLF before the body, so that a first delimiter at offset 0 is found like the others;
    # `drop` keeps it out of what is sent.
    held, drop = b"\r\n", 2
    in_headers = closed = False

    def out(piece: bytes) -> Iterator[bytes]:
        nonlocal drop
        if drop:
            piece, drop = piece[drop:], max(0, drop - len(piece))
        if piece:
            yield piece

    def step(final: bool) -> Iterator[bytes]:
        """Send what `held` settles; keep what a later chunk may still change."""
        nonlocal held, in_headers, closed
        while held and not closed:
            if in_headers:
                if len(held) < 2 and not final:
                    return
                if held.startswith(b"--"):
                    # The close delimiter: what follows (CRLF, an epilogue) belongs to no part.
                    yield from out(held)
                    held, closed = b"", True
                    return
                end = held.find(b"\r\n\r\n")
                if end < 0:
                    if len(held) > MAX_PART_HEADER_BYTES:
                        raise OrthancFailed()
                    return
                yield from out(held[: end + 4].replace(old, new))
                held, in_headers = held[end + 4 :], False
                continue
            found = held.find(delimiter)
            if found < 0:
                # No delimiter yet; only its first `keep` bytes can hide in the tail.
                if len(held) > keep:
                    yield from out(held[: len(held) - keep])
                    held = held[len(held) - keep :]
                return
            yield from out(held[: found + len(delimiter)])
            held, in_headers = held[found + len(delimiter) :], True

    for chunk in chunks:
        if closed:
            yield chunk
            continue
        if not in_headers and len(chunk) > keep and delimiter not in held + chunk[:keep] and delimiter not in chunk:
            # Content only (`held` is shorter than a delimiter here): send it as it came, holding back
            # only a tail that may begin the next delimiter.
            yield from out(held)
            tail = chunk.rfind(b"\r", len(chunk) - keep)
            if tail < 0:
                yield from out(chunk)
                held = b""
            else:
                yield from out(chunk[:tail])
                held = chunk[tail:]
            continue
        held += chunk
        yield from step(final=False)
    yield from step(final=True)
    yield from out(held)


class SinglePart:
    """The one part of Orthanc's multipart/related answer, as a single-part body (PS3.18 8.7.3: one frame).

    Its headers are read before anything is sent, so Content-Type (with the transfer syntax) and
    Content-Length are the part's own; the body then streams as it arrives, and the closing boundary
    is checked at the end (a second part or a short body breaks the connection rather than lie).
    """

    status_code = 200

    def __init__(
        self,
        upstream: OrthancResponse,
        chunks: Iterator[bytes],
        *,
        first: bytes,
        part_headers: dict,
        length: int,
        closing: bytes,
        tenant: Tenant,
    ) -> None:
        self._upstream = upstream
        self._chunks = chunks
        self._first = first
        self._length = length
        self._closing = closing
        self._tenant = tenant
        self.headers = {
            "Content-Type": part_headers.get("content-type", "application/octet-stream"),
            "Content-Length": str(length),
        }

    @classmethod
    def of(cls, upstream: OrthancResponse, *, tenant: Tenant) -> SinglePart:
        boundary = _boundary(upstream.headers.get("Content-Type", ""))
        chunks = upstream.iter_raw(CHUNK_BYTES)
        buffer = b""
        while (end := buffer.find(b"\r\n\r\n")) < 0 or boundary is None:
            chunk = next(chunks, b"")
            if not chunk or len(buffer) > MAX_PART_HEADER_BYTES or boundary is None:
                logger.warning("tenant %s: Orthanc's multipart answer has no readable first part", tenant.pk)
                raise OrthancFailed()
            buffer += chunk
        opening = b"--" + boundary + b"\r\n"
        part_headers = {}
        for line in buffer[len(opening) : end].decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            part_headers[name.strip().lower()] = value.strip()
        if not buffer.startswith(opening) or not part_headers.get("content-length", "").isdigit():
            # Without the part's length the answer could only be chunked; the multipart form still works.
            raise NotAcceptable("This representation is available as multipart/related only.")
        return cls(
            upstream,
            chunks,
            first=buffer[end + 4 :],
            part_headers=part_headers,
            length=int(part_headers["content-length"]),
            closing=b"\r\n--" + boundary + b"--",
            tenant=tenant,
        )

    def iter_raw(self, chunk_bytes: int) -> Iterator[bytes]:
        remaining = self._length
        piece, rest = self._first[:remaining], self._first[remaining:]
        self._first = b""
        while True:
            if piece:
                remaining -= len(piece)
                yield piece
            if remaining == 0:
                break
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            piece, rest = chunk[:remaining], chunk[remaining:]
        tail = rest + b"".join(self._chunks)
        if remaining or not tail.startswith(self._closing):
            logger.warning("tenant %s: Orthanc's single frame did not end as announced", self._tenant.pk)
            raise OrthancFailed()

    def close(self) -> None:
        self._upstream.close()


def _boundary(content_type: str) -> bytes | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    return None


def gzip_chunks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if compressed := compressor.compress(chunk):
            yield compressed
    yield compressor.flush()


def _body(response: OrthancResponse, *, rewrite_to: bytes | None, gzip: bool) -> Iterator[bytes]:
    try:
        chunks: Iterator[bytes] = response.iter_raw(CHUNK_BYTES)
        if rewrite_to is not None:
            content_type = response.headers.get("Content-Type", "")
            boundary = _boundary(content_type)
            if boundary is not None and content_type.lower().startswith("multipart/"):
                chunks = rewrite_part_headers(chunks, boundary, ORTHANC_URL_PREFIX, rewrite_to)
            else:
                chunks = rewrite_chunks(chunks, ORTHANC_URL_PREFIX, rewrite_to)
        if gzip:
            chunks = gzip_chunks(chunks)
        yield from chunks
    finally:
        # Also runs when the client goes away: Django closes the response, which closes this generator.
        response.close()


@dataclass
class Relay:
    """How to answer one retrieval: which Orthanc path, what to rewrite, which cache headers."""

    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    accept: str | None = None
    rewrite_urls: bool = False
    gzip: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    # nginx may serve it instead (bytes untouched by Django: no URL rewriting, no gzip).
    accel_allowed: bool = True
    # Orthanc answers multipart/related only: its one part is sent on its own (see SinglePart).
    single_part: bool = False


def accel_redirect_applies(request) -> bool:
    """nginx serves the bytes only for requests it forwarded itself.

    The answer names the tenant Orthanc's credential for nginx's internal location; nginx proves
    it is in front by a secret request header it always overwrites, so a client reaching Django
    directly (or a deployment with the setting on and no nginx) gets the bytes streamed instead.
    """
    secret = settings.READROOM_DICOMWEB_ACCEL_SECRET
    if not settings.READROOM_DICOMWEB_ACCEL_REDIRECT or not secret:
        return False
    return hmac.compare_digest(request.headers.get("X-Readroom-Accel", "").encode(), secret.encode())


def relay_open(request, tenant: Tenant, relay: Relay) -> OrthancResponse | SinglePart | None:
    """Contact Orthanc (or, in the nginx mode, leave that to nginx: None)."""
    if relay.accel_allowed and accel_redirect_applies(request):
        return None
    upstream = orthanc_open(tenant, relay.path, params=relay.params, accept=relay.accept)
    if not relay.single_part:
        return upstream
    try:
        return SinglePart.of(upstream, tenant=tenant)
    except BaseException:
        upstream.close()
        raise


def relay_response(tenant: Tenant, relay: Relay, upstream: OrthancResponse | SinglePart | None):
    if upstream is None:
        return _accel_response(tenant, relay)
    rewrite_to = f"{public_base_url(tenant)}/".encode() if relay.rewrite_urls else None
    response = StreamingHttpResponse(
        _body(upstream, rewrite_to=rewrite_to, gzip=relay.gzip),
        status=upstream.status_code,
        content_type=upstream.headers.get("Content-Type", "application/octet-stream"),
    )
    if rewrite_to is None and not relay.gzip and "Content-Length" in upstream.headers:
        response["Content-Length"] = upstream.headers["Content-Length"]
    if relay.gzip:
        response["Content-Encoding"] = "gzip"
    for name, value in relay.headers.items():
        response[name] = value
    return response


def _accel_response(tenant: Tenant, relay: Relay) -> HttpResponse:
    """nginx fetches from the tenant's Orthanc itself; see README "Serving DICOMweb bytes from nginx"."""
    endpoint = orthanc_endpoint(tenant)
    prefix = settings.READROOM_DICOMWEB_ACCEL_REDIRECT.rstrip("/")
    query = f"?{orthanc_query(relay.params)}" if relay.params else ""
    response = HttpResponse(status=200, content_type="")
    del response["Content-Type"]
    response["X-Accel-Redirect"] = f"{prefix}/{tenant.slug}{relay.path}{query}"
    response["X-Accel-Buffering"] = "no"
    credentials = base64.b64encode(f"{endpoint.username}:{endpoint.password}".encode()).decode()
    # Read by the internal location (set $... $upstream_http_...) and never sent to the client,
    # whose answer comes from Orthanc.
    response["X-Readroom-Orthanc-Origin"] = endpoint.http_url.rstrip("/")
    response["X-Readroom-Orthanc-Authorization"] = f"Basic {credentials}"
    if relay.accept:
        response["X-Readroom-Orthanc-Accept"] = relay.accept
    for name, value in relay.headers.items():
        response[name] = value
    return response
