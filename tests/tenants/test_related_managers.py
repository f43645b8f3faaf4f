"""Reverse relations of tenant-scoped models stay scoped and usable (Django builds their managers)."""

import pytest

from saas.studies.models import Study
from tenants.context import tenant_context
from tests.factories import study_row, tenant_row

pytestmark = pytest.mark.django_db


def test_a_reverse_relation_works_inside_the_context_and_fails_loudly_outside():
    clinic = tenant_row()
    study = study_row(tenant=clinic, patient_id="R-1", patient_name="Related^Rows")
    with tenant_context(tenant_ids=[clinic.pk]):
        patient = Study.objects.select_related("patient").get(pk=study.pk).patient
        assert list(patient.studies.values_list("pk", flat=True)) == [study.pk]
    from tenants.context import TenantContextMissing

    with pytest.raises(TenantContextMissing):
        list(patient.studies.all())
