"""The gateway against the real platform (gunicorn, PostgreSQL, the clinic's Orthanc): every acknowledged instance
arrives exactly once, an outage only delays it, and a revoked token stops forwarding visibly."""

from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import RTPlanStorage

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.synthetic import dataset_bytes
from tenants.context import tenant_context
from tenants.models import ApiToken
from tenants.orthanc import orthanc_endpoint
from tenants.services import api_token_create, api_token_revoke
from tests.conftest import committed
from tests.gateway.conftest import clean_environment, free_port, run_gateway, storescu, wait_for, write_series

pytestmark = [pytest.mark.orthanc]


def _orthanc_sop_instance_uids(tenant) -> list[str]:
    endpoint = orthanc_endpoint(tenant)
    response = requests.get(f"{endpoint.http_url}/instances", params={"expand": ""}, auth=endpoint.auth, timeout=30)
    response.raise_for_status()
    return [instance["MainDicomTags"]["SOPInstanceUID"] for instance in response.json()]


def _stow_stored_counts(tenant) -> list[int]:
    """How many instances each STOW-RS request stored, from the platform's own audit trail."""

    def read():
        with tenant_context(tenant_ids=[tenant.pk]):
            events = AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=AuditEventId.INSTANCES_TRANSFERRED)
            return [event.detail["stored"] for event in events if event.detail.get("path") == "stow"]

    return committed(read)


def _revoke(tenant, raw: str) -> None:
    def revoke():
        with tenant_context(tenant_ids=[tenant.pk]):
            api_token_revoke(token=ApiToken.objects.get(tenant=tenant, prefix=raw[:12]), actor=None)

    committed(revoke)


def _new_token(tenant) -> str:
    return committed(lambda: api_token_create(tenant=tenant, name="rotated", scopes=["studies:write"]))[1]


def _env(tmp_path: Path, *, platform_url: str, slug: str, token: str | None = None, **extra) -> dict[str, str]:
    env = {
        **clean_environment(),
        "READROOM_GATEWAY_AE_TITLE": "RR_E2E_GW",
        "READROOM_GATEWAY_LISTEN_PORT": str(free_port()),
        "READROOM_GATEWAY_PLATFORM_URL": platform_url,
        "READROOM_GATEWAY_TENANT_SLUG": slug,
        "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path / "spool"),
        "READROOM_GATEWAY_MAX_BATCH_INSTANCES": "8",
        "READROOM_GATEWAY_RETRY_BACKOFF_BASE": "0.2",
        "READROOM_GATEWAY_RETRY_BACKOFF_MAX": "1",
        **extra,
    }
    if token is not None:
        env["READROOM_GATEWAY_API_TOKEN"] = token
    return env


def _send(gateway, paths) -> None:
    result = storescu(gateway.port, paths, called_ae="RR_E2E_GW")
    assert result.returncode == 0, result.stdout + result.stderr


def _drained(gateway, delivered: int):
    return wait_for(
        lambda: (report := gateway.status())["queued_count"] == 0 and report["delivered_count"] == delivered and report,
        timeout=120,
        what=f"{delivered} deliveries; log: {gateway.log_path}",
    )


def test_twenty_instances_reach_the_clinics_orthanc_exactly_once(live_platform, make_gateway, tmp_path):
    # given a clinic with a studies:write token, and its gateway
    tenant, raw = live_platform.tenant_with_token(prefix="gw-e2e", scopes=("studies:write",))
    gateway = make_gateway(_env(tmp_path, platform_url=live_platform.url, slug=tenant.slug, token=raw)).start()
    paths = write_series(tmp_path / "study", slices=20)
    # when a modality sends a 20-slice CT to the gateway
    _send(gateway, paths)
    # then the spool drains, and the clinic's Orthanc holds exactly those 20 instances
    report = _drained(gateway, delivered=20)
    assert report["last_error"] is None and report["forwarding"] in ("ok", "idle")
    assert sorted(_orthanc_sop_instance_uids(tenant)) == sorted(path.stem for path in paths)
    # and the platform stored each of them once, in batches no larger than configured
    stored = _stow_stored_counts(tenant)
    assert sum(stored) == 20 and max(stored) <= 8
    # when the modality sends the whole study again, then it is acknowledged but nothing is sent twice
    _send(gateway, paths)
    assert gateway.incoming() == [] and gateway.status()["delivered_count"] == 20
    assert sum(_stow_stored_counts(tenant)) == 20


def test_an_unreachable_platform_fills_the_spool_which_drains_once_it_is_back(live_platform, make_gateway, tmp_path):
    # given a gateway pointed at a closed port
    tenant, raw = live_platform.tenant_with_token(prefix="gw-outage", scopes=("studies:write",))
    closed = _env(tmp_path, platform_url=f"http://127.0.0.1:{free_port()}", slug=tenant.slug, token=raw)
    gateway = make_gateway(closed).start()
    paths = write_series(tmp_path / "study", slices=5)
    # when a study arrives, then every C-STORE still succeeds and status shows the queue and the error
    _send(gateway, paths)
    report = wait_for(lambda: (r := gateway.status())["last_error"] and r, what="the first forwarding error")
    assert report["queued_count"] == 5 and report["queued_bytes"] == sum(p.stat().st_size for p in gateway.incoming())
    assert report["last_error"].startswith("cannot reach the platform at http://127.0.0.1:")
    assert report["forwarding"] == "retrying" and report["last_error_at"] and report["delivered_count"] == 0
    assert gateway.stop() == 0
    # when the gateway is restarted pointing at the platform
    restarted = make_gateway({**closed, "READROOM_GATEWAY_PLATFORM_URL": live_platform.url}).start()
    # then the spool drains into the clinic's Orthanc
    report = _drained(restarted, delivered=5)
    assert report["last_success_at"] >= report["last_error_at"]
    assert sorted(_orthanc_sop_instance_uids(tenant)) == sorted(path.stem for path in paths)


def test_a_revoked_token_stops_forwarding_visibly_and_a_rotated_token_file_resumes_it(
    live_platform, make_gateway, tmp_path
):
    # given a gateway reading its token from a file, that delivered a first study
    tenant, raw = live_platform.tenant_with_token(prefix="gw-revoke", scopes=("studies:write",))
    token_file = tmp_path / "token"
    token_file.write_text(raw)
    token_file.chmod(0o600)
    env = _env(
        tmp_path, platform_url=live_platform.url, slug=tenant.slug, READROOM_GATEWAY_API_TOKEN_FILE=str(token_file)
    )
    gateway = make_gateway(env).start()
    first = write_series(tmp_path / "first", slices=3)
    _send(gateway, first)
    _drained(gateway, delivered=3)
    # when the clinic's token is revoked and more images arrive
    _revoke(tenant, raw)
    second = write_series(tmp_path / "second", slices=2)
    _send(gateway, second)
    # then forwarding stops, everything stays spooled, and status says why
    report = wait_for(lambda: (r := gateway.status())["forwarding"] == "blocked" and r, what="forwarding to block")
    assert report["queued_count"] == 2 and report["delivered_count"] == 3
    assert "the platform refused the API token (HTTP 401" in report["last_error"]
    assert raw not in report["last_error"] and raw not in gateway.log()
    assert len(_orthanc_sop_instance_uids(tenant)) == 3
    # when an administrator writes a new token into the file, then the queue drains without a restart
    token_file.write_text(_new_token(tenant))
    _drained(gateway, delivered=5)
    assert len(_orthanc_sop_instance_uids(tenant)) == 5


def test_an_instance_the_platform_refuses_for_good_is_set_aside_and_the_rest_delivered(
    live_platform, make_gateway, tmp_path
):
    # given three CT slices and an RT Plan, a SOP class the platform does not take
    tenant, raw = live_platform.tenant_with_token(prefix="gw-refuse", scopes=("studies:write",))
    gateway = make_gateway(_env(tmp_path, platform_url=live_platform.url, slug=tenant.slug, token=raw)).start()
    paths = write_series(tmp_path / "study", slices=3)
    plan = pydicom.dcmread(paths[0])
    del plan.PixelData
    plan.SOPClassUID = plan.file_meta.MediaStorageSOPClassUID = RTPlanStorage
    plan.SOPInstanceUID = plan.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    plan.Modality = "RTPLAN"
    plan_path = tmp_path / "plan.dcm"
    plan_path.write_bytes(dataset_bytes(plan))
    # when all four go through the gateway
    _send(gateway, [*paths, plan_path])
    # then the three slices are delivered and the plan waits in failed/ with the platform's reason, never resent
    report = wait_for(
        lambda: (r := gateway.status())["failed_count"] == 1 and r["delivered_count"] == 3 and r,
        timeout=120,
        what="one set-aside and three deliveries",
    )
    assert report["queued_count"] == 0
    [failure] = report["failed"]
    assert failure["sop_instance_uid"] == plan.SOPInstanceUID
    assert failure["reason"].startswith("FailureReason 0x0122 (SOP class not supported)")
    assert (gateway.spool_dir / "failed" / f"{plan.SOPInstanceUID}.dcm").exists()
    assert sorted(_orthanc_sop_instance_uids(tenant)) == sorted(path.stem for path in paths)


def test_echo_reports_the_tenant_and_scopes_or_what_is_wrong(live_platform, tmp_path):
    tenant, raw = live_platform.tenant_with_token(prefix="gw-echo", scopes=("studies:write",))
    env = _env(tmp_path, platform_url=live_platform.url, slug=tenant.slug, token=raw)
    result = run_gateway("echo", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tenant:   {tenant.slug}" in result.stdout and "scopes:   studies:write" in result.stdout
    assert raw not in result.stdout + result.stderr
    wrong = run_gateway("echo", "--json", env={**env, "READROOM_GATEWAY_TENANT_SLUG": "another-clinic"})
    assert wrong.returncode == 1 and "not to tenant_slug 'another-clinic'" in wrong.stdout
    refused = run_gateway("echo", env={**env, "READROOM_GATEWAY_API_TOKEN": "rr_not_a_real_token"})
    assert refused.returncode == 1 and "the platform refused the API token (HTTP 401" in refused.stdout
    closed = run_gateway("echo", env={**env, "READROOM_GATEWAY_PLATFORM_URL": f"http://127.0.0.1:{free_port()}"})
    assert closed.returncode == 1 and "cannot reach the platform" in closed.stdout
