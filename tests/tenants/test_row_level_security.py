"""The second wall: PostgreSQL row-level security on every tenant table, for the application role."""

import pytest
from django.db import DatabaseError, connection, transaction

from tenants.context import TenantContextMissing, tenant_context
from tenants.enums import Role
from tenants.models import Membership
from tests.factories import person, tenant_row

pytestmark = pytest.mark.django_db


def _count(sql: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def test_every_tenant_table_has_forced_rls_and_the_app_role_cannot_bypass_it():
    # given the application role's view of the catalogue
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
            """
        )
        tables = cursor.fetchall()
        cursor.execute("SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        role, is_superuser, bypasses_rls = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = current_user"
        )
        owned = cursor.fetchone()[0]
    # then every table with tenant_id enables and forces RLS, and the role is a plain data user
    assert {"tenants_membership", "tenants_apitoken", "tenants_radiologistcredential", "audit_auditevent"} <= {
        name for name, *_ in tables
    }
    assert [name for name, enabled, forced, _ in tables if not (enabled and forced)] == []
    assert all(owner != role for *_, owner in tables)
    assert (is_superuser, bypasses_rls, owned) == (False, False, 0)


def test_raw_sql_without_a_tenant_context_returns_zero_rows():
    # given memberships in two clinics
    clinic_a, clinic_b = tenant_row(), tenant_row()
    person(role=Role.CLINIC_STAFF, tenant=clinic_a)
    person(role=Role.CLINIC_STAFF, tenant=clinic_b)
    # when raw SQL runs with no context, then with clinic A's context
    without_context = _count("SELECT count(*) FROM tenants_membership")
    with tenant_context(tenant_ids=[clinic_a.pk]):
        with_a = _count("SELECT count(*) FROM tenants_membership")
        tenants_seen = _count("SELECT count(DISTINCT tenant_id) FROM tenants_membership")
    # then nothing is visible without context, and only A's rows with it
    assert without_context == 0
    assert (with_a, tenants_seen) == (1, 1)
    # and leaving the context leaves nothing visible behind
    assert _count("SELECT count(*) FROM tenants_membership") == 0


def test_rls_refuses_writing_a_row_into_a_tenant_outside_the_context():
    # given a user of clinic A working in A's context
    clinic_a, clinic_b = tenant_row(), tenant_row()
    user = person(role=Role.CLINIC_STAFF, tenant=clinic_a)
    # when code bypasses the Python wall and writes a membership into clinic B
    with pytest.raises(DatabaseError, match="row-level security"):
        with tenant_context(tenant_ids=[clinic_a.pk], user_id=user.pk), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO tenants_membership (tenant_id, user_id, role, created_at)"
                    " VALUES (%s, %s, 'clinic_admin', now())",
                    [clinic_b.pk, user.pk],
                )
    # then clinic B has no new member
    with tenant_context(tenant_ids=[clinic_b.pk]):
        assert not Membership.objects.filter(user=user).exists()


def test_unscoped_orm_query_is_still_limited_by_rls():
    # given members in two clinics
    clinic_a, clinic_b = tenant_row(), tenant_row()
    person(role=Role.CLINIC_STAFF, tenant=clinic_a)
    person(role=Role.CLINIC_STAFF, tenant=clinic_b)
    # when the loudly named bypass is used in A's context
    with tenant_context(tenant_ids=[clinic_a.pk]):
        tenant_ids = set(Membership.objects.dangerously_unscoped().values_list("tenant_id", flat=True))
    # then the database still returns only clinic A's rows
    assert tenant_ids == {clinic_a.pk}


def test_scoped_manager_outside_a_context_fails_loudly():
    with pytest.raises(TenantContextMissing, match="No tenant context"):
        list(Membership.objects.all())


def test_a_person_sees_their_own_memberships_in_every_clinic_but_no_one_elses():
    # given a person in two clinics and a colleague in one
    clinic_a, clinic_b = tenant_row(), tenant_row()
    user = person(role=Role.CLINIC_STAFF, tenant=clinic_a)
    with tenant_context(tenant_ids=[clinic_b.pk]):
        Membership.objects.create(user=user, tenant=clinic_b, role=Role.REFERRING_PHYSICIAN)
    person(role=Role.CLINIC_STAFF, tenant=clinic_a)
    # when only the user id is in context (how the middleware finds a person's clinics)
    with tenant_context(user_id=user.pk):
        raw = _count("SELECT count(*) FROM tenants_membership")
        orm = Membership.objects.count()
    # then exactly their two memberships are visible, through both walls
    assert (raw, orm) == (2, 2)
