"""Factories for tests: tenants (with or without a running Orthanc), people with roles, tokens."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from saas.accounts.models import User
from tenants.enums import MEMBERSHIP_ROLES, Role, TokenScope
from tenants.models import ApiToken, Tenant
from tenants.services import api_token_create, credential_grant, membership_grant

PASSWORD = "correct horse battery staple"


def tenant_fields(*, slug: str | None = None, name: str = "Test Clinic") -> dict:
    slug = slug or f"t-{uuid.uuid4().hex[:10]}"
    port_seed = uuid.uuid4().int
    return dict(
        slug=slug,
        name=name,
        orthanc_http_port=40000 + port_seed % 10000,
        dicom_port=50000 + port_seed % 10000,
        dicom_ae_title=("T" + uuid.uuid4().hex)[:16].upper(),
        orthanc_username=f"readroom-{slug}",
        orthanc_password=secrets.token_urlsafe(12),
        s3_bucket=f"rrtest-{slug}",
    )


def tenant_row(*, slug: str | None = None, name: str = "Test Clinic") -> Tenant:
    """A tenant row without an Orthanc process (for tests that never touch Orthanc)."""
    return Tenant.objects.create(**tenant_fields(slug=slug, name=name))


def person(*, role: str, tenant: Tenant | None = None, username: str | None = None) -> User:
    user = User.objects.create_user(username=username or f"{role}-{uuid.uuid4().hex[:8]}", password=PASSWORD)
    if role == Role.PLATFORM_ADMIN:
        user.is_platform_admin = True
        user.save(update_fields=["is_platform_admin"])
    elif role in MEMBERSHIP_ROLES:
        membership_grant(user=user, tenant=tenant, role=role)
    elif role == Role.RADIOLOGIST and tenant is not None:
        credential_grant(radiologist=user, tenant=tenant)
    return user


def api_token(
    *, tenant: Tenant, scopes=(TokenScope.STUDIES_READ,), expires_in=timedelta(days=1)
) -> tuple[ApiToken, str]:
    return api_token_create(tenant=tenant, name="test", scopes=scopes, expires_in=expires_in)


def study_row(*, tenant: Tenant, patient_id: str, patient_name: str, study_date: str = "20260101", **fields):
    """An index row as the sync would write it (no Orthanc needed), for list and search tests."""
    from pydicom.uid import generate_uid

    from saas.studies.models import Patient, Study
    from tenants.context import tenant_context

    with tenant_context(tenant_ids=[tenant.pk]):
        patient, _ = Patient.objects.get_or_create(
            tenant=tenant, patient_id=patient_id, defaults={"patient_name": patient_name}
        )
        return Study.objects.create(
            tenant=tenant, patient=patient, study_instance_uid=generate_uid(), study_date=study_date, **fields
        )
