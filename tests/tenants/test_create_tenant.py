"""`create_tenant`: one tenant, one running Orthanc and one bucket, however often it runs."""

import io
import json

import pytest
import requests
from django.core.management import CommandError, call_command

from tenants.models import Tenant
from tenants.orthanc import orthanc_driver
from tenants.provisioning.storage import s3_client

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _create(slug, name="North Clinic"):
    out = io.StringIO()
    call_command("create_tenant", slug, name=name, stdout=out)
    return json.loads(out.getvalue())


def _orthanc_pid(slug):
    return int(orthanc_driver().pid_path(slug).read_text())


def test_create_tenant_twice_gives_one_tenant_and_one_orthanc(unique_slug):
    # given a new clinic slug
    slug = unique_slug("north")
    # when create_tenant runs twice
    first = _create(slug)
    pid = _orthanc_pid(slug)
    second = _create(slug)
    # then one tenant row, the same Orthanc process, and the contract's JSON keys
    assert Tenant.objects.filter(slug=slug).count() == 1
    assert _orthanc_pid(slug) == pid
    assert (first["created"], second["created"]) == (True, False)
    for key in ("slug", "dicom_ae_title", "dicom_port", "dicomweb_url", "orthanc_http_url", "s3_bucket"):
        assert first[key] == second[key], key
    assert first["dicomweb_url"].endswith(f"/dicomweb/{slug}/")
    # and its Orthanc answers only with the tenant's credentials, its bucket exists
    tenant = Tenant.objects.get(slug=slug)
    system = requests.get(
        f"{first['orthanc_http_url']}/system", auth=(tenant.orthanc_username, tenant.orthanc_password), timeout=5
    )
    assert system.status_code == 200 and system.json()["DicomAet"] == first["dicom_ae_title"]
    assert requests.get(f"{first['orthanc_http_url']}/system", timeout=5).status_code == 401
    s3_client().head_bucket(Bucket=first["s3_bucket"])


def test_two_tenants_get_separate_orthancs_ports_and_buckets(unique_slug):
    first, second = _create(unique_slug("east")), _create(unique_slug("west"))
    for key in ("dicom_ae_title", "dicom_port", "orthanc_http_url", "s3_bucket"):
        assert first[key] != second[key], key


def test_an_invalid_slug_is_refused_with_the_rule_and_nothing_created():
    with pytest.raises(CommandError, match="2-40 lowercase letters"):
        _create("Bad Slug!")
    assert not Tenant.objects.filter(name="North Clinic").exists()


def test_ai_is_off_until_switched_on_and_the_switch_is_audited(unique_slug):
    from saas.audit.models import AuditEvent
    from tenants.context import tenant_context

    # Given a new clinic: AI is not part of its subscription yet
    slug = unique_slug("ai")
    assert _create(slug)["ai_enabled"] is False
    # When an operator switches it on, then off again, with the same command
    out = io.StringIO()
    call_command("create_tenant", slug, "--ai", name="North Clinic", stdout=out)
    assert json.loads(out.getvalue())["ai_enabled"] is True
    call_command("create_tenant", slug, "--ai", name="North Clinic", stdout=io.StringIO())
    call_command("create_tenant", slug, "--no-ai", name="North Clinic", stdout=io.StringIO())
    # Then the row follows, and each change (not the repeat) is in the clinic's audit chain
    tenant = Tenant.objects.get(slug=slug)
    assert tenant.ai_enabled is False
    with tenant_context(tenant_ids=[tenant.pk]):
        changes = AuditEvent.objects.filter(tenant_id=tenant.pk, detail__operation="tenant_ai_set")
        assert [event.detail["ai_enabled"] for event in changes.order_by("seq")] == [True, False]
