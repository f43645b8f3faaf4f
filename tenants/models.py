"""Tenant (a clinic), Membership, RadiologistCredential and ApiToken."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from tenants.enums import MEMBERSHIP_ROLES, TenantStatus
from tenants.scoping import TenantScopedModel

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])$",
    "A tenant slug is 2-40 lowercase letters, digits or hyphens, not starting or ending with a hyphen.",
)


class Tenant(models.Model):
    """A clinic. Holds no patient data itself, only where that clinic's data lives."""

    slug = models.CharField(max_length=40, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=TenantStatus.choices, default=TenantStatus.ACTIVE)
    orthanc_driver = models.CharField(max_length=20, default="local")
    orthanc_http_url = models.CharField(max_length=300, blank=True)
    orthanc_http_port = models.PositiveIntegerField(null=True, unique=True)
    orthanc_username = models.CharField(max_length=64, blank=True)
    # Internal service credential of the tenant's Orthanc; production keeps it in a secrets manager.
    orthanc_password = models.CharField(max_length=128, blank=True)
    dicom_ae_title = models.CharField(max_length=16, unique=True)
    dicom_port = models.PositiveIntegerField(null=True, unique=True)
    accept_unknown_modalities = models.BooleanField(default=False)
    stable_age_seconds = models.PositiveSmallIntegerField(default=5)
    # AI analysis is part of a clinic's subscription: off until it is switched on for that clinic.
    ai_enabled = models.BooleanField(default=False)
    s3_bucket = models.CharField(max_length=63, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE


class Membership(TenantScopedModel):
    """A person's role in one clinic."""

    tenant_scope_extra = (("user_id", "user_id"),)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=32, choices=[(role.value, role.label) for role in MEMBERSHIP_ROLES])
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantScopedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_one_role_per_tenant")]


class RadiologistCredential(TenantScopedModel):
    """A radiologist's right to read one clinic's studies (licensing, privileging), for a period."""

    tenant_scope_extra = (("radiologist_id", "user_id"),)

    radiologist = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="radiologist_credentials"
    )
    # Empty means every modality.
    modalities = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    valid_from = models.DateTimeField(default=timezone.now)
    valid_to = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantScopedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["radiologist", "tenant"], name="credential_one_per_tenant"),
            models.CheckConstraint(
                condition=models.Q(valid_to__isnull=True) | models.Q(valid_to__gt=models.F("valid_from")),
                name="credential_valid_period",
            ),
        ]

    def is_valid_at(self, moment) -> bool:
        return self.valid_from <= moment and (self.valid_to is None or moment < self.valid_to)


class ApiToken(TenantScopedModel):
    """A machine credential (gateway, integration): one tenant, named scopes, stored as a hash."""

    tenant_scope_extra = (("key_hash", "token_hash"),)

    name = models.CharField(max_length=100)
    # The first characters of the token, so people can tell tokens apart without the secret.
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = ArrayField(models.CharField(max_length=32))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantScopedModel.Meta):
        ordering = ["-created_at"]

    def is_usable_at(self, moment) -> bool:
        return self.revoked_at is None and moment < self.expires_at


class Modality(TenantScopedModel):
    """A clinic device allowed to send to the tenant's AE title by C-STORE (calling AE title checked)."""

    name = models.SlugField(max_length=40)
    ae_title = models.CharField(max_length=16)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=104)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantScopedModel.Meta):
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="modality_name_per_tenant"),
            models.UniqueConstraint(fields=["tenant", "ae_title"], name="modality_ae_per_tenant"),
        ]

    def __str__(self) -> str:
        return f"modality {self.name}"
