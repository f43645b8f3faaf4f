"""Celery tasks that touch tenant data run in their tenant's context, and fail loudly without one."""

import pytest

from saas.config.celery import app
from tenants.context import TenantContextMissing
from tenants.enums import Role
from tenants.models import Membership
from tenants.tasks import TenantTask
from tests.factories import person, tenant_row

pytestmark = pytest.mark.django_db


@app.task(base=TenantTask, name="tests.count_members")
def count_members(*, tenant_id: int) -> int:
    return Membership.objects.count()


def test_a_tenant_task_sees_only_its_tenants_rows():
    # given members in two clinics
    clinic_a, clinic_b = tenant_row(), tenant_row()
    person(role=Role.CLINIC_STAFF, tenant=clinic_a)
    person(role=Role.CLINIC_STAFF, tenant=clinic_a)
    person(role=Role.CLINIC_STAFF, tenant=clinic_b)
    # when the task runs for clinic A, then it counts A's members only
    assert count_members.apply(kwargs={"tenant_id": clinic_a.pk}).get() == 2


@pytest.mark.parametrize("kwargs", [{}, {"tenant_id": None}, {"tenant_id": "1"}])
def test_a_tenant_task_without_a_tenant_id_fails_loudly(kwargs):
    result = count_members.apply(kwargs=kwargs)
    assert result.failed()
    assert isinstance(result.result, TenantContextMissing)
    assert "without an integer tenant_id" in str(result.result)
