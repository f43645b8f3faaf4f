"""Liveness and readiness: /healthz answers while the process runs, /readyz only when every dependency does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis
from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from tenants.orthanc import orthanc_endpoint
from tenants.provisioning.base import orthanc_ping
from tenants.provisioning.storage import s3_ping
from tenants.selectors import tenants_active

_CHECK_TIMEOUT_SECONDS = 2.0


@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


def _database() -> str | None:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return f"database unreachable: {error.__class__.__name__}"
    return None


def _broker() -> str | None:
    try:
        client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL,
            socket_timeout=_CHECK_TIMEOUT_SECONDS,
            socket_connect_timeout=_CHECK_TIMEOUT_SECONDS,
        )
        client.ping()
    except Exception as error:
        return f"broker unreachable: {error.__class__.__name__}"
    return None


@never_cache
def readyz(request):
    failed: dict[str, str] = {}
    database_error = _database()
    checks = {"database": database_error}
    tenants = list(tenants_active()) if database_error is None else []
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {
            "broker": pool.submit(_broker),
            "s3": pool.submit(s3_ping, timeout=_CHECK_TIMEOUT_SECONDS),
            **{
                f"orthanc:{tenant.slug}": pool.submit(
                    orthanc_ping, orthanc_endpoint(tenant), timeout=_CHECK_TIMEOUT_SECONDS
                )
                for tenant in tenants
            },
        }
        checks.update({name: future.result() for name, future in futures.items()})
    failed = {name: reason for name, reason in checks.items() if reason}
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    return JsonResponse({"status": "ready", "checked": sorted(checks)})
