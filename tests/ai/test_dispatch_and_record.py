"""Dispatch on completion and recording of results, with the real worker code run in this process.

The job goes through the real broker queue, the worker's `run_job` reads and writes the real S3 server
through the presigned URLs, and the result is recorded into the real Orthanc and index.
"""

import io

import numpy as np
import pydicom
import pytest

from inference_workers.app import run_job
from inference_workers.messages import STATUS_FAILED, InferenceJob, InferenceResult
from saas.ai.enums import AnalysisStatus
from saas.ai.models import Analysis, Finding
from saas.ai.selectors import study_findings
from saas.ai.services import analysis_record_result, analysis_retry, study_ai_dispatch
from saas.ai.tasks import dispatch_analysis
from saas.audit.models import AuditEvent
from saas.studies.enums import StudyAIStatus
from saas.studies.models import Study
from saas.studies.orthanc import orthanc_client
from tenants.context import tenant_context
from tenants.provisioning.storage import shared_s3_client as s3_client
from tests.ai.conftest import PATIENT_ID, PATIENT_NAME, chest_dx, lesion_ct, store_all, take_jobs, take_tasks

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def _complete(clinic, pipeline, datasets) -> Study:
    store_all(clinic, datasets)
    pipeline.sync_until_completed(len(pipeline.completed) + 1)
    with tenant_context(tenant_ids=[clinic.pk]):
        return Study.objects.get(study_instance_uid=datasets[0].StudyInstanceUID)


def _dispatch(clinic, study) -> list[dict]:
    with tenant_context(tenant_ids=[clinic.pk]):
        study_ai_dispatch(tenant=clinic, study_id=study.pk, version=study.version)
    return take_jobs(f"t{clinic.pk}.", expect=1)


def _record(clinic, result: InferenceResult):
    with tenant_context(tenant_ids=[clinic.pk]):
        return analysis_record_result(tenant=clinic, result=result)


def _orthanc_modalities(clinic, study_uid: str) -> list[str]:
    answer = orthanc_client(clinic).post(
        "/tools/find", json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
    )
    return sorted(series["MainDicomTags"].get("Modality", "") for series in answer.json())


def _orthanc_instance(clinic, sop_instance_uid: str) -> pydicom.Dataset:
    (orthanc_id,) = (
        orthanc_client(clinic)
        .post("/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}})
        .json()
    )
    return pydicom.dcmread(io.BytesIO(orthanc_client(clinic).get(f"/instances/{orthanc_id}/file").content))


def test_a_ct_with_a_15_mm_lesion_gets_seg_sr_findings_and_the_critical_flag(ai_clinic, pipeline):
    # Given a completed CT with one 15 mm lesion at a clinic with AI switched on
    datasets = lesion_ct()
    study = _complete(ai_clinic, pipeline, datasets)
    # When it is dispatched, the worker code runs the job, and the result is recorded
    (job_data,) = _dispatch(ai_clinic, study)
    job = InferenceJob.from_dict(job_data)
    assert job.model_name == "ct_focal_lesion" and job.output_urls.keys() == {"mask", "findings"}
    # (the input object in the clinic's bucket carries no patient identity)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        analysis = Analysis.objects.get()
        assert analysis.status == AnalysisStatus.DISPATCHED
        assert Study.objects.get().ai_status == StudyAIStatus.PENDING
    stored_input = s3_client().get_object(Bucket=ai_clinic.s3_bucket, Key=analysis.input_key)["Body"].read()
    assert PATIENT_NAME.encode() not in stored_input and PATIENT_ID.encode() not in stored_input
    result = run_job(job)
    recorded = _record(ai_clinic, result)
    # Then the study is flagged critical with a reason, the finding sits on the lesion's slice
    assert recorded.status == AnalysisStatus.SUCCEEDED
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        study = Study.objects.get()
        assert study.ai_status == StudyAIStatus.DONE and study.ai_critical
        assert "ct_focal_lesion" in study.ai_critical_reason and "mm" in study.ai_critical_reason
        findings = study_findings(study)
    assert len(findings) == 1
    finding = findings[0]
    assert finding["critical"] and 11.0 <= finding["diameter_mm"] <= 20.0
    lesion_slice = next(d for d in datasets if abs(float(d.ImagePositionPatient[2]) - 0.0) < 1.3)
    assert finding["sop_instance_uid"] == str(lesion_slice.SOPInstanceUID)
    assert finding["segment_number"] == 1 and finding["seg_sop_instance_uid"] == recorded.seg_sop_instance_uid
    # And a SEG and an SR (TID 1500) are in the clinic's Orthanc, beside the CT
    assert _orthanc_modalities(ai_clinic, study.study_instance_uid) == ["CT", "SEG", "SR"]
    seg = _orthanc_instance(ai_clinic, recorded.seg_sop_instance_uid)
    assert seg.SeriesDescription == "AI generated — not for clinical use"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "ct_focal_lesion"
    # (its frames outline the lesion on the slices it spans, the lesion's centre slice among them)
    framed = {
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
    }
    assert str(lesion_slice.SOPInstanceUID) in framed and 5 <= len(framed) <= 12
    # (and in the plane where the lesion is: the input was cut to the body, the SEG is on the full frames)
    rows, columns = np.nonzero(seg.pixel_array.any(axis=0))
    corner, spacing = [float(v) for v in lesion_slice.ImagePositionPatient], float(lesion_slice.PixelSpacing[0])
    assert corner[0] + columns.mean() * spacing == pytest.approx(40.0, abs=3.0)
    assert corner[1] + rows.mean() * spacing == pytest.approx(-30.0, abs=3.0)
    # And the time of each stage is kept, the Django side's beside the worker's
    assert {"input_build", "input_upload", "fetch", "preprocess", "forward", "write_back"} <= recorded.timings.keys()
    # And the processing is audited (dispatch as an export, the result as an import)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        events = AuditEvent.objects.filter(tenant_id=ai_clinic.pk, detail__operation__in=["ai_dispatch", "ai_result"])
        assert sorted(events.values_list("detail__operation", flat=True)) == ["ai_dispatch", "ai_result"]


def test_the_same_result_twice_is_recorded_once(ai_clinic, pipeline):
    study = _complete(ai_clinic, pipeline, lesion_ct(slices=32))
    (job_data,) = _dispatch(ai_clinic, study)
    result = run_job(InferenceJob.from_dict(job_data))
    _record(ai_clinic, result)
    # When the worker's message arrives a second time (a worker died between sending and marking)
    _record(ai_clinic, result)
    # Then there is one analysis, one set of findings, one SEG and one SR
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        assert Analysis.objects.count() == 1
        assert Finding.objects.count() == 1
    assert _orthanc_modalities(ai_clinic, study.study_instance_uid) == ["CT", "SEG", "SR"]


def test_the_ai_objects_arriving_do_not_ask_for_a_second_analysis(ai_clinic, pipeline):
    # Given an analysed study whose SEG and SR reopened it (a new version)
    study = _complete(ai_clinic, pipeline, lesion_ct(slices=32))
    (job_data,) = _dispatch(ai_clinic, study)
    _record(ai_clinic, run_job(InferenceJob.from_dict(job_data)))
    pipeline.sync_until_completed(2)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        reopened = Study.objects.get()
    assert reopened.version == 2
    # When the new version completes and is dispatched, then no job is sent and the findings remain
    assert _dispatch(ai_clinic, reopened) == []
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        assert Analysis.objects.count() == 1
        assert Study.objects.get().ai_critical
        assert len(study_findings(Study.objects.get())) == 1


def test_a_failed_result_is_visible_and_can_be_retried(ai_clinic, pipeline, django_capture_on_commit_callbacks):
    study = _complete(ai_clinic, pipeline, lesion_ct(slices=32))
    (job_data,) = _dispatch(ai_clinic, study)
    job = InferenceJob.from_dict(job_data)
    failed = InferenceResult(
        job_id=job.job_id,
        idempotency_key=job.idempotency_key,
        model_name=job.model_name,
        model_version=job.model_version,
        status=STATUS_FAILED,
        error="gave up after 3 deliveries (worker lost each time)",
    )
    _record(ai_clinic, failed)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        analysis = Analysis.objects.get()
        assert analysis.status == AnalysisStatus.FAILED and "3 deliveries" in analysis.error
        assert Study.objects.get().ai_status == StudyAIStatus.FAILED
        # When an administrator retries it, then it is pending again and the worker is asked to send it
        with django_capture_on_commit_callbacks(execute=True):
            retried = analysis_retry(tenant=ai_clinic, analysis=analysis)
        assert retried.status == AnalysisStatus.PENDING and retried.attempts == 1
        assert Study.objects.get().ai_status == StudyAIStatus.PENDING
    (task,) = take_tasks("ai.dispatch_analysis")
    assert task == {"tenant_id": ai_clinic.pk, "analysis_id": str(analysis.pk)}
    dispatch_analysis(**task)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        analysis.refresh_from_db()
        assert analysis.status == AnalysisStatus.DISPATCHED and analysis.attempts == 2
    # and the new attempt goes to the pool as a new job
    (second,) = take_jobs(f"t{ai_clinic.pk}.", expect=1)
    assert second["job_id"] != job.job_id and second["idempotency_key"] == job.idempotency_key
    # And a late result of the first attempt changes nothing
    _record(ai_clinic, failed)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        assert Analysis.objects.get().status == AnalysisStatus.DISPATCHED


def test_a_result_whose_output_is_missing_fails_by_name_and_stores_nothing(ai_clinic, pipeline):
    study = _complete(ai_clinic, pipeline, lesion_ct(slices=32))
    (job_data,) = _dispatch(ai_clinic, study)
    result = run_job(InferenceJob.from_dict(job_data))
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        analysis = Analysis.objects.get()
    # Given the mask object is gone from the bucket
    s3_client().delete_object(Bucket=ai_clinic.s3_bucket, Key=f"ai-outputs/{analysis.pk}/1/mask.npz")
    _record(ai_clinic, result)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        analysis.refresh_from_db()
        assert analysis.status == AnalysisStatus.FAILED and "mask.npz is not readable" in analysis.error
        assert Finding.objects.count() == 0
    assert _orthanc_modalities(ai_clinic, study.study_instance_uid) == ["CT"]


@pytest.mark.parametrize(
    ("arrays", "error"),
    [
        ({"mask": np.ones((2, 2, 2), np.uint8), "shape": np.array([32, 128, 128])}, "lacks 'offset'"),
        (
            {"mask": np.ones((4, 4, 4), np.uint8), "offset": np.array([30, 0, 0]), "shape": np.array([32, 128, 128])},
            "lies outside the input grid",
        ),
        (
            {"mask": np.ones((1, 1, 1), np.uint8), "offset": np.array([0, 0, 0]), "shape": np.array([31, 128, 128])},
            "mask has 31 slices, the input had 32",
        ),
    ],
)
def test_a_mask_that_does_not_fit_the_input_fails_by_name_and_stores_nothing(ai_clinic, pipeline, arrays, error):
    study = _complete(ai_clinic, pipeline, lesion_ct(slices=32))
    (job_data,) = _dispatch(ai_clinic, study)
    result = run_job(InferenceJob.from_dict(job_data))
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        analysis = Analysis.objects.get()
    # Given the worker wrote a mask box that does not fit the input it was sent
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    key = f"ai-outputs/{analysis.pk}/1/mask.npz"
    s3_client().put_object(Bucket=ai_clinic.s3_bucket, Key=key, Body=buffer.getvalue())
    _record(ai_clinic, result)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        analysis.refresh_from_db()
        assert analysis.status == AnalysisStatus.FAILED and error in analysis.error, analysis.error
        assert Finding.objects.count() == 0
        assert not Study.objects.get().ai_critical
    assert _orthanc_modalities(ai_clinic, study.study_instance_uid) == ["CT"]


def test_a_clinic_without_ai_sends_nothing(ai_clinic, pipeline):
    ai_clinic.ai_enabled = False
    ai_clinic.save(update_fields=["ai_enabled"])
    study = _complete(ai_clinic, pipeline, lesion_ct(slices=16))
    assert _dispatch(ai_clinic, study) == []
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        assert not Analysis.objects.exists()


def test_a_chest_radiograph_gets_a_heatmap_seg_and_an_sr(ai_clinic, pipeline):
    study = _complete(ai_clinic, pipeline, [chest_dx(nodule=True)])
    (job_data,) = _dispatch(ai_clinic, study)
    job = InferenceJob.from_dict(job_data)
    assert job.model_name == "dx_chest_triage" and "heatmap" in job.output_urls and "mask" not in job.output_urls
    recorded = _record(ai_clinic, run_job(job))
    assert recorded.status == AnalysisStatus.SUCCEEDED, recorded.error
    assert recorded.heatmap_sop_instance_uid and recorded.sr_sop_instance_uid
    # The classifier's probability is kept whether or not it made a finding
    assert 0.0 <= recorded.scores["nodule_opacity"] <= 1.0
    assert _orthanc_modalities(ai_clinic, study.study_instance_uid) == ["DX", "SEG", "SR"]
    seg = _orthanc_instance(ai_clinic, recorded.heatmap_sop_instance_uid)
    assert seg.SegmentationType == "FRACTIONAL"
    assert np.asarray(seg.pixel_array).max() > 0
