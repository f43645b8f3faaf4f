"""Conformance: the `dicomweb-client` library stores, searches and retrieves against a real gunicorn."""

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient

from saas.studies.models import Study
from saas.studies.services import orthanc_sync
from saas.studies.synthetic import ct_series
from tenants.context import tenant_context
from tests.conftest import committed

pytestmark = [pytest.mark.django_db(transaction=False), pytest.mark.orthanc]


def _index(tenant) -> None:
    with tenant_context(tenant_ids=[tenant.pk]):
        orthanc_sync(tenant=tenant, on_archive=lambda instance: None, on_completed=lambda study, completion: None)


def _indexed(tenant, study_instance_uid) -> bool:
    with tenant_context(tenant_ids=[tenant.pk]):
        return Study.objects.filter(tenant=tenant, study_instance_uid=study_instance_uid).exists()


def test_dicomweb_client_searches_and_retrieves_what_it_stored(live_platform):
    # given a clinic and a token that may send and read
    tenant, raw = live_platform.tenant_with_token(prefix="conform", scopes=("studies:write", "studies:read"))
    dicomweb = DICOMwebClient(
        url=f"{live_platform.url}/dicomweb/{tenant.slug}", headers={"Authorization": f"Bearer {raw}"}
    )
    datasets = ct_series(patient_id="CONF-1", patient_name="Synthetic^Conformance", accession_number="ACC-C1", slices=3)
    study_uid, series_uid = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
    # when it stores a CT by STOW-RS and the change feed is indexed (committed, for gunicorn to see)
    stored = dicomweb.store_instances(datasets)
    assert len(stored.ReferencedSOPSequence) == 3
    committed(_index, tenant)
    assert committed(_indexed, tenant, study_uid)
    # then QIDO-RS finds the study and its series
    studies = dicomweb.search_for_studies(search_filters={"PatientID": "CONF-1"})
    assert [study["0020000D"]["Value"][0] for study in studies] == [study_uid]
    assert studies[0]["00100010"]["Value"] == [{"Alphabetic": "Synthetic^Conformance"}]
    series = dicomweb.search_for_series(study_instance_uid=study_uid)
    assert [item["0020000E"]["Value"][0] for item in series] == [series_uid]
    assert dicomweb.search_for_studies(search_filters={"PatientName": "synthetic^conf*"}, fields=["all"])
    instances = dicomweb.search_for_instances(study_instance_uid=study_uid, series_instance_uid=series_uid)
    assert len(instances) == 3
    # and WADO-RS answers the metadata, whole instances and frames
    metadata = dicomweb.retrieve_study_metadata(study_uid)
    assert sorted(item["00080018"]["Value"][0] for item in metadata) == sorted(d.SOPInstanceUID for d in datasets)
    assert all(f"/dicomweb/{tenant.slug}/studies/" in item["7FE00010"]["BulkDataURI"] for item in metadata)
    middle = datasets[1]
    instance = dicomweb.retrieve_instance(study_uid, series_uid, middle.SOPInstanceUID)
    assert instance.SOPInstanceUID == middle.SOPInstanceUID
    assert np.array_equal(instance.pixel_array, middle.pixel_array)
    [frame] = dicomweb.retrieve_instance_frames(study_uid, series_uid, middle.SOPInstanceUID, frame_numbers=[1])
    assert frame == middle.PixelData
    series_metadata = dicomweb.retrieve_series_metadata(study_uid, series_uid)
    assert len(series_metadata) == 3
    rendered = dicomweb.retrieve_instance_rendered(study_uid, series_uid, middle.SOPInstanceUID)
    assert rendered[:2] == b"\xff\xd8"
