"""Public URLs of a tenant's services on the platform."""

from django.conf import settings

from tenants.models import Tenant


def tenant_dicomweb_url(tenant: Tenant) -> str:
    return f"{settings.READROOM_PUBLIC_URL.rstrip('/')}/dicomweb/{tenant.slug}/"
