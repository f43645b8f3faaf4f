"""Which Orthanc driver this deployment uses, and the spec of a tenant's Orthanc."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from tenants.context import tenant_context
from tenants.models import Modality, Tenant
from tenants.provisioning.base import OrthancDriver, OrthancEndpoint, OrthancSpec


@cache
def orthanc_driver() -> OrthancDriver:
    if settings.READROOM_ORTHANC_DRIVER == "local":
        from tenants.provisioning.local import LocalOrthancDriver

        return LocalOrthancDriver(settings.READROOM_ORTHANC_DIR)
    raise ValueError(f"Unknown READROOM_ORTHANC_DRIVER '{settings.READROOM_ORTHANC_DRIVER}'.")


def orthanc_spec(tenant: Tenant) -> OrthancSpec:
    with tenant_context(tenant_ids=[tenant.pk]):
        modalities = {
            modality.name: (modality.ae_title, modality.host, modality.port)
            for modality in Modality.objects.filter(tenant_id=tenant.pk)
        }
    return OrthancSpec(
        slug=tenant.slug,
        http_port=tenant.orthanc_http_port,
        dicom_port=tenant.dicom_port,
        dicom_ae_title=tenant.dicom_ae_title,
        username=tenant.orthanc_username,
        password=tenant.orthanc_password,
        stable_age_seconds=tenant.stable_age_seconds,
        accept_unknown_modalities=tenant.accept_unknown_modalities,
        known_modalities=modalities,
    )


def orthanc_endpoint(tenant: Tenant) -> OrthancEndpoint:
    return OrthancEndpoint(
        http_url=tenant.orthanc_http_url or f"http://127.0.0.1:{tenant.orthanc_http_port}",
        username=tenant.orthanc_username,
        password=tenant.orthanc_password,
        dicom_host="127.0.0.1",
        dicom_port=tenant.dicom_port,
        dicom_ae_title=tenant.dicom_ae_title,
    )
