"""Per-tenant infrastructure: the Orthanc DICOM store (through a driver) and the S3 bucket."""

from tenants.provisioning.base import (
    TENANT_SLUG_RE,
    OrthancDriver,
    OrthancEndpoint,
    OrthancSpec,
    OrthancUnavailable,
    free_port,
    orthanc_ping,
)

__all__ = [
    "TENANT_SLUG_RE",
    "OrthancDriver",
    "OrthancEndpoint",
    "OrthancSpec",
    "OrthancUnavailable",
    "free_port",
    "orthanc_ping",
]
