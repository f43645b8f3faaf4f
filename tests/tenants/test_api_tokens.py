"""API tokens: hashed, tenant- and scope-bound, expiring, revocable, shown once."""

import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from tenants.context import tenant_context
from tenants.enums import Role, TokenScope
from tenants.models import ApiToken
from tests.factories import api_token, person, tenant_row

pytestmark = pytest.mark.django_db


def _signed_in(client, role, tenant):
    user = person(role=role, tenant=tenant)
    client.force_login(user)
    return user


def test_clinic_admin_creates_a_token_shown_once_and_stored_hashed(client):
    # given a clinic administrator
    clinic = tenant_row()
    _signed_in(client, Role.CLINIC_ADMIN, clinic)
    # when they create a token
    response = client.post(
        "/api/v1/api-tokens/",
        data=json.dumps({"name": "gateway", "scopes": ["studies:write"], "expires_in_days": 30}),
        content_type="application/json",
    )
    # then the secret appears in this answer only; the database keeps its hash
    assert response.status_code == 201, response.content
    raw = response.json()["token"]
    with tenant_context(tenant_ids=[clinic.pk]):
        stored = ApiToken.objects.get(pk=response.json()["id"])
    assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest() and raw not in stored.key_hash
    listing = client.get("/api/v1/api-tokens/").json()
    assert raw not in json.dumps(listing) and listing["results"][0]["prefix"] == raw[:12]


def test_unknown_scope_is_refused_with_the_reason_and_nothing_stored(client):
    clinic = tenant_row()
    _signed_in(client, Role.CLINIC_ADMIN, clinic)
    response = client.post(
        "/api/v1/api-tokens/",
        data=json.dumps({"name": "x", "scopes": ["studies:delete"]}),
        content_type="application/json",
    )
    assert response.status_code == 400 and "studies:delete" in response.content.decode()
    with tenant_context(tenant_ids=[clinic.pk]):
        assert ApiToken.objects.count() == 0


def test_clinic_staff_cannot_create_tokens(client):
    clinic = tenant_row()
    _signed_in(client, Role.CLINIC_STAFF, clinic)
    response = client.post(
        "/api/v1/api-tokens/",
        data=json.dumps({"name": "x", "scopes": ["studies:read"]}),
        content_type="application/json",
    )
    assert response.status_code == 403
    with tenant_context(tenant_ids=[clinic.pk]):
        assert ApiToken.objects.count() == 0


def test_another_tenants_token_gets_the_same_404_as_a_missing_one_and_stays_unchanged(client):
    # given an administrator of clinic A and a token of clinic B
    clinic_a, clinic_b = tenant_row(), tenant_row()
    _signed_in(client, Role.CLINIC_ADMIN, clinic_a)
    token_b, _ = api_token(tenant=clinic_b)
    missing_id = token_b.pk + 100000
    # when A's administrator reads and revokes B's token, and a token that does not exist
    foreign_get, missing_get = (
        client.get(f"/api/v1/api-tokens/{token_b.pk}/"),
        client.get(f"/api/v1/api-tokens/{missing_id}/"),
    )
    foreign_delete = client.delete(f"/api/v1/api-tokens/{token_b.pk}/")
    missing_delete = client.delete(f"/api/v1/api-tokens/{missing_id}/")
    # then each answer is the same 404, and B's token is still usable
    assert (
        (foreign_get.status_code, foreign_get.json())
        == (missing_get.status_code, missing_get.json())
        == (404, {"detail": "Not found."})
    )
    assert (foreign_delete.status_code, foreign_delete.json()) == (missing_delete.status_code, missing_delete.json())
    with tenant_context(tenant_ids=[clinic_b.pk]):
        assert ApiToken.objects.get(pk=token_b.pk).revoked_at is None


def test_revoked_and_expired_tokens_are_refused(client):
    clinic = tenant_row()
    admin = _signed_in(client, Role.CLINIC_ADMIN, clinic)
    live, live_raw = api_token(tenant=clinic)
    revoked, revoked_raw = api_token(tenant=clinic)
    expired, expired_raw = api_token(tenant=clinic)
    with tenant_context(tenant_ids=[clinic.pk]):
        ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.delete(f"/api/v1/api-tokens/{revoked.pk}/").status_code == 204
    client.logout()
    assert admin.pk
    statuses = [
        client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code
        for raw in (live_raw, revoked_raw, expired_raw, "rrt_nonsense")
    ]
    assert statuses == [200, 401, 401, 401]


def test_a_token_acts_only_in_its_own_tenant(client):
    clinic = tenant_row()
    _, raw = api_token(tenant=clinic, scopes=[TokenScope.STUDIES_READ])
    me = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert me["active_tenant"] == clinic.slug and me["scopes"] == ["studies:read"]
    # a token is not a person: administration endpoints refuse it
    assert client.get("/api/v1/api-tokens/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 403


def test_create_api_token_command_prints_the_token_once():
    clinic = tenant_row()
    out = io.StringIO()
    call_command("create_api_token", tenant=clinic.slug, scopes="studies:write,studies:read", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("rrt_")
    with tenant_context(tenant_ids=[clinic.pk]):
        assert ApiToken.objects.get(key_hash=hashlib.sha256(raw.encode()).hexdigest()).scopes == [
            "studies:read",
            "studies:write",
        ]
    with pytest.raises(CommandError, match="Unknown or missing scopes"):
        call_command("create_api_token", tenant=clinic.slug, scopes="studies:everything")
    with pytest.raises(CommandError, match="No tenant with slug"):
        call_command("create_api_token", tenant="no-such-clinic", scopes="studies:read")
