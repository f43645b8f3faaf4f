"""Writes of the tenants domain: provisioning clinics, granting roles and credentials, API tokens."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from saas.accounts.models import User
from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.services import audit_record
from tenants.actors import Actor
from tenants.context import tenant_context
from tenants.enums import MEMBERSHIP_ROLES, Role, TenantStatus, TokenScope
from tenants.models import ApiToken, Membership, Modality, RadiologistCredential, Tenant, slug_validator
from tenants.orthanc import orthanc_driver, orthanc_spec
from tenants.provisioning.base import free_port
from tenants.provisioning.storage import bucket_ensure, bucket_name_for
from tenants.selectors import token_hash

TOKEN_PREFIX = "rrt_"  # noqa: S105 - a public marker, not a secret
_PROVISIONING_LOCK = 0x54454E54


class TenantProvisioningError(RuntimeError):
    """A tenant's Orthanc or bucket could not be provisioned; the message names what failed."""


def _ae_title_for(slug: str) -> str:
    base = "RR_" + slug.upper().replace("-", "_")
    return base[:16]


def _unique_ae_title(slug: str) -> str:
    title = _ae_title_for(slug)
    taken = set(Tenant.objects.exclude(slug=slug).values_list("dicom_ae_title", flat=True))
    suffix = 1
    candidate = title
    while candidate in taken:
        suffix += 1
        candidate = f"{title[: 16 - len(str(suffix))]}{suffix}"
    return candidate


def _allocate_ports() -> tuple[int, int]:
    used_http = {port for port in Tenant.objects.values_list("orthanc_http_port", flat=True) if port}
    used_dicom = {port for port in Tenant.objects.values_list("dicom_port", flat=True) if port}
    http_start, http_end = settings.READROOM_ORTHANC_HTTP_PORTS
    dicom_start, dicom_end = settings.READROOM_ORTHANC_DICOM_PORTS
    return (
        free_port(excluded=used_http | used_dicom, start=http_start, end=http_end),
        free_port(excluded=used_http | used_dicom, start=dicom_start, end=dicom_end),
    )


def tenant_create(*, slug: str, name: str, actor: Actor | None = None) -> tuple[Tenant, bool]:
    """Create a clinic with its own Orthanc and S3 bucket; running it again changes nothing."""
    try:
        slug_validator(slug)
    except ValidationError as error:
        raise ValidationError({"slug": error.messages}) from error
    if not name.strip():
        raise ValidationError({"name": ["A tenant needs a name."]})
    with transaction.atomic():
        # Serialises concurrent provisioning so two runs cannot hand out the same ports.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PROVISIONING_LOCK])
        tenant = Tenant.objects.filter(slug=slug).first()
        created = tenant is None
        if created:
            http_port, dicom_port = _allocate_ports()
            tenant = Tenant(
                slug=slug,
                name=name.strip(),
                orthanc_driver=settings.READROOM_ORTHANC_DRIVER,
                orthanc_http_port=http_port,
                orthanc_username=f"readroom-{slug}"[:64],
                orthanc_password=secrets.token_urlsafe(24),
                dicom_ae_title=_unique_ae_title(slug),
                dicom_port=dicom_port,
                s3_bucket=bucket_name_for(slug, prefix=settings.READROOM_S3_BUCKET_PREFIX),
                stable_age_seconds=settings.READROOM_DEFAULT_STABLE_AGE_SECONDS,
            )
            try:
                tenant.save()
            except IntegrityError:
                created = False
                tenant = Tenant.objects.get(slug=slug)
    tenant_provision(tenant=tenant)
    if created:
        audit_record(
            event_id=AuditEventId.APPLICATION_ACTIVITY,
            action=AuditAction.CREATE,
            tenant_id=tenant.pk,
            actor=actor,
            detail={"operation": "tenant_create", "slug": tenant.slug},
        )
    return tenant, created


def tenant_ai_set(*, tenant: Tenant, enabled: bool, actor: Actor | None = None) -> Tenant:
    """Switch AI analysis on or off for a clinic (part of its subscription); audited when it changes."""
    changed = Tenant.objects.filter(pk=tenant.pk).exclude(ai_enabled=enabled).update(ai_enabled=enabled)
    tenant.ai_enabled = enabled
    if changed:
        audit_record(
            event_id=AuditEventId.APPLICATION_ACTIVITY,
            action=AuditAction.UPDATE,
            tenant_id=tenant.pk,
            actor=actor,
            detail={"operation": "tenant_ai_set", "ai_enabled": enabled},
        )
    return tenant


def tenant_provision(*, tenant: Tenant) -> Tenant:
    """Make sure the tenant's Orthanc runs and its bucket exists (idempotent)."""
    try:
        endpoint = orthanc_driver().ensure_running(orthanc_spec(tenant))
    except Exception as error:
        raise TenantProvisioningError(f"tenant {tenant.slug}: Orthanc did not start: {error}") from error
    try:
        bucket_ensure(tenant.s3_bucket)
    except Exception as error:
        raise TenantProvisioningError(f"tenant {tenant.slug}: S3 bucket {tenant.s3_bucket}: {error}") from error
    if tenant.orthanc_http_url != endpoint.http_url:
        tenant.orthanc_http_url = endpoint.http_url
        Tenant.objects.filter(pk=tenant.pk).update(orthanc_http_url=endpoint.http_url)
    return tenant


def membership_grant(*, user: User, tenant: Tenant, role: str, actor: Actor | None = None) -> Membership:
    if role not in MEMBERSHIP_ROLES:
        raise ValidationError(
            {"role": [f"'{role}' is not a clinic role; choose one of {', '.join(MEMBERSHIP_ROLES)}."]}
        )
    with tenant_context(tenant_ids=[tenant.pk]):
        membership, _ = Membership.objects.update_or_create(user=user, tenant=tenant, defaults={"role": role})
    audit_record(
        event_id=AuditEventId.APPLICATION_ACTIVITY,
        action=AuditAction.UPDATE,
        tenant_id=tenant.pk,
        actor=actor,
        detail={"operation": "membership_grant", "user_id": user.pk, "role": role},
    )
    return membership


def credential_grant(
    *,
    radiologist: User,
    tenant: Tenant,
    modalities: Iterable[str] = (),
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    actor: Actor | None = None,
) -> RadiologistCredential:
    valid_from = valid_from or timezone.now()
    if valid_to is not None and valid_to <= valid_from:
        raise ValidationError({"valid_to": ["A credential must end after it starts."]})
    with tenant_context(tenant_ids=[tenant.pk]):
        credential, _ = RadiologistCredential.objects.update_or_create(
            radiologist=radiologist,
            tenant=tenant,
            defaults={"modalities": sorted(set(modalities)), "valid_from": valid_from, "valid_to": valid_to},
        )
    audit_record(
        event_id=AuditEventId.APPLICATION_ACTIVITY,
        action=AuditAction.UPDATE,
        tenant_id=tenant.pk,
        actor=actor,
        detail={"operation": "credential_grant", "user_id": radiologist.pk},
    )
    return credential


def user_provision(*, username: str, role: str, password: str, tenant: Tenant | None = None) -> User:
    """Create or update a person with one role (idempotent): the `create_user` command's service."""
    if role not in Role.values:
        raise ValidationError({"role": [f"Unknown role '{role}'; choose one of {', '.join(Role.values)}."]})
    if role in MEMBERSHIP_ROLES and tenant is None:
        raise ValidationError({"tenant": [f"The role '{role}' belongs to a clinic: pass --tenant <slug>."]})
    if not password:
        raise ValidationError({"password": ["A password is required (read from standard input)."]})
    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User(username=username)
        try:
            validate_password(password, user)
        except ValidationError as error:
            raise ValidationError({"password": error.messages}) from error
        user.set_password(password)
        user.is_platform_admin = user.is_platform_admin or role == Role.PLATFORM_ADMIN
        user.save()
    if role in MEMBERSHIP_ROLES:
        membership_grant(user=user, tenant=tenant, role=role)
    elif role == Role.RADIOLOGIST and tenant is not None:
        credential_grant(radiologist=user, tenant=tenant)
    return user


def api_token_create(
    *,
    tenant: Tenant,
    name: str,
    scopes: Iterable[str],
    expires_in: timedelta = timedelta(days=90),
    actor: Actor | None = None,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its secret, which is never stored and never shown again."""
    scopes = sorted(set(scopes))
    unknown = [scope for scope in scopes if scope not in TokenScope.values]
    if not scopes or unknown:
        raise ValidationError(
            {"scopes": [f"Unknown or missing scopes {unknown}; choose from {', '.join(TokenScope.values)}."]}
        )
    if tenant.status != TenantStatus.ACTIVE:
        raise ValidationError({"tenant": [f"Tenant {tenant.slug} is not active."]})
    if expires_in <= timedelta(0) or expires_in > timedelta(days=730):
        raise ValidationError({"expires_in_days": ["A token expires after 1 to 730 days."]})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with tenant_context(tenant_ids=[tenant.pk]):
        token = ApiToken.objects.create(
            tenant=tenant,
            name=name.strip() or "token",
            prefix=raw[:12],
            key_hash=token_hash(raw),
            scopes=scopes,
            created_by=actor.user if actor else None,
            expires_at=timezone.now() + expires_in,
        )
    audit_record(
        event_id=AuditEventId.APPLICATION_ACTIVITY,
        action=AuditAction.CREATE,
        tenant_id=tenant.pk,
        actor=actor,
        detail={"operation": "api_token_create", "token_id": token.pk, "scopes": scopes},
    )
    return token, raw


def api_token_revoke(*, token: ApiToken, actor: Actor) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            event_id=AuditEventId.APPLICATION_ACTIVITY,
            action=AuditAction.DELETE,
            tenant_id=token.tenant_id,
            actor=actor,
            detail={"operation": "api_token_revoke", "token_id": token.pk},
        )
    return token


def api_token_touch(*, token: ApiToken) -> None:
    """Record use at most once a minute, so a busy gateway does not write on every request."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        with tenant_context(tenant_ids=[token.tenant_id]):
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


_AE_TITLE_RE = re.compile(r"^[A-Za-z0-9_\-. ]{1,16}$")


def modality_register(*, tenant: Tenant, name: str, ae_title: str, host: str, port: int, actor: Actor) -> Modality:
    """Allow a clinic device to send by C-STORE; the tenant's Orthanc picks the change up at once."""
    errors = {}
    if not _AE_TITLE_RE.fullmatch(ae_title) or not ae_title.strip():
        errors["ae_title"] = ["An AE title is 1-16 letters, digits, spaces or _-. characters."]
    if not 1 <= port <= 65535:
        errors["port"] = ["A port is between 1 and 65535."]
    if not host.strip():
        errors["host"] = ["Give the device's host name or address."]
    if errors:
        raise ValidationError(errors)
    with tenant_context(tenant_ids=[tenant.pk]):
        if Modality.objects.filter(tenant=tenant, ae_title=ae_title.strip()).exists():
            raise ValidationError({"ae_title": [f"The AE title {ae_title.strip()} is already registered here."]})
        if Modality.objects.filter(tenant=tenant, name=name).exists():
            raise ValidationError({"name": [f"A modality named {name} already exists."]})
        modality = Modality.objects.create(
            tenant=tenant, name=name, ae_title=ae_title.strip(), host=host.strip(), port=port
        )
    tenant_provision(tenant=tenant)
    audit_record(
        event_id=AuditEventId.APPLICATION_ACTIVITY,
        action=AuditAction.CREATE,
        tenant_id=tenant.pk,
        actor=actor,
        detail={"operation": "modality_register", "modality_id": modality.pk, "ae_title": modality.ae_title},
    )
    return modality


def modality_remove(*, modality: Modality, actor: Actor) -> None:
    tenant = modality.tenant
    with tenant_context(tenant_ids=[tenant.pk]):
        Modality.objects.filter(pk=modality.pk).delete()
    tenant_provision(tenant=tenant)
    audit_record(
        event_id=AuditEventId.APPLICATION_ACTIVITY,
        action=AuditAction.DELETE,
        tenant_id=tenant.pk,
        actor=actor,
        detail={"operation": "modality_remove", "modality_id": modality.pk, "ae_title": modality.ae_title},
    )
