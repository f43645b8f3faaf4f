"""The Django side's client for a tenant's Orthanc (pyorthanc over one pooled HTTP connection per tenant)."""

from __future__ import annotations

import os
import threading

import httpx
import pyorthanc

from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint


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


def orthanc_store(tenant: Tenant, data: bytes) -> tuple[str, bool]:
    """Store one Part 10 instance; returns Orthanc's instance id and whether it was already there."""
    try:
        answer = orthanc_client(tenant).post_instances(data)
    except httpx.HTTPStatusError as error:
        raise OrthancError(f"Orthanc refused the instance (HTTP {error.response.status_code})") from error
    except httpx.HTTPError as error:
        raise OrthancError(f"Orthanc did not answer: {error.__class__.__name__}") from error
    return answer["ID"], answer.get("Status") == "AlreadyStored"
