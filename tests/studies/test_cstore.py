"""C-STORE straight to the tenant's AE title: registered devices only, validated on sync, indexed."""

import json
import subprocess

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.models import Study
from saas.studies.synthetic import ct_series
from tenants.context import tenant_context
from tenants.enums import Role
from tenants.orthanc import orthanc_endpoint
from tests.factories import person

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _storescu(clinic, calling_ae, files):
    return subprocess.run(
        [
            "storescu",
            "-aet",
            calling_ae,
            "-aec",
            clinic.dicom_ae_title,
            "127.0.0.1",
            str(clinic.dicom_port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _register(client, clinic, ae_title):
    client.force_login(person(role=Role.CLINIC_ADMIN, tenant=clinic))
    return client.post(
        "/api/v1/modalities/",
        data=json.dumps({"name": "ct-room-1", "ae_title": ae_title, "host": "127.0.0.1", "port": 104}),
        content_type="application/json",
    )


def test_an_unregistered_device_is_refused_and_a_registered_one_is_indexed(client, clinic, pipeline, tmp_path):
    # given a three-slice CT on disk
    series = ct_series(patient_id="CS-1", patient_name="Synthetic^Cstore", accession_number="ACC-C1", slices=3)
    files = []
    for number, dataset in enumerate(series):
        files.append(tmp_path / f"{number}.dcm")
        dataset.save_as(files[-1], enforce_file_format=True)
    # when a device the clinic never registered sends it, then the association is refused
    refused = _storescu(clinic, "CT_ROOM_1", files)
    assert refused.returncode != 0
    # when the clinic administrator registers the device and it sends again
    assert _register(client, clinic, "CT_ROOM_1").status_code == 201
    accepted = _storescu(clinic, "CT_ROOM_1", files)
    # then the instances are stored, indexed from the change feed and the study completes
    assert accepted.returncode == 0, accepted.stderr
    pipeline.sync_until_completed(1)
    with tenant_context(tenant_ids=[clinic.pk]):
        study = Study.objects.get(study_instance_uid=series[0].StudyInstanceUID)
    assert study.instance_count == 3


def test_a_class_the_platform_refuses_is_removed_again_on_sync(client, clinic, pipeline):
    # given a registered device that sends an RT Plan (stored by Orthanc, not accepted by ReadRoom)
    assert _register(client, clinic, "TPS_1").status_code == 201
    rt_plan = get_testdata_file("rtplan.dcm")
    assert _storescu(clinic, "TPS_1", [rt_plan]).returncode == 0
    # when the change feed is indexed
    pipeline.sync()
    # then it is gone from Orthanc, absent from the index, and the removal is audited
    endpoint = orthanc_endpoint(clinic)
    assert requests.get(f"{endpoint.http_url}/instances", auth=endpoint.auth, timeout=10).json() == []
    with tenant_context(tenant_ids=[clinic.pk]):
        assert not Study.objects.filter(study_instance_uid=pydicom.dcmread(rt_plan).StudyInstanceUID).exists()
        assert AuditEvent.objects.filter(tenant_id=clinic.pk, event_id=AuditEventId.STUDY_DELETED).exists()


def test_an_invalid_ae_title_is_refused_by_name(client, clinic):
    response = _register(client, clinic, "BAD\\AE")
    assert response.status_code == 400 and "AE title" in json.dumps(response.json())


def test_an_instance_with_inconsistent_pixel_data_sent_by_c_store_is_removed_on_sync(
    client, clinic, pipeline, tmp_path
):
    # given a registered device that sends a slice whose pixel data is shorter than Rows x Columns says
    assert _register(client, clinic, "CT_ROOM_2").status_code == 201
    broken = ct_series(patient_id="CS-2", patient_name="Synthetic^Broken", accession_number="ACC-C2", slices=1)[0]
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 2]
    path = tmp_path / "broken.dcm"
    broken.save_as(path, enforce_file_format=True)
    assert _storescu(clinic, "CT_ROOM_2", [path]).returncode == 0
    # when the change feed is indexed, then it is removed from Orthanc, never indexed, and audited with the reason
    pipeline.sync()
    endpoint = orthanc_endpoint(clinic)
    assert requests.get(f"{endpoint.http_url}/instances", auth=endpoint.auth, timeout=10).json() == []
    with tenant_context(tenant_ids=[clinic.pk]):
        assert not Study.objects.filter(study_instance_uid=broken.StudyInstanceUID).exists()
        removal = AuditEvent.objects.get(tenant_id=clinic.pk, event_id=AuditEventId.STUDY_DELETED)
    assert "pixel" in removal.detail["reason"].lower()
