"""The audit log: append-only for every role, hash-chained per tenant, verified by `audit_verify`."""

import io
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.models import AuditEvent
from saas.audit.services import audit_chains_verify, audit_record
from tenants.context import tenant_context
from tenants.enums import TenantStatus
from tenants.models import Tenant
from tests.conftest import committed
from tests.factories import tenant_fields, tenant_row

pytestmark = pytest.mark.django_db


def _record(tenant_id, n=0):
    return audit_record(
        event_id=AuditEventId.INSTANCES_ACCESSED,
        action=AuditAction.READ,
        tenant_id=tenant_id,
        actor_username=f"reader-{n}",
        source_ip="127.0.0.1",
        patient_ids=[f"P{n}"],
        study_instance_uids=[f"1.2.3.{n}"],
        detail={"frames": n},
    )


def _run_verify(*args):
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command("audit_verify", *args, stdout=stdout, stderr=stderr)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, stdout.getvalue(), stderr.getvalue()


def test_recorded_events_chain_and_verify():
    # given a clinic with three events
    clinic = tenant_row()
    for n in range(3):
        _record(clinic.pk, n)
    # when its chain is verified
    report = audit_chains_verify(tenant_ids=[clinic.pk], include_platform=False)
    code, out, _ = _run_verify("--tenant", clinic.slug)
    # then every row verifies and sequence numbers run 1..3
    assert (report.events, report.breaks) == (3, [])
    assert code == 0 and "OK: 1 chains, 3 events" in out
    with tenant_context(tenant_ids=[clinic.pk]):
        assert list(AuditEvent.objects.filter(tenant_id=clinic.pk).values_list("seq", flat=True)) == [1, 2, 3]


def test_twenty_concurrent_writers_keep_one_valid_chain():
    # given one clinic and 20 writers on their own connections
    clinic = tenant_row()
    # when they append 10 events each at the same time
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda n: [_record(clinic.pk, n * 10 + i) for i in range(10)], range(20)))
    # then the chain holds 200 events, gapless, and verifies
    report = audit_chains_verify(tenant_ids=[clinic.pk], include_platform=False)
    assert (report.events, report.breaks) == (200, [])
    with tenant_context(tenant_ids=[clinic.pk]):
        seqs = list(AuditEvent.objects.filter(tenant_id=clinic.pk).values_list("seq", flat=True))
    assert seqs == list(range(1, 201))


def test_the_application_role_can_neither_update_nor_delete():
    # given an event in a clinic's chain
    clinic = tenant_row()
    row_id = _record(clinic.pk)
    # when the application role tries to change or remove it, then the database refuses
    for statement in (
        "UPDATE audit_auditevent SET outcome = 12 WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="permission denied"):
            with tenant_context(tenant_ids=[clinic.pk]), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement, [row_id])
    # and the row is unchanged
    with tenant_context(tenant_ids=[clinic.pk]):
        assert AuditEvent.objects.get(pk=row_id).outcome == AuditOutcome.SUCCESS


def test_the_trigger_refuses_changes_even_from_the_table_owner(owner_connection):
    clinic = tenant_row()
    row_id = _record(clinic.pk)
    owner_connection.execute("SELECT set_config('readroom.tenant_ids', %s, false)", [f"{{{clinic.pk}}}"])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        owner_connection.execute("UPDATE audit_auditevent SET outcome = 12 WHERE id = %s", [row_id])
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        owner_connection.execute("DELETE FROM audit_auditevent WHERE id = %s", [row_id])


def _committed_clinic():
    # Suspended, so the committed row does not count as an active tenant elsewhere (/readyz).
    return committed(lambda: Tenant.objects.create(**{**tenant_fields(), "status": TenantStatus.SUSPENDED}))


def _owner_update(owner_connection, sql, params):
    with owner_connection.transaction():
        owner_connection.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_append_only")
        owner_connection.execute(sql, params)
        owner_connection.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_append_only")


def test_audit_verify_finds_a_row_the_owner_altered(owner_connection):
    # given a committed clinic with a chain of five events
    clinic = _committed_clinic()
    row_ids = [_record(clinic.pk, n) for n in range(5)]
    tampered = row_ids[2]
    owner_connection.execute("SELECT set_config('readroom.tenant_ids', %s, false)", [f"{{{clinic.pk}}}"])
    # when the owner disables the trigger and rewrites the third row's outcome
    _owner_update(owner_connection, "UPDATE audit_auditevent SET outcome = 12 WHERE id = %s", [tampered])
    try:
        code, _, err = committed(_run_verify, "--tenant", clinic.slug)
        code_all, _, err_all = committed(_run_verify)
    finally:
        _owner_update(owner_connection, "UPDATE audit_auditevent SET outcome = 0 WHERE id = %s", [tampered])
    # then audit_verify exits 1 naming the first broken row, for that clinic and for all chains
    assert code == 1 and code_all == 1
    assert f"chain={clinic.slug} seq=3 row_id={tampered}" in err
    assert f"seq=3 row_id={tampered}" in err_all
    # and once restored the chain verifies again
    assert committed(_run_verify, "--tenant", clinic.slug)[0] == 0


def test_a_removed_row_is_reported_as_a_gap(owner_connection):
    clinic = _committed_clinic()
    row_ids = [_record(clinic.pk, n) for n in range(3)]
    owner_connection.execute("SELECT set_config('readroom.tenant_ids', %s, false)", [f"{{{clinic.pk}}}"])
    saved = owner_connection.execute("SELECT * FROM audit_auditevent WHERE id = %s", [row_ids[1]])
    columns = [column.name for column in saved.description]
    values = saved.fetchone()
    _owner_update(owner_connection, "DELETE FROM audit_auditevent WHERE id = %s", [row_ids[1]])
    try:
        report = committed(lambda: audit_chains_verify(tenant_ids=[clinic.pk], include_platform=False))
    finally:
        _owner_update(
            owner_connection,
            f"INSERT INTO audit_auditevent ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            [psycopg.types.json.Jsonb(value) if isinstance(value, dict) else value for value in values],
        )
    assert [(b.seq, "gap" in b.reason) for b in report.breaks] == [(3, True)]


def test_platform_chain_holds_events_without_a_tenant():
    # given a failed sign-in of an unknown user (no tenant)
    audit_record(
        event_id=AuditEventId.USER_AUTHENTICATION,
        action=AuditAction.EXECUTE,
        outcome=AuditOutcome.MINOR_FAILURE,
        tenant_id=None,
        actor_username="nobody",
    )
    # then it is invisible to a clinic's context and to no context, visible only in platform scope
    with tenant_context(tenant_ids=[]):
        assert not AuditEvent.objects.filter(actor_username="nobody").exists()
    with tenant_context(platform_scope=True):
        assert AuditEvent.objects.filter(actor_username="nobody", tenant_id__isnull=True).exists()
