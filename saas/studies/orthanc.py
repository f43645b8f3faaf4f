"""The Django side's client for a tenant's Orthanc: pyorthanc, and the kept-alive pool for the per-instance calls.

The sync and the archive make a few calls per stored instance and STOW-RS one store per instance;
those go over tenants.orthanc_http (a fraction of httpx's CPU per call), everything else over pyorthanc.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pyorthanc

from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint
from tenants.orthanc_http import OrthancResponse, orthanc_request


class OrthancError(RuntimeError):
    """The tenant's Orthanc refused or did not answer; transient unless the message says otherwise."""


# Keyed by process too: pooled connections must not cross a fork (Celery prefork workers).
_clients: dict[tuple[int, int, str, str], pyorthanc.Orthanc] = {}
_lock = threading.Lock()


def orthanc_client(tenant: Tenant) -> pyorthanc.Orthanc:
    endpoint = orthanc_endpoint(tenant)
    key = (os.getpid(), tenant.pk, endpoint.http_url, endpoint.password)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = pyorthanc.Orthanc(
                endpoint.http_url,
                username=endpoint.username,
                password=endpoint.password,
                timeout=httpx.Timeout(60.0, connect=5.0),
                base_url=endpoint.http_url,
            )
            _clients[key] = client
    return client


def _exchange(tenant: Tenant, method: str, path: str, *, params=(), headers=None, body=None) -> tuple[int, bytes]:
    """One request and its whole answer (read to the end, so its connection is kept); OrthancError when Orthanc
    cannot be reached or its answer breaks off."""
    try:
        response = orthanc_request(tenant, method, path, params=params, headers=headers, body=body)
        try:
            return response.status_code, response.read()
        finally:
            response.close()
    except (OSError, http.client.HTTPException) as error:
        raise OrthancError(f"Orthanc did not answer: {error.__class__.__name__}") from error


def orthanc_store(tenant: Tenant, data: bytes) -> tuple[str, bool]:
    """Store one Part 10 instance; returns Orthanc's instance id and whether it was already there."""
    status, answer = _exchange(tenant, "POST", "/instances", headers={"Content-Type": "application/dicom"}, body=data)
    if status >= 400:
        raise OrthancError(f"Orthanc refused the instance (HTTP {status})")
    stored = json.loads(answer)
    return stored["ID"], stored.get("Status") == "AlreadyStored"


def orthanc_get(tenant: Tenant, path: str, *, params=()) -> bytes | None:
    """A GET's whole body; None for a 404, OrthancError when Orthanc refuses or cannot be reached."""
    status, answer = _exchange(tenant, "GET", path, params=params)
    if status == 404:
        return None
    if status >= 400:
        raise OrthancError(f"Orthanc answered HTTP {status} for {path}")
    return answer


@contextmanager
def orthanc_stream(tenant: Tenant, path: str, *, params=()) -> Iterator[OrthancResponse | None]:
    """A GET whose body the caller reads (iter_raw) within the block, for files too large to hold; None for a 404,
    OrthancError otherwise.

    Transport failures while the body is read come out of the block as OSError or
    http.client.HTTPException (an IncompleteRead when Orthanc went away half-way).
    """
    try:
        response = orthanc_request(tenant, "GET", path, params=params)
    except (OSError, http.client.HTTPException) as error:
        raise OrthancError(f"Orthanc did not answer: {error.__class__.__name__}") from error
    try:
        if response.status_code == 404:
            yield None
        elif response.status_code >= 400:
            raise OrthancError(f"Orthanc answered HTTP {response.status_code} for {path}")
        else:
            yield response
    finally:
        response.close()
