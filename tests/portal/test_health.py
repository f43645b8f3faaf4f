"""/healthz and /readyz: readiness names what is down, and recovers when it is back."""

import pytest

from tenants.orthanc import orthanc_driver, orthanc_spec
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def test_healthz_answers_while_the_process_runs(client):
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.orthanc
def test_readyz_turns_503_when_a_tenants_orthanc_dies_and_200_when_back(client, unique_slug):
    # given a provisioned clinic and a ready platform
    tenant, _ = tenant_create(slug=unique_slug("ready"), name="Ready Clinic")
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    assert {"database", "broker", "s3", f"orthanc:{tenant.slug}"} <= set(ready.json()["checked"])
    # when the clinic's Orthanc is killed
    orthanc_driver().stop(tenant.slug)
    down = client.get("/readyz")
    # then readiness fails and names that Orthanc only
    assert down.status_code == 503
    assert list(down.json()["failed"]) == [f"orthanc:{tenant.slug}"]
    # and when it is back, the platform is ready again
    orthanc_driver().ensure_running(orthanc_spec(tenant))
    assert client.get("/readyz").status_code == 200
