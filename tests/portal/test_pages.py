"""Portal pages: the start page, and the tenant switcher for people who work in several clinics."""

import pytest

from tenants.context import tenant_context
from tenants.enums import Role
from tenants.models import Membership
from tests.factories import person, tenant_row

pytestmark = pytest.mark.django_db


def test_the_start_page_needs_a_sign_in_and_comes_back_after_it(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/"


def test_a_person_in_two_clinics_switches_between_them(client):
    # given a person who is staff in one clinic and referring physician in another
    north, south = tenant_row(name="North Clinic"), tenant_row(name="South Clinic")
    user = person(role=Role.CLINIC_STAFF, tenant=north)
    with tenant_context(tenant_ids=[south.pk]):
        Membership.objects.create(user=user, tenant=south, role=Role.REFERRING_PHYSICIAN)
    client.force_login(user)
    # when they look at the header, then the switcher offers both, labelled
    page = client.get("/").content.decode()
    assert '<label for="tenant-select">Clinic</label>' in page
    assert "North Clinic" in page and "South Clinic" in page
    # when they switch to the other clinic, then it becomes the active one
    first = client.get("/api/v1/me/").json()["active_tenant"]
    other = south if first == north.slug else north
    response = client.post("/tenants/switch/", {"tenant": other.pk, "next": "/"})
    assert response.status_code == 302
    assert client.get("/api/v1/me/").json()["active_tenant"] == other.slug


def test_switching_to_a_clinic_you_do_not_belong_to_is_a_404_and_changes_nothing(client):
    north, foreign = tenant_row(), tenant_row()
    client.force_login(person(role=Role.CLINIC_STAFF, tenant=north))
    response = client.post("/tenants/switch/", {"tenant": foreign.pk})
    assert response.status_code == 404
    assert client.get("/api/v1/me/").json()["active_tenant"] == north.slug
