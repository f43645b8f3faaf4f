"""Sign-in, sign-out and lockout pages, each attempt in the audit log (110114 / 110113)."""

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from saas.accounts.models import User
from saas.audit.enums import AuditEventId, AuditOutcome
from saas.audit.models import AuditEvent
from tenants.context import tenant_context
from tenants.enums import Role
from tenants.middleware import client_ip
from tenants.models import Membership, RadiologistCredential
from tests.factories import PASSWORD, person, tenant_row

pytestmark = pytest.mark.django_db


def _events(**filters):
    with tenant_context(platform_scope=True, tenant_ids=filters.pop("tenant_ids", [])):
        return list(AuditEvent.objects.filter(**filters).order_by("id"))


def test_login_page_has_labelled_fields(client):
    response = client.get("/login/")
    body = response.content.decode()
    assert response.status_code == 200
    assert '<label for="id_username">Username</label>' in body
    assert '<label for="id_password">Password</label>' in body


def test_wrong_password_shows_a_clear_error_and_is_audited(client):
    # given a clinic user
    clinic = tenant_row()
    user = person(role=Role.CLINIC_STAFF, tenant=clinic)
    # when they type the wrong password
    response = client.post("/login/", {"username": user.username, "password": "wrong password"})
    # then the page says why, nobody is signed in, and a failed authentication is recorded
    assert response.status_code == 400
    assert "username or password is wrong" in response.content.decode()
    assert "_auth_user_id" not in client.session
    failures = _events(actor_username=user.username, event_id=AuditEventId.USER_AUTHENTICATION)
    assert [event.outcome for event in failures] == [AuditOutcome.MINOR_FAILURE]


def test_empty_fields_name_the_missing_field(client):
    response = client.post("/login/", {"username": "", "password": ""})
    body = response.content.decode()
    assert response.status_code == 400
    assert "Enter your username." in body and "Enter your password." in body


def test_login_and_logout_are_audited_in_the_clinic_chain(client):
    # given a clinic administrator
    clinic = tenant_row()
    user = person(role=Role.CLINIC_ADMIN, tenant=clinic)
    # when they sign in, open the start page and sign out
    response = client.post("/login/", {"username": user.username, "password": PASSWORD, "next": "/"})
    home = client.get("/")
    client.post("/logout/")
    # then both events are in their clinic's chain, and the session is gone
    assert response.status_code == 302 and response["Location"] == "/"
    assert clinic.name in home.content.decode()
    events = _events(tenant_ids=[clinic.pk], actor_id=user.pk, event_id=AuditEventId.USER_AUTHENTICATION)
    assert [(event.tenant_id, event.detail["operation"], event.outcome) for event in events] == [
        (clinic.pk, "login", AuditOutcome.SUCCESS),
        (clinic.pk, "logout", AuditOutcome.SUCCESS),
    ]
    assert client.get("/").status_code == 302


def test_open_redirect_after_login_is_refused(client):
    clinic = tenant_row()
    user = person(role=Role.CLINIC_STAFF, tenant=clinic)
    response = client.post(
        "/login/", {"username": user.username, "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == "/"


def test_repeated_failures_lock_the_account_and_raise_a_security_alert(client):
    # given a user whose password is being guessed
    clinic = tenant_row()
    user = person(role=Role.CLINIC_STAFF, tenant=clinic)
    for _ in range(5):
        client.post("/login/", {"username": user.username, "password": "guess"})
    # when the right password arrives after the limit
    response = client.post("/login/", {"username": user.username, "password": PASSWORD})
    # then the sign-in is refused as locked, and a security alert is on record
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    alerts = _events(actor_username=user.username, event_id=AuditEventId.SECURITY_ALERT)
    assert len(alerts) >= 1


@override_settings(READROOM_TRUSTED_PROXIES=["127.0.0.1", "10.0.0.0/8"])
def test_behind_the_proxy_the_lockout_and_the_audit_log_see_each_clients_own_address(client):
    # given a user whose password is guessed from one address, through nginx (the peer is the proxy, 127.0.0.1)
    clinic = tenant_row()
    user = person(role=Role.CLINIC_STAFF, tenant=clinic)
    through_nginx = {"REMOTE_ADDR": "127.0.0.1"}
    for _ in range(5):
        # A forged entry written by the attacker lies to the left of what nginx appended, and is not believed.
        client.post(
            "/login/",
            {"username": user.username, "password": "guess"},
            HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.66",
            **through_nginx,
        )
    # when the user signs in from their own address, behind the same proxy and a load balancer
    response = client.post(
        "/login/",
        {"username": user.username, "password": PASSWORD},
        HTTP_X_FORWARDED_FOR="192.0.2.10, 10.1.2.3",
        **through_nginx,
    )
    # then they are not locked out by the attacker's failures, and each attempt is audited with its own address
    assert response.status_code == 302 and "_auth_user_id" in client.session
    sign_ins = _events(actor_username=user.username, event_id=AuditEventId.USER_AUTHENTICATION, tenant_ids=[clinic.pk])
    assert {event.source_ip for event in sign_ins} == {"203.0.113.66", "192.0.2.10"}


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("127.0.0.1", "", "127.0.0.1"),  # a trusted proxy with nothing forwarded
        ("198.51.100.9", "192.0.2.10", "198.51.100.9"),  # not a trusted proxy: its header is the client's word
        ("127.0.0.1", "192.0.2.10, not-an-address", "127.0.0.1"),  # a damaged chain is not read past
        ("127.0.0.1", "10.0.0.1, 10.0.0.2", "10.0.0.1"),  # trusted all the way: the first hop
    ],
)
def test_the_client_address_believes_only_trusted_proxies(rf, peer, forwarded, expected):
    request = rf.get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    with override_settings(READROOM_TRUSTED_PROXIES=["127.0.0.1", "10.0.0.0/8"]):
        assert client_ip(request) == expected
    assert client_ip(request) == peer  # and with no trusted proxy configured, the peer whatever the header says


def test_create_user_is_idempotent_and_grants_the_role():
    # given a clinic
    clinic = tenant_row()
    # when create_user runs twice for a radiologist and once for staff
    for _ in range(2):
        call_command(
            "create_user",
            "dr-who",
            role="radiologist",
            tenant=clinic.slug,
            password_stdin=True,
            stdin=io.StringIO("a long passphrase 1\n"),
        )
    call_command(
        "create_user",
        "front-desk",
        role="clinic_staff",
        tenant=clinic.slug,
        password_stdin=True,
        stdin=io.StringIO("a long passphrase 2\n"),
    )
    # then one radiologist with one credential, one staff membership, passwords hashed
    radiologist = User.objects.get(username="dr-who")
    with tenant_context(tenant_ids=[clinic.pk]):
        assert RadiologistCredential.objects.filter(radiologist=radiologist).count() == 1
        assert Membership.objects.get(user__username="front-desk").role == Role.CLINIC_STAFF
    assert radiologist.check_password("a long passphrase 1") and "passphrase" not in radiologist.password


def test_create_user_refuses_a_clinic_role_without_a_tenant():
    with pytest.raises(CommandError, match="belongs to a clinic"):
        call_command(
            "create_user",
            "orphan",
            role="clinic_staff",
            password_stdin=True,
            stdin=io.StringIO("a long passphrase 3\n"),
        )
    assert not User.objects.filter(username="orphan").exists()


def test_create_user_refuses_a_weak_password_and_stores_nothing():
    clinic = tenant_row()
    with pytest.raises(CommandError, match="password: This password is too short"):
        call_command(
            "create_user",
            "weakling",
            role="clinic_staff",
            tenant=clinic.slug,
            password_stdin=True,
            stdin=io.StringIO("short\n"),
        )
    assert not User.objects.filter(username="weakling").exists()
