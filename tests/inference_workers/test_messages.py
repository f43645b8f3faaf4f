"""The versioned job/result schema: round trips, and refusals that name the bad field."""

from __future__ import annotations

import pytest

from inference_workers.messages import Finding, InferenceJob, InferenceResult, MessageError


def job_dict(**overrides) -> dict:
    data = InferenceJob(
        job_id="job-1",
        study_version_key="3f2a9c-v2",
        model_name="ct_focal_lesion",
        model_version="1.0.0",
        input_url="http://127.0.0.1:9000/b/ai-inputs/x.npz?X-Amz-Signature=abc",
        output_urls={
            "mask": "http://127.0.0.1:9000/b/ai-outputs/mask.npz?sig",
            "findings": "http://127.0.0.1:9000/b/ai-outputs/findings.json?sig",
        },
    ).to_dict()
    data.update(overrides)
    return data


def test_job_round_trips_with_version_and_idempotency_key():
    data = job_dict()

    job = InferenceJob.from_dict(data)

    assert data["schema_version"] == 1
    assert data["idempotency_key"] == "3f2a9c-v2|ct_focal_lesion|1.0.0"
    assert job.to_dict() == data


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"schema_version": 2}, "schema_version"),
        ({"schema_version": True}, "schema_version"),
        ({"job_id": ""}, "job_id"),
        ({"model_name": "CT Lesion!"}, "model_name"),
        ({"input_url": "file:///etc/passwd"}, "input_url"),
        ({"output_urls": {"mask": "http://s3/m"}}, "output_urls.findings"),
        ({"output_urls": {"heatmap": "http://s3/h"}}, "output_urls.findings"),
        (
            {"output_urls": {"mask": "http://s3/m", "findings": "http://s3/f", "report": "http://s3/r"}},
            "output_urls.report",
        ),
        ({"patient_name": "Doe^Jane"}, "patient_name"),
        ({"idempotency_key": "other|ct_focal_lesion|1.0.0"}, "idempotency_key"),
    ],
)
def test_job_refusals_name_the_field(overrides, field):
    with pytest.raises(MessageError) as refused:
        InferenceJob.from_dict(job_dict(**overrides))

    assert refused.value.field == field
    assert str(refused.value).startswith(field)


def test_job_for_a_radiograph_needs_no_mask_url():
    # Given a dx job: findings and heatmap only (which outputs a model needs is the worker's check, per model)
    data = job_dict(
        model_name="dx_chest_triage",
        output_urls={"findings": "http://s3/f.json?sig", "heatmap": "http://s3/h.npz?sig"},
    )
    del data["idempotency_key"]

    job = InferenceJob.from_dict(data)

    assert set(job.output_urls) == {"findings", "heatmap"}
    assert job.idempotency_key == "3f2a9c-v2|dx_chest_triage|1.0.0"


def test_job_missing_field_is_named():
    data = job_dict()
    del data["input_url"]

    with pytest.raises(MessageError, match="^input_url: is required"):
        InferenceJob.from_dict(data)


def test_result_round_trips_with_findings():
    result = InferenceResult(
        job_id="job-1",
        idempotency_key="3f2a9c-v2|ct_focal_lesion|1.0.0",
        model_name="ct_focal_lesion",
        model_version="1.0.0",
        status="ok",
        findings=(
            Finding(
                label="focal_lesion",
                confidence=0.97,
                centre_mm=(1.0, -2.5, 30.0),
                diameter_mm=15.2,
                volume_ml=1.8,
                critical=True,
                centre_voxel=(10.0, 100.5, 99.0),
            ),
        ),
        outputs=("mask", "findings"),
        timings={"forward": 1.5},
        device="cpu",
    )

    data = result.to_dict()
    again = InferenceResult.from_dict(data)

    assert again == result
    assert again.critical
    assert data["findings"][0]["centre_mm"] == [1.0, -2.5, 30.0]
    assert data["scores"] == {}


def test_result_without_a_finding_still_carries_the_score():
    result = InferenceResult(
        job_id="job-2",
        idempotency_key="3f2a9c-v2|dx_chest_triage|1.0.0",
        model_name="dx_chest_triage",
        model_version="1.0.0",
        status="ok",
        outputs=("findings", "heatmap"),
        scores={"nodule_opacity": 0.03},
    )

    data = result.to_dict()
    again = InferenceResult.from_dict(data)

    assert data["scores"] == {"nodule_opacity": 0.03} and data["findings"] == []
    assert again == result and not again.critical


def test_result_from_before_scores_existed_is_still_read():
    # A version-1 result written before the optional field was added has no "scores" key.
    data = {
        "schema_version": 1,
        "job_id": "job-1",
        "idempotency_key": "k",
        "model_name": "ct_focal_lesion",
        "model_version": "1.0.0",
        "status": "ok",
        "outputs": ["mask", "findings"],
    }

    assert InferenceResult.from_dict(data).scores == {}


def test_a_result_with_a_score_out_of_range_cannot_be_built():
    with pytest.raises(MessageError) as refused:
        InferenceResult(
            job_id="j", idempotency_key="k", model_name="m", model_version="1", status="ok", scores={"x": 1.2}
        )

    assert refused.value.field == "scores.x"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"status": "maybe"}, "status"),
        ({"status": "failed"}, "error"),
        (
            {
                "findings": [
                    {
                        "label": "focal_lesion",
                        "confidence": 1.5,
                        "centre_mm": [0, 0, 0],
                        "diameter_mm": 5,
                        "volume_ml": 1,
                    }
                ]
            },
            "findings[0].confidence",
        ),
        (
            {
                "findings": [
                    {"label": "focal_lesion", "confidence": 0.5, "centre_mm": [0, 0], "diameter_mm": 5, "volume_ml": 1}
                ]
            },
            "findings[0].centre_mm",
        ),
        (
            {
                "findings": [
                    {
                        "label": "x",
                        "confidence": 0.5,
                        "centre_mm": [0, 0, 0],
                        "diameter_mm": float("nan"),
                        "volume_ml": 1,
                    }
                ]
            },
            "findings[0].diameter_mm",
        ),
        ({"outputs": ["mask", "dicom"]}, "outputs"),
        ({"patient_id": "123"}, "patient_id"),
        ({"scores": [0.5]}, "scores"),
        ({"scores": {"nodule_opacity": 1.5}}, "scores.nodule_opacity"),
        ({"scores": {"nodule_opacity": float("nan")}}, "scores.nodule_opacity"),
        ({"scores": {"nodule_opacity": True}}, "scores.nodule_opacity"),
        ({"scores": {"Patient Name": 0.5}}, "scores"),
    ],
)
def test_result_refusals_name_the_field(overrides, field):
    data = {
        "schema_version": 1,
        "job_id": "job-1",
        "idempotency_key": "k",
        "model_name": "ct_focal_lesion",
        "model_version": "1.0.0",
        "status": "ok",
    }
    data.update(overrides)

    with pytest.raises(MessageError) as refused:
        InferenceResult.from_dict(data)

    assert refused.value.field == field
