"""Enumerations of the tenants domain: tenant status, roles, API token scopes."""

from django.db import models


class TenantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Role(models.TextChoices):
    PLATFORM_ADMIN = "platform_admin", "Platform administrator"
    CLINIC_ADMIN = "clinic_admin", "Clinic administrator"
    CLINIC_STAFF = "clinic_staff", "Clinic staff"
    REFERRING_PHYSICIAN = "referring_physician", "Referring physician"
    RADIOLOGIST = "radiologist", "Radiologist"
    BILLING_ADMIN = "billing_admin", "Billing administrator"


# Roles held through a Membership row; radiologists hold RadiologistCredentials instead and
# platform administrators a flag on the user, since neither belongs to one clinic.
MEMBERSHIP_ROLES = (Role.CLINIC_ADMIN, Role.CLINIC_STAFF, Role.REFERRING_PHYSICIAN, Role.BILLING_ADMIN)

# Roles that may see a clinic's patient data (studies, reports) at all.
PATIENT_DATA_ROLES = frozenset({Role.CLINIC_ADMIN, Role.CLINIC_STAFF, Role.REFERRING_PHYSICIAN, Role.RADIOLOGIST})


class TokenScope(models.TextChoices):
    STUDIES_WRITE = "studies:write", "Send studies (STOW-RS, gateway)"
    STUDIES_READ = "studies:read", "Query and retrieve studies"
