"""Streaming from a tenant's Orthanc to the client: never buffered, URLs rewritten to the platform's, gzip on request.

Orthanc's DICOMweb plugin writes absolute URLs (BulkDataURI, Content-Location) from the
`Forwarded` header it receives; we send a fixed placeholder host, so the one prefix to rewrite
is known in advance whatever address the tenant's Orthanc has.
"""

from __future__ import annotations

import base64
import hmac
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.exceptions import APIException, NotAcceptable, NotFound, ParseError

from saas.studies.orthanc import orthanc_client
from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint
from tenants.viewsets import NOT_FOUND_MESSAGE

logger = logging.getLogger(__name__)

_PLACEHOLDER_HOST = "orthanc.readroom.invalid"
ORTHANC_URL_PREFIX = f"https://{_PLACEHOLDER_HOST}/dicom-web/".encode()
_FORWARDED = f"host={_PLACEHOLDER_HOST};proto=https"
CHUNK_BYTES = 128 * 1024
# gzip level 1: metadata JSON still shrinks several-fold, and the viewer waits on latency, not bytes.
GZIP_LEVEL = 1


class OrthancUnreachable(APIException):
    status_code = 503
    default_detail = "The clinic's image store is not answering; try again shortly."


class OrthancFailed(APIException):
    status_code = 502
    default_detail = "The clinic's image store could not produce this representation."


def public_base_url(tenant: Tenant) -> str:
    return f"{settings.READROOM_PUBLIC_URL.rstrip('/')}/dicomweb/{tenant.slug}"


def _orthanc_reason(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return ""
    return str(answer.get("Details") or answer.get("Message") or "")[:300] if isinstance(answer, dict) else ""


def _query(params) -> str:
    # Orthanc splits "viewport=32,32" and "window=40,400,linear" before decoding: commas stay literal.
    return urlencode(list(params), safe=",")


def orthanc_open(tenant: Tenant, path: str, *, params=(), accept: str | None = None) -> httpx.Response:
    """Send a GET to the tenant's Orthanc and return once the headers are in; the body is still unread."""
    client = orthanc_client(tenant)
    headers = {"Forwarded": _FORWARDED, "Accept-Encoding": "identity"}
    if accept:
        headers["Accept"] = accept
    query = _query(params)
    request = client.build_request("GET", f"{path}?{query}" if query else path, headers=headers)
    try:
        response = client.send(request, stream=True)
    except httpx.HTTPError as error:
        logger.warning("tenant %s: Orthanc did not answer GET %s: %s", tenant.pk, path, error.__class__.__name__)
        raise OrthancUnreachable() from error
    if response.status_code < 400:
        return response
    try:
        response.read()
    finally:
        response.close()
    reason = _orthanc_reason(response)
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
    """Replace `old` by `new` across chunk boundaries, holding back at most len(old) - 1 bytes."""
    keep = len(old) - 1
    tail = b""
    for chunk in chunks:
        buffer = tail + chunk if tail else chunk
        out: list[bytes] = []
        start = 0
        while (found := buffer.find(old, start)) >= 0:
            out += [buffer[start:found], new]
            start = found + len(old)
        cut = max(start, len(buffer) - keep)
        out.append(buffer[start:cut])
        tail = buffer[cut:]
        if piece := b"".join(out):
            yield piece
    if tail:
        yield tail


def gzip_chunks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if compressed := compressor.compress(chunk):
            yield compressed
    yield compressor.flush()


def _body(response: httpx.Response, *, rewrite_to: bytes | None, gzip: bool) -> Iterator[bytes]:
    try:
        chunks: Iterator[bytes] = response.iter_raw(CHUNK_BYTES)
        if rewrite_to is not None:
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


def relay_open(request, tenant: Tenant, relay: Relay) -> httpx.Response | None:
    """Contact Orthanc (or, in the nginx mode, leave that to nginx: None)."""
    if relay.accel_allowed and accel_redirect_applies(request):
        return None
    return orthanc_open(tenant, relay.path, params=relay.params, accept=relay.accept)


def relay_response(tenant: Tenant, relay: Relay, upstream: httpx.Response | None):
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
    query = f"?{_query(relay.params)}" if relay.params else ""
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
