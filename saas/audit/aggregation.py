"""Audit of high-rate reads (DICOMweb queries and retrievals) aggregated in Redis and flushed to the audit log.

A viewer scrolling a 500-slice CT makes hundreds of requests a minute; writing one hash-chained
row per frame would put a database round trip and a chain lock on every frame. Instead each
request adds to a Redis hash per (actor, source address, tenant, study, event, time window),
one round trip, and a Celery beat task (`saas.audit.tasks`) turns every closed window into one
`audit_record` with the counts in `detail`.

Never lost: the counts live in Redis until written, so a web process that crashes loses nothing
(Redis persistence, AOF or replicas, is the deployment's part). Written once: a flush first
moves a window's hash to a claimed key with a fresh aggregate id (atomically, in Lua), writes
the audit row carrying that id, and only then deletes the claimed key; a flush that dies in
between leaves the claimed key, whose lease expires and whose next flush finds the row by its
aggregate id (under an advisory lock) and skips it. Requests that land in a window after it
was claimed simply start a new aggregate for the same window.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import connection
from redis.commands.core import Script

from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.models import AuditEvent
from saas.audit.services import audit_record
from tenants.actors import Actor
from tenants.context import tenant_context

logger = logging.getLogger(__name__)

# A window is flushed this long after it ends, so a request that read the clock just before the
# boundary and reached Redis just after it still lands in the window before it is claimed.
FLUSH_GRACE_SECONDS = 5
# A flusher that claimed an aggregate and did not finish within this time is presumed dead.
CLAIM_LEASE_SECONDS = 300
RETRY_LEASE_SECONDS = 15
# Advisory lock namespace for "write this aggregate once" (distinct from the chain lock).
_AGGREGATE_LOCK_NAMESPACE = 0x41474752
_FLUSH_BATCH = 500

_EVENT_ACTIONS = {
    int(AuditEventId.QUERY): AuditAction.EXECUTE,
    int(AuditEventId.INSTANCES_ACCESSED): AuditAction.READ,
}

# KEYS: window hash, open-window index. ARGV: window end, meta JSON, now (ms), then field/increment pairs.
_ADD_SCRIPT = """
redis.call('HSETNX', KEYS[1], 'meta', ARGV[2])
redis.call('HSETNX', KEYS[1], 'first_ms', ARGV[3])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_ms') or '0')
if tonumber(ARGV[3]) > last then redis.call('HSET', KEYS[1], 'last_ms', ARGV[3]) end
for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], 'NX', ARGV[1], KEYS[1])
return 1
"""

# KEYS: window hash, open-window index, claimed index, claimed key. ARGV: lease end.
_CLAIM_SCRIPT = """
redis.call('ZREM', KEYS[2], KEYS[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[4])
redis.call('ZADD', KEYS[3], ARGV[1], KEYS[4])
return 1
"""

# KEYS: claimed index. ARGV: claimed key, now, new lease end. Takes over an expired lease only.
_LEASE_SCRIPT = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""


class AuditAggregationUnavailable(RuntimeError):
    """Redis did not take the count; the caller records the event synchronously instead."""


# Per process and URL: the client, and the add script it sends by SHA1 (EVALSHA) rather than as
# 500 bytes of Lua on every request.
_clients: dict[tuple[int, str], tuple[redis.Redis, Script]] = {}
_clients_lock = threading.Lock()
# Window keys this process added to (with their window end), flushed, open or not, when it exits.
_touched: dict[str, int] = {}
_touched_lock = threading.Lock()
_atexit_registered = False


def _connection() -> tuple[redis.Redis, Script]:
    url = settings.READROOM_AUDIT_REDIS_URL
    key = (os.getpid(), url)
    with _clients_lock:
        entry = _clients.get(key)
        if entry is None:
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
            entry = _clients[key] = (client, client.register_script(_ADD_SCRIPT))
    return entry


def _client() -> redis.Redis:
    return _connection()[0]


def _namespace() -> str:
    # The database name keeps two deployments (or two test databases) sharing one Redis apart;
    # the braces are a cluster hash tag, so every key of the namespace sits in one slot for Lua.
    return "{" + f"{settings.READROOM_AUDIT_REDIS_PREFIX}:{settings.DATABASES['default']['NAME']}" + "}"


def _open_index() -> str:
    return f"{_namespace()}:open"


def _claimed_index() -> str:
    return f"{_namespace()}:claimed"


@dataclass(frozen=True)
class AggregateIdentity:
    """Who did what to which study: one audit row per identity and window."""

    event_id: int
    tenant_id: int
    study_instance_uid: str
    patient_id: str
    actor_id: int | None
    actor_username: str
    actor_role: str
    token_id: int | None
    source_ip: str | None

    @classmethod
    def of(
        cls, *, event_id: AuditEventId, tenant_id: int, actor: Actor, study_instance_uid: str, patient_id: str
    ) -> AggregateIdentity:
        return cls(
            event_id=int(event_id),
            tenant_id=tenant_id,
            study_instance_uid=study_instance_uid,
            patient_id=patient_id,
            actor_id=actor.id,
            actor_username=actor.username,
            actor_role=actor.role_in(tenant_id, patient_data=True),
            token_id=actor.token.pk if actor.token is not None else None,
            source_ip=actor.source_ip,
        )

    def as_json(self) -> str:
        return _identity_text(self)[0]

    def digest(self) -> str:
        return _identity_text(self)[1]


@functools.lru_cache(maxsize=4096)
def _identity_text(identity: AggregateIdentity) -> tuple[str, str]:
    # The same reader asks for hundreds of frames of one study a minute: encode and hash each identity once.
    text = json.dumps(identity.__dict__, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()[:32]


def _window_start(now: float) -> int:
    window = settings.READROOM_AUDIT_WINDOW_SECONDS
    return int(now // window) * window


def audit_aggregate_add(
    *,
    event_id: AuditEventId,
    tenant_id: int,
    actor: Actor,
    study_instance_uid: str,
    patient_id: str,
    counts: dict[str, int],
    now: float | None = None,
) -> None:
    """Count one request (and what it served, e.g. {"frames": 3}) in the current window: one Redis round trip.

    Raises AuditAggregationUnavailable when Redis does not answer.
    """
    identity = AggregateIdentity.of(
        event_id=event_id,
        tenant_id=tenant_id,
        actor=actor,
        study_instance_uid=study_instance_uid,
        patient_id=patient_id,
    )
    now = time.time() if now is None else now
    start = _window_start(now)
    identity_json, digest = _identity_text(identity)
    key = f"{_namespace()}:window:{start}:{digest}"
    # The identity's own JSON object with the window added, without encoding the identity again.
    meta = f'{identity_json[:-1]},"window_seconds":{_window_seconds()},"window_start":{start}}}'
    arguments: list[str | int] = [start + _window_seconds(), meta, int(now * 1000), "requests", 1]
    for name, count in sorted(counts.items()):
        arguments += [f"n:{name}", int(count)]
    try:
        _connection()[1](keys=[key, _open_index()], args=arguments)
    except redis.RedisError as error:
        raise AuditAggregationUnavailable(f"audit aggregation in Redis failed: {error}") from error
    _remember(key, window_end=start + _window_seconds(), now=now)


def _window_seconds() -> int:
    return int(settings.READROOM_AUDIT_WINDOW_SECONDS)


def _remember(key: str, *, window_end: int, now: float) -> None:
    global _atexit_registered
    with _touched_lock:
        _touched[key] = window_end
        if len(_touched) > 1000:
            # Closed windows are beat's to flush; a long-running process keeps only its open ones.
            for stale in [name for name, end in _touched.items() if end < now]:
                del _touched[stale]
        if not _atexit_registered:
            atexit.register(_flush_at_exit)
            _atexit_registered = True


def _flush_at_exit() -> None:
    """Best effort on a clean shutdown; anything not written here is still in Redis for beat."""
    with _touched_lock:
        keys = sorted(_touched)
        _touched.clear()
    if not keys or not getattr(settings, "READROOM_AUDIT_FLUSH_AT_EXIT", True):
        return
    try:
        audit_aggregates_flush(window_keys=keys)
    except Exception:  # noqa: BLE001 - at exit there is no one left to tell but the log
        logger.exception("audit aggregates could not be flushed at exit; beat will flush them from Redis")


@dataclass(frozen=True)
class FlushOutcome:
    claimed: int
    written: int
    already_written: int
    failed: int


def audit_aggregates_flush(*, now: float | None = None, window_keys: list[str] | None = None) -> FlushOutcome:
    """Write one audit row per closed window (or per given window key, open or not); safe to run twice or at once."""
    client = _client()
    now = time.time() if now is None else now
    if window_keys is None:
        window_keys = client.zrangebyscore(
            _open_index(), "-inf", now - FLUSH_GRACE_SECONDS, start=0, num=_FLUSH_BATCH * 10
        )
    lease_until = now + CLAIM_LEASE_SECONDS
    mine: list[str] = []
    for window_key in window_keys:
        claimed_key = f"{_namespace()}:claimed:{uuid.uuid4().hex}"
        if client.eval(_CLAIM_SCRIPT, 4, window_key, _open_index(), _claimed_index(), claimed_key, lease_until):
            mine.append(claimed_key)
    # Claims left behind by a flusher that died; the lease makes sure only one flusher takes each.
    for claimed_key in client.zrangebyscore(_claimed_index(), "-inf", now, start=0, num=_FLUSH_BATCH):
        if client.eval(_LEASE_SCRIPT, 1, _claimed_index(), claimed_key, now, lease_until):
            mine.append(claimed_key)
    written = already = failed = 0
    for claimed_key in mine:
        fields = client.hgetall(claimed_key)
        try:
            if fields and _write_once(claimed_key=claimed_key, fields=fields):
                written += 1
            elif fields:
                already += 1
        except Exception:
            # Left claimed with a short lease: the next flush takes it over and retries.
            logger.exception("audit aggregate %s could not be written; it stays in Redis", claimed_key)
            client.zadd(_claimed_index(), {claimed_key: now + RETRY_LEASE_SECONDS}, xx=True)
            failed += 1
            continue
        client.delete(claimed_key)
        client.zrem(_claimed_index(), claimed_key)
    return FlushOutcome(claimed=len(mine), written=written, already_written=already, failed=failed)


def _write_once(*, claimed_key: str, fields: dict[str, str]) -> bool:
    meta = json.loads(fields["meta"])
    aggregate_id = claimed_key.rsplit(":", 1)[1]
    tenant_id = int(meta["tenant_id"])
    first_at = datetime.fromtimestamp(int(fields.get("first_ms", 0)) / 1000, tz=UTC)
    last_at = datetime.fromtimestamp(int(fields.get("last_ms", 0) or fields.get("first_ms", 0)) / 1000, tz=UTC)
    counts = {name[2:]: int(value) for name, value in sorted(fields.items()) if name.startswith("n:")}
    detail = {
        "aggregate_id": aggregate_id,
        "interface": "dicomweb",
        "window_start": datetime.fromtimestamp(meta["window_start"], tz=UTC).isoformat(),
        "window_seconds": meta["window_seconds"],
        "requests": int(fields.get("requests", 0)),
        "counts": counts,
        "first_at": first_at.isoformat(),
        "last_at": last_at.isoformat(),
    }
    with tenant_context(tenant_ids=[tenant_id]):
        # Held until this transaction ends, after audit_record has committed on its own connection:
        # a second flusher of the same aggregate waits here and then finds the row.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_AGGREGATE_LOCK_NAMESPACE, aggregate_id])
        if AuditEvent.objects.filter(
            tenant_id=tenant_id,
            event_id=meta["event_id"],
            occurred_at=first_at,
            detail__aggregate_id=aggregate_id,
        ).exists():
            return False
        audit_record(
            event_id=AuditEventId(meta["event_id"]),
            action=_EVENT_ACTIONS.get(int(meta["event_id"]), AuditAction.READ),
            tenant_id=tenant_id,
            actor_id=meta["actor_id"],
            actor_username=meta["actor_username"],
            actor_role=meta["actor_role"],
            token_id=meta["token_id"],
            source_ip=meta["source_ip"],
            patient_ids=[meta["patient_id"]] if meta["patient_id"] else [],
            study_instance_uids=[meta["study_instance_uid"]],
            detail=detail,
            occurred_at=first_at,
        )
    return True


def audit_aggregates_pending() -> int:
    """Windows not yet written (open or closed, plus claims in flight), for health checks and tests."""
    client = _client()
    return int(client.zcard(_open_index())) + int(client.zcard(_claimed_index()))
