"""Recording audit events into per-tenant hash chains, and verifying those chains.

Events are written on a connection of their own: the chain lock is then held for one short
transaction instead of a whole request, and the record of an attempt survives the rollback
of the action it describes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from django.conf import settings
from django.utils import timezone

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.models import AuditEvent
from tenants.actors import Actor
from tenants.context import tenant_context
from tenants.enums import Role

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Namespace of the advisory lock that serialises appends to one chain.
_CHAIN_LOCK_NAMESPACE = 0x41554454
_INSERT_SQL = """
INSERT INTO audit_auditevent (tenant_id, seq, event_id, action, outcome, actor_id, actor_username,
    actor_role, token_id, source_ip, patient_ids, study_instance_uids, detail, occurred_at,
    prev_hash, hash)
VALUES (%(tenant_id)s, %(seq)s, %(event_id)s, %(action)s, %(outcome)s, %(actor_id)s,
    %(actor_username)s, %(actor_role)s, %(token_id)s, %(source_ip)s, %(patient_ids)s,
    %(study_instance_uids)s, %(detail)s, %(occurred_at)s, %(prev_hash)s, %(hash)s)
RETURNING id
"""


class AuditWriteFailed(RuntimeError):
    """The audit log could not be written; the caller must not go on to serve patient data."""


def _normalise_ip(source_ip: str | None) -> str | None:
    if not source_ip:
        return None
    return str(ipaddress.ip_address(source_ip))


def event_hash(fields: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and a canonical JSON of every recorded field."""
    canonical = {
        "tenant_id": fields["tenant_id"],
        "seq": fields["seq"],
        "event_id": fields["event_id"],
        "action": fields["action"],
        "outcome": fields["outcome"],
        "actor_id": fields["actor_id"],
        "actor_username": fields["actor_username"],
        "actor_role": fields["actor_role"],
        "token_id": fields["token_id"],
        "source_ip": _normalise_ip(fields["source_ip"]),
        "patient_ids": list(fields["patient_ids"]),
        "study_instance_uids": list(fields["study_instance_uids"]),
        "detail": fields["detail"],
        "occurred_at": fields["occurred_at"].isoformat(),
    }
    payload = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{fields['prev_hash']}|{payload}".encode()).hexdigest()


class _Writer(threading.local):
    connection: psycopg.Connection | None = None
    pid: int | None = None


_writer = _Writer()


def _writer_connection() -> psycopg.Connection:
    if _writer.connection is None or _writer.connection.closed or _writer.pid != os.getpid():
        database = settings.DATABASES["default"]
        _writer.connection = psycopg.connect(
            host=database.get("HOST") or None,
            port=database.get("PORT") or None,
            dbname=database["NAME"],
            user=database.get("USER") or None,
            password=database.get("PASSWORD") or None,
            connect_timeout=5,
            application_name="readroom-audit",
            **database.get("OPTIONS", {}),
        )
        _writer.pid = os.getpid()
    return _writer.connection


def _append(fields: dict[str, Any]) -> int:
    connection = _writer_connection()
    tenant_id = fields["tenant_id"]
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('readroom.tenant_ids', %s, true), set_config('readroom.platform_scope', %s, true)",
            ["{}" if tenant_id is None else f"{{{tenant_id}}}", "on" if tenant_id is None else ""],
        )
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_CHAIN_LOCK_NAMESPACE, (tenant_id or 0) % 2**31])
        cursor.execute(
            "SELECT seq, hash FROM audit_auditevent WHERE tenant_id IS NOT DISTINCT FROM %s ORDER BY seq DESC LIMIT 1",
            [tenant_id],
        )
        last = cursor.fetchone()
        fields["seq"], fields["prev_hash"] = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        fields["hash"] = event_hash(fields)
        cursor.execute(
            _INSERT_SQL,
            {**fields, "detail": psycopg.types.json.Jsonb(fields["detail"])},
        )
        return cursor.fetchone()[0]


def audit_record(
    *,
    event_id: AuditEventId,
    action: AuditAction,
    tenant_id: int | None,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    actor: Actor | None = None,
    actor_id: int | None = None,
    actor_username: str = "",
    actor_role: str = "",
    token_id: int | None = None,
    source_ip: str | None = None,
    patient_ids: Iterable[str] = (),
    study_instance_uids: Iterable[str] = (),
    detail: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> int:
    """Append one event to its tenant's chain (or the platform chain) and return its row id.

    `actor` fills the actor fields (person or token, role, source address); without one the
    event is the system's own.
    """
    patient_ids = sorted(set(patient_ids))
    study_instance_uids = sorted(set(study_instance_uids))
    if actor is not None:
        actor_id = actor.id
        actor_username = actor.username
        # The role in the clinic whose chain this is, not in the one the person has switched to:
        # a radiologist reading for clinic B while clinic A is active acts in B as a radiologist.
        if tenant_id is None:
            actor_role = actor.active_role
        else:
            patient_data = bool(patient_ids or study_instance_uids)
            actor_role = actor.role_in(tenant_id, patient_data=patient_data) or (
                Role.PLATFORM_ADMIN.value if actor.is_platform_admin else ""
            )
        token_id = actor.token.pk if actor.token is not None else None
        source_ip = actor.source_ip
    elif not actor_username and actor_id is None:
        actor_username = "system"
    fields: dict[str, Any] = {
        "tenant_id": tenant_id,
        "event_id": int(event_id),
        "action": str(action),
        "outcome": int(outcome),
        "actor_id": actor_id,
        "actor_username": actor_username,
        "actor_role": actor_role,
        "token_id": token_id,
        "source_ip": _normalise_ip(source_ip),
        "patient_ids": patient_ids,
        "study_instance_uids": study_instance_uids,
        "detail": detail or {},
        "occurred_at": occurred_at or timezone.now(),
    }
    try:
        return _append(fields)
    except psycopg.OperationalError:
        # A dropped connection (database restart) is retried once on a fresh one.
        _writer.connection = None
        try:
            return _append(fields)
        except psycopg.Error as error:
            raise AuditWriteFailed(f"audit event {int(event_id)} could not be written: {error}") from error
    except psycopg.Error as error:
        raise AuditWriteFailed(f"audit event {int(event_id)} could not be written: {error}") from error


@dataclass(frozen=True)
class ChainBreak:
    tenant_id: int | None
    seq: int
    row_id: int | None
    reason: str


@dataclass(frozen=True)
class ChainReport:
    chains: int
    events: int
    breaks: Sequence[ChainBreak]


def audit_chains_verify(*, tenant_ids: Sequence[int], include_platform: bool) -> ChainReport:
    """Recompute every hash of the given chains; report the first broken row of each chain."""
    breaks: list[ChainBreak] = []
    events = 0
    chains: set[int | None] = set()
    with tenant_context(tenant_ids=tenant_ids, platform_scope=include_platform):
        rows = AuditEvent.objects.order_by("tenant_id", "seq")
        if not include_platform:
            rows = rows.filter(tenant_id__isnull=False)
        current_chain: object = object()
        expected_seq, expected_prev, broken = 1, GENESIS_HASH, False
        for event in rows.values().iterator(chunk_size=2000):
            events += 1
            if event["tenant_id"] != current_chain:
                current_chain = event["tenant_id"]
                chains.add(event["tenant_id"])
                expected_seq, expected_prev, broken = 1, GENESIS_HASH, False
            if broken:
                continue
            reason = None
            if event["seq"] != expected_seq:
                reason = f"sequence gap: expected seq {expected_seq}, found {event['seq']} (a row was removed)"
            elif event["prev_hash"] != expected_prev:
                reason = "prev_hash does not match the hash of the previous row"
            elif event_hash(event) != event["hash"]:
                reason = "hash does not match the row's contents (the row was altered)"
            if reason:
                breaks.append(ChainBreak(event["tenant_id"], event["seq"], event["id"], reason))
                broken = True
            expected_seq, expected_prev = event["seq"] + 1, event["hash"]
    return ChainReport(chains=len(chains), events=events, breaks=breaks)
