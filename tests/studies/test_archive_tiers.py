"""Hot and cold tiers: evict archived studies from Orthanc, bring them back from S3, verify the archive."""

import io

import pytest
import requests
from django.core.management import CommandError, call_command

from saas.studies.enums import StudyStatus
from saas.studies.models import Instance, Study
from saas.studies.services import study_rehydrate
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.orthanc import orthanc_driver, orthanc_endpoint, orthanc_spec
from tenants.provisioning.storage import s3_client
from tests.studies.conftest import stow

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _orthanc_instances(tenant):
    endpoint = orthanc_endpoint(tenant)
    return requests.get(f"{endpoint.http_url}/instances", auth=endpoint.auth, timeout=10).json()


@pytest.fixture
def archived_study(client, clinic, write_token, pipeline):
    series = ct_series(patient_id="TIER-1", patient_name="Synthetic^Tier", accession_number="ACC-T1", slices=3)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in series]).status_code == 200
    pipeline.sync_until_completed(1)
    pipeline.archive_all()
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(study_instance_uid=series[0].StudyInstanceUID)
    assert study.status == StudyStatus.ARCHIVED
    return study


def test_evicted_study_leaves_orthanc_and_comes_back_from_s3_unchanged(clinic, archived_study):
    # when archived studies are evicted from the hot tier
    out = io.StringIO()
    call_command("evict_archived", older_than=0, tenant=clinic.slug, stdout=out)
    # then the study is gone from Orthanc but still indexed
    assert "evicted 1 studies" in out.getvalue()
    assert _orthanc_instances(clinic) == []
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(pk=archived_study.pk)
        assert study.evicted_at is not None
        # when it is read again, it is rehydrated from S3 with every hash checked
        assert study_rehydrate(tenant=clinic, study=study) == 3
        study.refresh_from_db()
        instances = Instance.objects.filter(study=study)
        # then Orthanc holds it again, and the index is unchanged: same version, same three instances
        assert len(_orthanc_instances(clinic)) == 3
        assert (study.evicted_at, study.version, study.status, instances.count()) == (None, 1, StudyStatus.ARCHIVED, 3)


def test_a_study_whose_orthanc_holds_an_instance_not_indexed_yet_is_not_evicted(clinic, archived_study):
    # given a late instance of the archived study that Orthanc acknowledged but the sync has not indexed yet
    late = ct_series(
        patient_id="TIER-1",
        patient_name="Synthetic^Tier",
        accession_number="ACC-T1",
        slices=1,
        study_instance_uid=archived_study.study_instance_uid,
    )[0]
    endpoint = orthanc_endpoint(clinic)
    requests.post(f"{endpoint.http_url}/instances", data=dataset_bytes(late), auth=endpoint.auth, timeout=10)
    # when archived studies are evicted
    out = io.StringIO()
    call_command("evict_archived", older_than=0, tenant=clinic.slug, stdout=out)
    # then this one is left in Orthanc whole, late instance included, for the sync to index and archive
    assert "evicted 0 studies" in out.getvalue()
    assert len(_orthanc_instances(clinic)) == 4
    with tenant_context(tenant_ids=[clinic.pk]):
        assert Study.objects.get(pk=archived_study.pk).evicted_at is None


def test_an_eviction_while_orthanc_is_down_fails_by_name_and_leaves_the_study_as_it_was(clinic, archived_study):
    # given the clinic's Orthanc stopped while its archived studies are evicted
    driver, spec = orthanc_driver(), orthanc_spec(clinic)
    driver.stop(clinic.slug)
    try:
        # when eviction runs, then it fails loudly naming the study
        with pytest.raises(CommandError, match=f"study {archived_study.pk}"):
            call_command("evict_archived", older_than=0, tenant=clinic.slug, stdout=io.StringIO())
    finally:
        driver.ensure_running(spec)
    # and nothing was taken out: the study is still online and whole in Orthanc
    with tenant_context(tenant_ids=[clinic.pk]):
        assert Study.objects.get(pk=archived_study.pk).evicted_at is None
    assert len(_orthanc_instances(clinic)) == 3


def test_verify_archive_reports_an_object_whose_hash_differs(clinic, archived_study):
    with tenant_context(tenant_ids=[clinic.pk]):
        instance = Instance.objects.filter(study=archived_study).first()
    out, err = io.StringIO(), io.StringIO()
    call_command("verify_archive", tenant=clinic.slug, stdout=out, stderr=err)
    assert "checked 3 archived instances, 0 differ" in out.getvalue()
    # when an archived object is altered behind the platform's back
    s3_client().put_object(Bucket=clinic.s3_bucket, Key=instance.s3_key, Body=b"tampered")
    with pytest.raises(SystemExit) as exit_:
        call_command("verify_archive", tenant=clinic.slug, stdout=io.StringIO(), stderr=err)
    # then verify_archive exits 1 naming that object
    assert exit_.value.code == 1
    assert instance.s3_key in err.getvalue()
