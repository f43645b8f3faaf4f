"""STOW-RS to the index and the archive: stored once, indexed, completed once per version, archived with SHA-256."""

import hashlib

import pytest
import requests

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.enums import StudyStatus
from saas.studies.models import Instance, Study
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.context import tenant_context
from tenants.enums import Role, TokenScope
from tenants.orthanc import orthanc_endpoint
from tenants.provisioning.storage import s3_client
from tests.factories import api_token, person
from tests.studies.conftest import multipart_related, stow

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _orthanc_instance_count(tenant) -> int:
    endpoint = orthanc_endpoint(tenant)
    return len(requests.get(f"{endpoint.http_url}/instances", auth=endpoint.auth, timeout=10).json())


def _ct(slices=3, **kwargs):
    return ct_series(
        patient_id="ING-1", patient_name="Synthetic^Ingest", accession_number="ACC-I1", slices=slices, **kwargs
    )


def test_stow_stores_indexes_completes_and_archives_each_instance_once(client, clinic, write_token, pipeline):
    # given a three-slice CT sent by STOW-RS
    series = _ct()
    response = stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in series])
    # then every instance is acknowledged with a retrieve URL
    assert response.status_code == 200, response.content
    referenced = response.json()["00081199"]["Value"]
    assert sorted(item["00081155"]["Value"][0] for item in referenced) == sorted(ds.SOPInstanceUID for ds in series)
    assert _orthanc_instance_count(clinic) == 3
    # when the change feed is followed until Orthanc reports the study stable, and the archive runs
    pipeline.sync_until_completed(1)
    assert pipeline.archive_all() == 3
    # then the index holds one complete, archived study with tags and counts
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.select_related("patient").get(study_instance_uid=series[0].StudyInstanceUID)
        instances = list(Instance.objects.select_related("series").filter(study=study))
    assert (study.status, study.version, study.instance_count, study.series_count) == (StudyStatus.ARCHIVED, 1, 3, 1)
    assert (study.patient.patient_id, study.accession_number, study.modalities) == ("ING-1", "ACC-I1", ["CT"])
    # and each instance sits in the tenant's bucket under the contract's key with the indexed SHA-256
    s3 = s3_client()
    for instance in instances:
        uids = (study.study_instance_uid, instance.series.series_instance_uid, instance.sop_instance_uid)
        assert instance.s3_key == "studies/{}/{}/{}.dcm".format(*uids)
        body = s3.get_object(Bucket=clinic.s3_bucket, Key=instance.s3_key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == instance.sha256 and instance.archived_at is not None
        assert body[:128] == b"\0" * 128 and body[128:132] == b"DICM"
    assert pipeline.completed == [(study.pk, 1)]


def test_the_same_instance_sent_twice_is_stored_and_indexed_once(client, clinic, write_token, pipeline):
    series = _ct(slices=2)
    parts = [dataset_bytes(ds) for ds in series]
    assert stow(client, clinic.slug, write_token, parts).status_code == 200
    pipeline.sync()
    again = stow(client, clinic.slug, write_token, parts)
    pipeline.sync()
    assert again.status_code == 200
    assert _orthanc_instance_count(clinic) == 2
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(study_instance_uid=series[0].StudyInstanceUID)
        assert (study.instance_count, Instance.objects.filter(study=study).count()) == (2, 2)


def test_an_instance_uid_reused_in_another_study_or_series_is_refused_and_the_first_copy_stays(
    client, clinic, write_token, pipeline
):
    # given a two-slice study stored and indexed
    series = _ct(slices=2)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in series]).status_code == 200
    pipeline.sync()
    # when its first slice comes again under another study, and its second under another series of the study
    moved, regrouped = _ct(slices=2)
    moved.SOPInstanceUID = moved.file_meta.MediaStorageSOPInstanceUID = series[0].SOPInstanceUID
    regrouped.StudyInstanceUID = series[1].StudyInstanceUID
    regrouped.SOPInstanceUID = regrouped.file_meta.MediaStorageSOPInstanceUID = series[1].SOPInstanceUID
    response = stow(client, clinic.slug, write_token, [dataset_bytes(moved), dataset_bytes(regrouped)])
    # then both are refused as duplicate SOP instances (0x0111), by name, and nothing new is stored
    assert response.status_code == 409, response.content
    failures = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"][0] for item in failures] == [0x0111, 0x0111]
    assert [item["00081155"]["Value"][0] for item in failures] == [ds.SOPInstanceUID for ds in series]
    assert failures[0]["00000902"]["Value"] == ["SOP Instance UID already stored in another study or series"]
    assert _orthanc_instance_count(clinic) == 2
    # and a new slice of another study that reuses the indexed series' UID is refused too
    (borrowing,) = _ct(slices=1)
    borrowing.SeriesInstanceUID = series[0].SeriesInstanceUID
    refused = stow(client, clinic.slug, write_token, [dataset_bytes(borrowing)])
    assert refused.status_code == 409
    [failure] = refused.json()["00081198"]["Value"]
    assert failure["00081197"]["Value"] == [0x0111]
    assert failure["00000902"]["Value"] == ["Series Instance UID already stored in another study"]
    assert _orthanc_instance_count(clinic) == 2
    # and the very same slice sent again is still taken (stored once)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(series[0])]).status_code == 200
    assert _orthanc_instance_count(clinic) == 2


def test_one_request_cannot_store_one_new_uid_in_two_studies(client, clinic, write_token, pipeline):
    # given one request with a new series under two studies, and a new slice twice under two series
    first, second, third = _ct(slices=3)
    second.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    twin = _ct(slices=1)[0]
    twin.StudyInstanceUID = third.StudyInstanceUID
    twin.SOPInstanceUID = twin.file_meta.MediaStorageSOPInstanceUID = third.SOPInstanceUID
    response = stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in (first, second, third, twin)])
    # then the first of each is stored and the other refused in the same answer, not acknowledged and later dropped
    assert response.status_code == 202, response.content
    assert [item["00081155"]["Value"][0] for item in response.json()["00081198"]["Value"]] == [
        second.SOPInstanceUID,
        twin.SOPInstanceUID,
    ]
    assert pipeline.sync().indexed == 2 and _orthanc_instance_count(clinic) == 2


def test_a_new_series_of_an_indexed_study_under_another_patient_id_is_taken_whole(
    client, clinic, write_token, pipeline
):
    # given an indexed study, and a second series of it (an SR, a secondary capture) made with another Patient ID
    (first,) = _ct(slices=1)
    assert stow(client, clinic.slug, write_token, [dataset_bytes(first)]).status_code == 200
    pipeline.sync()
    other = _ct(slices=3, study_instance_uid=first.StudyInstanceUID)
    for dataset in other:
        dataset.PatientID = "ING-OTHER"
    # when its slices arrive in two requests, then every one is stored and indexed into the study
    assert stow(client, clinic.slug, write_token, [dataset_bytes(other[0])]).status_code == 200
    pipeline.sync()
    assert stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in other[1:]]).status_code == 200
    pipeline.sync()
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(study_instance_uid=first.StudyInstanceUID)
    assert study.instance_count == 4 and _orthanc_instance_count(clinic) == 4


def test_a_late_instance_reopens_the_study_and_completes_it_as_the_next_version(client, clinic, write_token, pipeline):
    # given a completed two-slice study
    series = _ct(slices=3)
    stow(client, clinic.slug, write_token, [dataset_bytes(ds) for ds in series[:2]])
    pipeline.sync_until_completed(1)
    # when the third slice arrives later
    stow(client, clinic.slug, write_token, [dataset_bytes(series[2])])
    pipeline.sync_until_completed(2)
    # then the same study completes again as version 2 with all three instances
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(study_instance_uid=series[0].StudyInstanceUID)
    assert Study.objects.dangerously_unscoped().filter(study_instance_uid=series[0].StudyInstanceUID).count() <= 1
    assert (study.version, study.instance_count) == (2, 3)
    assert pipeline.completed == [(study.pk, 1), (study.pk, 2)]


def test_bad_parts_are_refused_by_name_while_good_ones_are_stored(client, clinic, write_token):
    # given one valid slice, one text file and one executable polyglot
    good = dataset_bytes(_ct(slices=1)[0])
    polyglot = b"MZ" + good[2:]
    response = stow(client, clinic.slug, write_token, [good, b"hello, not DICOM", polyglot])
    # then the answer is 202: one stored, two failed with their reasons, and a security alert for the polyglot
    assert response.status_code == 202
    failures = response.json()["00081198"]["Value"]
    comments = [item["00000902"]["Value"][0] for item in failures]
    assert len(response.json()["00081199"]["Value"]) == 1 and len(failures) == 2
    assert "not a DICOM file" in comments[0]
    assert _orthanc_instance_count(clinic) == 1
    with tenant_context(tenant_ids=[clinic.pk]):
        assert AuditEvent.objects.filter(tenant_id=clinic.pk, event_id=AuditEventId.SECURITY_ALERT).count() == 1


def test_nothing_valid_is_a_409_and_nothing_is_stored(client, clinic, write_token):
    response = stow(client, clinic.slug, write_token, [b"garbage"])
    assert response.status_code == 409 and _orthanc_instance_count(clinic) == 0


def test_a_read_only_token_cannot_store(client, clinic):
    _, raw = api_token(tenant=clinic, scopes=[TokenScope.STUDIES_READ])
    response = stow(client, clinic.slug, raw, [dataset_bytes(_ct(slices=1)[0])])
    assert response.status_code == 403 and "studies:write" in response.json()["detail"]
    assert _orthanc_instance_count(clinic) == 0


@pytest.mark.parametrize(
    ("role", "allowed"), [(Role.CLINIC_STAFF, True), (Role.RADIOLOGIST, False), (Role.REFERRING_PHYSICIAN, False)]
)
def test_people_store_studies_as_clinic_staff_or_administrators_only(client, clinic, role, allowed):
    # given a person of the clinic signed in in the browser: staff upload, readers only read
    client.force_login(person(role=role, tenant=clinic))
    body, content_type = multipart_related([dataset_bytes(_ct(slices=1)[0])])
    # when they send a study by STOW-RS with their session
    response = client.post(f"/dicomweb/{clinic.slug}/studies", data=body, content_type=content_type)
    # then only clinic staff (and administrators) store it
    if allowed:
        assert response.status_code == 200, response.content
        assert _orthanc_instance_count(clinic) == 1
    else:
        assert response.status_code == 403 and "clinic administrators and clinic staff" in response.json()["detail"]
        assert _orthanc_instance_count(clinic) == 0


def test_a_body_that_is_not_multipart_related_is_refused_with_the_reason(client, clinic, write_token):
    response = client.post(
        f"/dicomweb/{clinic.slug}/studies",
        data=b"{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {write_token}",
    )
    assert response.status_code == 415 and "multipart/related" in response.json()["detail"]
