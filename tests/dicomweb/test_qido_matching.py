"""QIDO-RS from the index: wildcards, date ranges, lists, levels, includefield, paging, DICOM JSON, evicted studies."""

import pytest
from django.utils import timezone

from saas.audit.aggregation import audit_aggregates_pending
from saas.audit.enums import AuditEventId
from saas.audit.models import AuditEvent
from saas.studies.models import Instance, Series, Study
from tenants.context import tenant_context
from tenants.enums import TokenScope
from tests.dicomweb.conftest import index_rows
from tests.factories import api_token, tenant_row

pytestmark = [pytest.mark.django_db]

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
PATIENT_NAME = "00100010"
PATIENT_ID = "00100020"


@pytest.fixture
def clinic():
    tenant = tenant_row()
    _, raw = api_token(tenant=tenant, scopes=[TokenScope.STUDIES_READ])
    studies = {
        "smith": index_rows(
            tenant,
            patient_id="P-100",
            patient_name="Smith^John",
            study_date="20260110",
            study_time="083000",
            accession_number="ACC-1",
            study_description="CT HEAD",
            modalities=("CT",),
        ),
        "smyth": index_rows(
            tenant,
            patient_id="P-101",
            patient_name="Smyth^Jane",
            study_date="20260215",
            accession_number="ACC-2",
            modalities=("CT", "MR"),
            series=2,
        ),
        "jones": index_rows(
            tenant,
            patient_id="Q-200",
            patient_name="Jones^Adam Smith",
            study_date="20251231",
            accession_number="ACC-3",
            modalities=("MR",),
        ),
    }
    return tenant, raw, studies


def _get(client, raw, path, **params):
    return client.get(path, params, HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_ACCEPT="application/dicom+json")


def _search(client, clinic, path="studies", **params):
    tenant, raw, _ = clinic
    response = _get(client, raw, f"/dicomweb/{tenant.slug}/{path}", **params)
    assert response.status_code == 200, response.content
    return response


def _uids(response, tag=STUDY_UID):
    return sorted(match[tag]["Value"][0] for match in response.json())


def _study_uids(clinic, *names):
    return sorted(clinic[2][name].study_instance_uid for name in names)


def test_patient_name_wildcards_match_case_insensitively_on_the_whole_name(client, clinic):
    assert _uids(_search(client, clinic, PatientName="smi*")) == _study_uids(clinic, "smith")
    assert _uids(_search(client, clinic, PatientName="Sm?th*")) == _study_uids(clinic, "smith", "smyth")
    assert _uids(_search(client, clinic, PatientName="*Smith")) == _study_uids(clinic, "jones")
    # without a wildcard the whole name must match
    assert _uids(_search(client, clinic, PatientName="Smith")) == []
    assert _uids(_search(client, clinic, PatientName="SMITH^JOHN")) == _study_uids(clinic, "smith")
    # fuzzy matching finds a name component by its start
    assert _uids(_search(client, clinic, PatientName="jan", fuzzymatching="true")) == _study_uids(clinic, "smyth")


def test_patient_id_and_accession_number_match_exactly_or_by_wildcard(client, clinic):
    assert _uids(_search(client, clinic, PatientID="P-100")) == _study_uids(clinic, "smith")
    assert _uids(_search(client, clinic, PatientID="P-*")) == _study_uids(clinic, "smith", "smyth")
    assert _uids(_search(client, clinic, PatientID="p-100")) == []
    assert _uids(_search(client, clinic, AccessionNumber="ACC-3")) == _study_uids(clinic, "jones")
    # hex tags name attributes as well as keywords
    assert _uids(_search(client, clinic, **{"00100020": "Q-200"})) == _study_uids(clinic, "jones")


def test_study_date_matches_single_dates_and_ranges_with_open_ends(client, clinic):
    assert _uids(_search(client, clinic, StudyDate="20260110")) == _study_uids(clinic, "smith")
    assert _uids(_search(client, clinic, StudyDate="20260101-20260131")) == _study_uids(clinic, "smith")
    assert _uids(_search(client, clinic, StudyDate="20260101-")) == _study_uids(clinic, "smith", "smyth")
    assert _uids(_search(client, clinic, StudyDate="-20260110")) == _study_uids(clinic, "smith", "jones")
    assert _uids(_search(client, clinic, StudyTime="08-09")) == _study_uids(clinic, "smith")


def test_person_names_with_component_groups_and_several_values(client, clinic):
    # given a study whose patient name has an ideographic group, read by two referring physicians
    tenant, _, _ = clinic
    yamada = index_rows(
        tenant,
        patient_id="J-1",
        patient_name="Yamada^Tarou=山田^太郎",
        referring_physician="Sato^Hanako\\Suzuki^Ichiro",
    )
    # when searched by the alphabetic name, the ideographic one, or one of the physicians, then it is found
    for search in (
        {"PatientName": "yamada^tarou"},
        {"PatientName": "山田^太郎"},
        {"ReferringPhysicianName": "Suzuki^Ichiro"},
    ):
        assert _uids(_search(client, clinic, **search)) == [yamada.study_instance_uid], search
    # and the answer carries each group and each value apart, as DICOM JSON has them
    [match] = _search(client, clinic, PatientName="Yamada^Tarou", includefield="ReferringPhysicianName").json()
    assert match[PATIENT_NAME]["Value"] == [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]
    assert match["00080090"]["Value"] == [{"Alphabetic": "Sato^Hanako"}, {"Alphabetic": "Suzuki^Ichiro"}]
    # a part of a group is no match without a wildcard; with one, it matches within each value or group
    assert _uids(_search(client, clinic, PatientName="Yamada")) == []
    for search in ({"PatientName": "山田*"}, {"PatientName": "*tarou"}, {"ReferringPhysicianName": "Suzuki*"}):
        assert _uids(_search(client, clinic, **search)) == [yamada.study_instance_uid], search
    assert _uids(_search(client, clinic, ReferringPhysicianName="Sato*Ichiro")) == []


def test_modalities_and_study_uid_lists(client, clinic):
    assert _uids(_search(client, clinic, ModalitiesInStudy="MR")) == _study_uids(clinic, "smyth", "jones")
    assert _uids(_search(client, clinic, ModalitiesInStudy="CT,MR")) == _study_uids(clinic, "smith", "smyth", "jones")
    # `*` alone matches everything; wildcards match within one code, never across two of a study
    everyone = _study_uids(clinic, "smith", "smyth", "jones")
    assert _uids(_search(client, clinic, ModalitiesInStudy="*")) == everyone
    assert _uids(_search(client, clinic, ModalitiesInStudy="m*")) == _study_uids(clinic, "smyth", "jones")
    assert _uids(_search(client, clinic, ModalitiesInStudy="?T")) == _study_uids(clinic, "smith", "smyth")
    assert _uids(_search(client, clinic, ModalitiesInStudy="C*R")) == []
    assert _uids(_search(client, clinic, ModalitiesInStudy="US,M?")) == _study_uids(clinic, "smyth", "jones")
    assert len(_search(client, clinic, "series", Modality="*").json()) == 4
    assert len(_search(client, clinic, "series", Modality="?R").json()) == 2
    wanted = _study_uids(clinic, "smith", "jones")
    assert _uids(_search(client, clinic, StudyInstanceUID=",".join(wanted))) == wanted
    assert _uids(_search(client, clinic, StudyInstanceUID="\\".join(wanted))) == wanted


def test_the_answer_is_dicom_json_with_the_standard_study_attributes(client, clinic):
    response = _search(client, clinic, PatientID="P-101")
    assert response["Content-Type"] == "application/dicom+json"
    [match] = response.json()
    tenant, _, studies = clinic
    uid = studies["smyth"].study_instance_uid
    assert match[PATIENT_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Smyth^Jane"}]}
    assert match[PATIENT_ID] == {"vr": "LO", "Value": ["P-101"]}
    assert match["00080020"] == {"vr": "DA", "Value": ["20260215"]}
    assert match["00080050"] == {"vr": "SH", "Value": ["ACC-2"]}
    assert match["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert match["00201206"] == {"vr": "IS", "Value": [2]}
    assert match["00201208"] == {"vr": "IS", "Value": [4]}
    assert match["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}
    assert match["00081190"]["Value"][0].endswith(f"/dicomweb/{tenant.slug}/studies/{uid}")
    for tag in ("00080030", "00081030", "00080090"):
        assert "vr" in match[tag]


def test_series_and_instances_can_be_searched_at_every_level(client, clinic):
    tenant, raw, studies = clinic
    study = studies["smyth"]
    with tenant_context(tenant_ids=[tenant.pk]):
        series = list(Series.objects.filter(study=study).order_by("series_number"))
        instances = list(Instance.objects.filter(series=series[1]).order_by("instance_number"))
        jones_series = list(Series.objects.filter(study=studies["jones"]))
    # all series of the clinic, narrowed by a study attribute and by modality
    all_mr = _search(client, clinic, "series", Modality="MR")
    assert _uids(all_mr, SERIES_UID) == sorted(
        [series[1].series_instance_uid, *[s.series_instance_uid for s in jones_series]]
    )
    # the study attributes ride along when the search spans studies
    assert all(PATIENT_ID in match for match in all_mr.json())
    in_study = _search(client, clinic, f"studies/{study.study_instance_uid}/series")
    assert _uids(in_study, SERIES_UID) == sorted(s.series_instance_uid for s in series)
    assert in_study.json()[0]["00200011"] == {"vr": "IS", "Value": [1]}
    assert PATIENT_ID not in in_study.json()[0]
    # instances: of a study, of a series, and of the clinic by SOP Instance UID
    of_study = _search(client, clinic, f"studies/{study.study_instance_uid}/instances").json()
    assert len(of_study) == 4
    # the instances of a study span its series, so each carries its series' attributes; within a series not
    assert {tuple(match["00080060"]["Value"]) for match in of_study} == {("CT",), ("MR",)}
    assert all("00200011" in match for match in of_study)
    series_path = f"studies/{study.study_instance_uid}/series/{series[1].series_instance_uid}/instances"
    assert "00080060" not in _search(client, clinic, series_path).json()[0]
    assert _uids(_search(client, clinic, series_path), SOP_UID) == sorted(i.sop_instance_uid for i in instances)
    found = _search(client, clinic, "instances", SOPInstanceUID=instances[0].sop_instance_uid).json()
    assert [match[SOP_UID]["Value"][0] for match in found] == [instances[0].sop_instance_uid]
    assert found[0]["00081190"]["Value"][0].endswith(
        f"/series/{series[1].series_instance_uid}/instances/{instances[0].sop_instance_uid}"
    )
    assert _search(client, clinic, series_path, InstanceNumber="2").json()[0]["00200013"]["Value"] == [2]


def test_includefield_adds_attributes_and_all_adds_every_one(client, clinic):
    _, _, studies = clinic
    path = f"studies/{studies['smith'].study_instance_uid}/series"
    plain = _search(client, clinic, path).json()[0]
    named = _search(client, clinic, path, includefield="PatientID,00100010").json()[0]
    everything = _search(client, clinic, path, includefield="all").json()[0]
    assert PATIENT_ID not in plain and PATIENT_NAME not in plain
    assert named[PATIENT_ID]["Value"] == ["P-100"] and named[PATIENT_NAME]["Value"] == [{"Alphabetic": "Smith^John"}]
    assert {PATIENT_ID, PATIENT_NAME, "00080050", "00201208"} <= set(everything)


def test_limit_and_offset_page_through_newest_first_with_a_warning_when_more_remain(client, clinic):
    first = _search(client, clinic, limit="2")
    second = _search(client, clinic, limit="2", offset="2")
    assert _uids(first) == _study_uids(clinic, "smith", "smyth") and "additional results" in first["Warning"]
    assert _uids(second) == _study_uids(clinic, "jones") and "Warning" not in second
    assert [m["00080020"]["Value"][0] for m in first.json()] == ["20260215", "20260110"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"PatientWeight": "80"}, "PatientWeight"),
        ({"NotAKeyword": "x"}, "NotAKeyword"),
        ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
        ({"StudyDate": "2026-01-01"}, "StudyDate"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"limit": "100000"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"includefield": "NoSuchAttribute"}, "NoSuchAttribute"),
    ],
)
def test_bad_parameters_are_refused_by_name_and_nothing_is_audited(client, clinic, params, named):
    tenant, raw, _ = clinic
    response = _get(client, raw, f"/dicomweb/{tenant.slug}/studies", **params)
    assert response.status_code == 400 and named in response.json()["detail"]
    with tenant_context(tenant_ids=[tenant.pk]):
        assert not AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=AuditEventId.QUERY).exists()
    assert audit_aggregates_pending() == 0


def test_evicted_studies_are_still_found_and_marked_nearline(client, clinic):
    tenant, _, studies = clinic
    with tenant_context(tenant_ids=[tenant.pk]):
        Study.objects.filter(pk=studies["jones"].pk).update(evicted_at=timezone.now())
    [match] = _search(client, clinic, PatientID="Q-200").json()
    assert match["00080056"]["Value"] == ["NEARLINE"]


def test_another_clinics_studies_are_never_matched(client, clinic):
    other = tenant_row()
    index_rows(other, patient_id="P-100", patient_name="Smith^John")
    assert _uids(_search(client, clinic, PatientID="P-100")) == _study_uids(clinic, "smith")


def test_a_search_across_studies_is_audited_at_once_and_one_within_a_study_is_aggregated(client, clinic):
    tenant, _, studies = clinic
    _search(client, clinic, PatientID="P-*")
    _search(client, clinic, f"studies/{studies['smith'].study_instance_uid}/series")
    with tenant_context(tenant_ids=[tenant.pk]):
        [query] = AuditEvent.objects.filter(tenant_id=tenant.pk, event_id=AuditEventId.QUERY)
    assert query.study_instance_uids == _study_uids(clinic, "smith", "smyth")
    assert sorted(query.patient_ids) == ["P-100", "P-101"]
    assert audit_aggregates_pending() == 1
