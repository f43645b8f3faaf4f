"""AI analysis: dispatch a completed study's series to the models that apply, and record their results.

Dispatch builds the de-identified input, puts it in the tenant's bucket under ``ai-inputs/`` and sends
an ``inference.run`` job to the model's pool with presigned URLs; the worker never sees anything else.
Recording turns a result into DICOM (SEG, SR, heatmap SEG) stored in the tenant's Orthanc (from where
the ingest pipeline indexes and archives it like any instance), findings in the index, and the study's
AI status and ``ai_critical`` flag. Both sides are idempotent on (input, model, model version).
"""

from __future__ import annotations

import io
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydicom
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from inference_workers.messages import InferenceJob, InferenceResult, idempotency_key
from saas.ai.dicom_results import BuiltObjects, image_objects, volume_objects
from saas.ai.enums import AnalysisStatus
from saas.ai.inputs import InputError, input_key_for, instance_file, series_for_model, volume_build
from saas.ai.models import Analysis, Finding
from saas.ai.registry import ModelSpec, model_spec, model_specs
from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_record
from saas.config.celery import app
from saas.studies.enums import StudyAIStatus
from saas.studies.models import Instance, Series, Study
from saas.studies.orthanc import orthanc_store
from saas.studies.services import study_rehydrate
from saas.studies.validation import Refusal, validate_instance
from tenants.models import Tenant
from tenants.provisioning.storage import shared_s3_client as s3_client

logger = logging.getLogger(__name__)

INFERENCE_TASK = "inference.run"


class ResultError(RuntimeError):
    """A result that cannot be recorded as sent (missing output object, mismatching shapes); names why."""


@dataclass(frozen=True)
class JobRef:
    tenant_id: int
    analysis_id: str


# Seconds the Django side spends on a job before the worker gets it, kept beside the worker's stages.
DISPATCH_STAGES = ("input_build", "input_upload")


def job_id_for(analysis: Analysis) -> str:
    """The tenant id travels in the job id (not patient data) so the result finds its tenant context;
    the attempt number makes each dispatch a new job for the workers' per-job bookkeeping."""
    return f"t{analysis.tenant_id}.{analysis.pk}.{analysis.attempts}"


def job_ref(job_id: str) -> JobRef | None:
    parts = job_id.split(".")
    if len(parts) != 3 or not parts[0].startswith("t") or not parts[0][1:].isdigit():
        return None
    return JobRef(tenant_id=int(parts[0][1:]), analysis_id=parts[1])


def _output_key(analysis: Analysis, name: str) -> str:
    extension = "json" if name == "findings" else "npz"
    return f"ai-outputs/{analysis.pk}/{analysis.attempts}/{name}.{extension}"


def _requested_outputs(spec: ModelSpec) -> list[str]:
    # The volumetric models' probability map is shown through their SEG; only 2D models need a heatmap.
    return [name for name in spec.outputs if name != "heatmap" or spec.input_kind == "image"]


def _study_ai_summary(study: Study) -> None:
    """The study's AI status and critical flag, from the newest analysis of each model."""
    latest: dict[str, Analysis] = {}
    for analysis in Analysis.objects.filter(study=study).order_by("created_at"):
        latest[analysis.model_name] = analysis
    statuses = {analysis.status for analysis in latest.values()}
    if not latest:
        status = StudyAIStatus.NOT_APPLICABLE
    elif statuses & {AnalysisStatus.PENDING, AnalysisStatus.DISPATCHED}:
        status = StudyAIStatus.PENDING
    elif AnalysisStatus.FAILED in statuses:
        status = StudyAIStatus.FAILED
    else:
        status = StudyAIStatus.DONE
    reasons = []
    for analysis in latest.values():
        if analysis.status != AnalysisStatus.SUCCEEDED or not analysis.critical:
            continue
        finding = analysis.findings.filter(critical=True).order_by("-diameter_mm", "-confidence").first()
        if finding is not None:
            reasons.append(
                f"{analysis.model_name} {analysis.model_version}: {finding.label} "
                f"{finding.diameter_mm:.0f} mm (confidence {finding.confidence:.2f})"
            )
    Study.objects.filter(pk=study.pk).update(
        ai_status=status, ai_critical=bool(reasons), ai_critical_reason="; ".join(reasons)[:255]
    )


def study_ai_dispatch(*, tenant: Tenant, study_id: int, version: int) -> list[Analysis]:
    """Send the study to every model that applies; an input already analysed by a model version is not sent again."""
    if not tenant.ai_enabled:
        return []
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        return []
    dispatched = []
    applicable = False
    for spec in model_specs():
        series = series_for_model(study=study, spec=spec)
        if series is None:
            continue
        applicable = True
        analysis = _analysis_for(study=study, series=series, spec=spec, version=version)
        if _dispatch(tenant=tenant, study=study, series=series, spec=spec, analysis_id=analysis.pk):
            dispatched.append(analysis)
    with transaction.atomic():
        locked = Study.objects.select_for_update().get(pk=study.pk)
        if applicable or Analysis.objects.filter(study=locked).exists():
            _study_ai_summary(locked)
        else:
            Study.objects.filter(pk=locked.pk).update(ai_status=StudyAIStatus.NOT_APPLICABLE)
    return dispatched


def _analysis_for(*, study: Study, series: Series, spec: ModelSpec, version: int) -> Analysis:
    key = idempotency_key(
        study_version_key=input_key_for(study=study, series=series), model_name=spec.name, model_version=spec.version
    )
    existing = Analysis.objects.filter(idempotency_key=key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            return Analysis.objects.create(
                tenant_id=study.tenant_id,
                study=study,
                study_version=version,
                model_name=spec.name,
                model_version=spec.version,
                pool=spec.pool,
                idempotency_key=key,
                series_instance_uid=series.series_instance_uid,
            )
    except IntegrityError:
        # Another dispatcher created it first (two completions of one study close together).
        return Analysis.objects.get(idempotency_key=key)


def _dispatch(*, tenant: Tenant, study: Study, series: Series, spec: ModelSpec, analysis_id) -> bool:
    """Build, upload and send one pending analysis; False when it is not pending (sent, done or failed)."""
    with transaction.atomic():
        # The row lock (skipped when held) makes one dispatcher build and send; the job is sent before the
        # commit, so a crash in between leaves a pending row that the redelivered task sends again.
        analysis = Analysis.objects.select_for_update(skip_locked=True).filter(pk=analysis_id).first()
        if analysis is None or analysis.status != AnalysisStatus.PENDING:
            return False
        if study.evicted_at is not None:
            study_rehydrate(tenant=tenant, study=study)
        started = time.perf_counter()
        try:
            volume = volume_build(tenant=tenant, series=series, spec=spec)
        except InputError as error:
            _fail(analysis, f"input not usable: {error}")
            _audit_processing(analysis, study=study, operation="ai_dispatch", outcome=AuditOutcome.MINOR_FAILURE)
            return False
        analysis.attempts += 1
        analysis.input_key = f"ai-inputs/{analysis.pk}.npz"
        analysis.input_instances = volume.sop_instance_uids
        analysis.input_offset = list(volume.offset)
        built = time.perf_counter()
        client = s3_client()
        client.put_object(
            Bucket=tenant.s3_bucket, Key=analysis.input_key, Body=volume.npz, ContentType="application/octet-stream"
        )
        # The Django side's stages; the worker's are added to them when its result is recorded.
        analysis.timings = {
            "input_build": round(built - started, 3),
            "input_upload": round(time.perf_counter() - built, 3),
        }
        ttl = settings.READROOM_AI_URL_TTL_SECONDS
        job = InferenceJob(
            job_id=job_id_for(analysis),
            study_version_key=analysis.idempotency_key.split("|", 1)[0],
            model_name=spec.name,
            model_version=spec.version,
            input_url=client.generate_presigned_url(
                "get_object", Params={"Bucket": tenant.s3_bucket, "Key": analysis.input_key}, ExpiresIn=ttl
            ),
            output_urls={
                name: client.generate_presigned_url(
                    "put_object", Params={"Bucket": tenant.s3_bucket, "Key": _output_key(analysis, name)}, ExpiresIn=ttl
                )
                for name in _requested_outputs(spec)
            },
            dispatched_at=time.time(),
        )
        app.send_task(INFERENCE_TASK, args=[job.to_dict()], queue=spec.queue)
        analysis.status = AnalysisStatus.DISPATCHED
        analysis.dispatched_at = timezone.now()
        analysis.save()
        _audit_processing(analysis, study=study, operation="ai_dispatch")
    logger.info("ai dispatch analysis=%s model=%s %s pool=%s", analysis.pk, spec.name, spec.version, spec.pool)
    return True


def _fail(analysis: Analysis, error: str) -> None:
    analysis.status = AnalysisStatus.FAILED
    analysis.error = error[:2000]
    analysis.finished_at = timezone.now()
    analysis.save()


def _audit_processing(analysis: Analysis, *, study: Study, operation: str, outcome=AuditOutcome.SUCCESS) -> None:
    # Dispatch is an export of de-identified pixels; recording imports new instances into the study.
    dispatch = operation == "ai_dispatch"
    audit_record(
        event_id=AuditEventId.EXPORT if dispatch else AuditEventId.IMPORT,
        action=AuditAction.READ if dispatch else AuditAction.CREATE,
        outcome=outcome,
        tenant_id=analysis.tenant_id,
        study_instance_uids=[study.study_instance_uid],
        detail={
            "operation": operation,
            "analysis": str(analysis.pk),
            "model": analysis.model_name,
            "model_version": analysis.model_version,
            "status": analysis.status,
            "deidentified_input": dispatch,
        },
    )


def _s3_object(tenant: Tenant, key: str) -> bytes:
    try:
        return s3_client().get_object(Bucket=tenant.s3_bucket, Key=key)["Body"].read()
    except (BotoCoreError, ClientError) as error:
        raise ResultError(f"output {key} is not readable: {error}") from error


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _source_datasets(tenant: Tenant, series_instance_uid: str, sop_instance_uids: list[str]) -> list[pydicom.Dataset]:
    orthanc_ids = dict(
        Instance.objects.filter(
            series__series_instance_uid=series_instance_uid, sop_instance_uid__in=sop_instance_uids
        ).values_list("sop_instance_uid", "orthanc_instance_id")
    )
    for uid in sop_instance_uids:
        if uid not in orthanc_ids:
            raise ResultError(f"source instance {uid} is no longer in the index")

    def header(uid: str) -> pydicom.Dataset:
        return pydicom.dcmread(io.BytesIO(instance_file(tenant, orthanc_ids[uid])), stop_before_pixels=True)

    with ThreadPoolExecutor(max_workers=settings.READROOM_AI_INPUT_FETCH_THREADS) as pool:
        return list(pool.map(header, sop_instance_uids))


def _build_objects(*, tenant: Tenant, analysis: Analysis, spec: ModelSpec, findings: list[dict]) -> BuiltObjects:
    uids = analysis.input_instances
    if spec.input_kind == "image":
        heatmap = _npz(_s3_object(tenant, _output_key(analysis, "heatmap")))["heatmap"]
        (source,) = _source_datasets(tenant, analysis.series_instance_uid, uids[:1])
        return image_objects(
            analysis_id=str(analysis.pk),
            model_name=analysis.model_name,
            model_version=analysis.model_version,
            source_dataset=source,
            heatmap=heatmap,
            findings=findings,
        )
    box, in_input = _mask_box(_npz(_s3_object(tenant, _output_key(analysis, "mask"))), slices=len(uids))
    # The mask is on the input's grid, which may be a crop of the series': back to the series' own grid.
    crop = tuple(analysis.input_offset or (0, 0, 0))
    offset = tuple(a + b for a, b in zip(in_input, crop, strict=True))
    # Only slices the mask touches are read back: the SEG references those, the SR the SEG.
    touched = [offset[0] + int(z) for z in np.flatnonzero(box.reshape(len(box), -1).any(axis=1))] or [0]
    sources = _source_datasets(tenant, analysis.series_instance_uid, [uids[z] for z in touched])
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if offset[1] + box.shape[1] > rows or offset[2] + box.shape[2] > columns:
        raise ResultError(f"mask box at {offset} of shape {box.shape} exceeds the {rows} x {columns} slices")
    mask = np.zeros((len(touched), rows, columns), dtype=np.uint8)
    if box.size:
        rows_box = slice(offset[1], offset[1] + box.shape[1])
        columns_box = slice(offset[2], offset[2] + box.shape[2])
        mask[:, rows_box, columns_box] = box[[z - offset[0] for z in touched]]
    return volume_objects(
        analysis_id=str(analysis.pk),
        model_name=analysis.model_name,
        model_version=analysis.model_version,
        source_datasets=sources,
        mask=mask,
        findings=[{**finding, "centre_voxel": _local_centre(finding, touched, crop)} for finding in findings],
    )


def _mask_box(arrays: dict[str, np.ndarray], *, slices: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The worker's mask as the box it sent and where that box starts in the input grid; checked against the input."""
    try:
        box = arrays["mask"]
        offset = tuple(int(v) for v in arrays["offset"])
        shape = tuple(int(v) for v in arrays["shape"])
    except KeyError as error:
        raise ResultError(f"mask output lacks {error} (mask, offset and shape are required)") from error
    except (TypeError, ValueError) as error:
        raise ResultError(f"mask output's offset or shape is not a list of integers ({error})") from error
    if box.ndim != 3 or len(offset) != 3 or len(shape) != 3:
        raise ResultError(f"mask, offset and shape must be 3D, got {box.shape}, {offset}, {shape}")
    if shape[0] != slices:
        raise ResultError(f"mask has {shape[0]} slices, the input had {slices}")
    if any(start < 0 or start + size > total for start, size, total in zip(offset, box.shape, shape, strict=True)):
        raise ResultError(f"mask box at {offset} of shape {box.shape} lies outside the input grid {shape}")
    return box, offset


def _local_centre(finding: dict, touched: list[int], crop: tuple[int, ...]) -> list[float] | None:
    """A finding's centre in the SEG's sub-volume: z among the touched slices, rows and columns of the full frame."""
    centre = finding.get("centre_voxel")
    if not centre:
        return None
    z = min(range(len(touched)), key=lambda index: abs(touched[index] - (centre[0] + crop[0])))
    return [float(z), float(centre[1] + crop[1]), float(centre[2] + crop[2])]


def analysis_record_result(*, tenant: Tenant, result: InferenceResult) -> Analysis | None:
    """Record one worker result exactly once: a repeated or stale message changes nothing."""
    ref = job_ref(result.job_id)
    with transaction.atomic():
        analysis = Analysis.objects.select_for_update().filter(pk=ref.analysis_id).select_related("study").first()
        if analysis is None or analysis.idempotency_key != result.idempotency_key:
            logger.warning("ai result for unknown analysis job=%s: dropped", result.job_id)
            return None
        if analysis.status in (AnalysisStatus.SUCCEEDED, AnalysisStatus.FAILED):
            logger.info("ai result for analysis %s already recorded (%s): dropped", analysis.pk, analysis.status)
            return analysis
        if job_id_for(analysis) != result.job_id:
            logger.info("ai result of an earlier attempt of analysis %s: dropped", analysis.pk)
            return analysis
        study = Study.objects.select_for_update().get(pk=analysis.study_id)
        dispatch_timings = {name: analysis.timings[name] for name in DISPATCH_STAGES if name in analysis.timings}
        analysis.timings = {**dispatch_timings, **result.timings}
        analysis.scores = dict(result.scores)
        analysis.device = result.device[:16]
        if result.status != "ok":
            _fail(analysis, result.error)
            _study_ai_summary(study)
            _audit_processing(analysis, study=study, operation="ai_result", outcome=AuditOutcome.MINOR_FAILURE)
            return analysis
        spec = model_spec(analysis.model_name)
        if spec is None:
            _fail(analysis, f"model {analysis.model_name} is no longer served")
            _study_ai_summary(study)
            return analysis
        findings = [finding.to_dict() for finding in result.findings]
        try:
            built = _build_objects(tenant=tenant, analysis=analysis, spec=spec, findings=findings)
            encoded = [_part10(dataset) for dataset in built.datasets]
        except (ResultError, ValueError) as error:
            _fail(analysis, f"result not recordable: {error}")
            _study_ai_summary(study)
            _audit_processing(analysis, study=study, operation="ai_result", outcome=AuditOutcome.MINOR_FAILURE)
            return analysis
        # Orthanc failures propagate: the task retries, and the same UIDs make a second store a no-op.
        for data in encoded:
            orthanc_store(tenant, data)
        uids = analysis.input_instances
        Finding.objects.bulk_create(
            [
                Finding(
                    tenant_id=analysis.tenant_id,
                    analysis=analysis,
                    study=study,
                    label=finding.label,
                    confidence=finding.confidence,
                    centre_mm=list(finding.centre_mm),
                    diameter_mm=finding.diameter_mm,
                    volume_ml=finding.volume_ml,
                    critical=finding.critical,
                    series_instance_uid=analysis.series_instance_uid,
                    sop_instance_uid=_slice_uid(uids, finding.centre_voxel),
                    segment_number=built.segment_numbers[index] if index < len(built.segment_numbers) else 0,
                )
                for index, finding in enumerate(result.findings)
            ]
        )
        analysis.status = AnalysisStatus.SUCCEEDED
        analysis.finished_at = timezone.now()
        analysis.critical = result.critical
        analysis.seg_sop_instance_uid = built.seg_sop_instance_uid
        analysis.sr_sop_instance_uid = built.sr_sop_instance_uid
        analysis.heatmap_sop_instance_uid = built.map_sop_instance_uid
        analysis.error = ""
        analysis.save()
        _study_ai_summary(study)
        _audit_processing(analysis, study=study, operation="ai_result")
    logger.info("ai result analysis=%s findings=%s critical=%s", analysis.pk, len(result.findings), analysis.critical)
    return analysis


def _part10(dataset: pydicom.Dataset) -> bytes:
    """The object as a Part 10 file, checked by the same validation every clinic upload goes through."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    verdict = validate_instance(f"AI {dataset.Modality}", data)
    if isinstance(verdict, Refusal):
        raise ResultError(f"the built {dataset.Modality} was refused by validation: {verdict.reason}")
    return data


def _slice_uid(uids: list[str], centre_voxel) -> str:
    if not uids:
        return ""
    z = 0 if centre_voxel is None else int(round(centre_voxel[0]))
    return uids[min(max(z, 0), len(uids) - 1)]


def analysis_retry(*, tenant: Tenant, analysis: Analysis, actor=None) -> Analysis:
    """An administrator sends a failed analysis again: it goes back to pending and a dispatch task is queued.

    The input is built by the Celery worker (``ai.dispatch_analysis``), not in the administrator's request:
    reading a 500-slice series from Orthanc takes seconds. The new attempt gets a new job id.
    """
    with transaction.atomic():
        locked = Analysis.objects.select_for_update().select_related("study").get(pk=analysis.pk)
        if locked.status != AnalysisStatus.FAILED:
            raise ValueError(f"only a failed analysis can be retried; this one is {locked.status}")
        locked.status = AnalysisStatus.PENDING
        locked.error = ""
        locked.save()
        _study_ai_summary(Study.objects.select_for_update().get(pk=locked.study_id))
        audit_record(
            event_id=AuditEventId.APPLICATION_ACTIVITY,
            action=AuditAction.EXECUTE,
            tenant_id=tenant.pk,
            actor=actor,
            study_instance_uids=[locked.study.study_instance_uid],
            detail={"operation": "ai_retry", "analysis": str(locked.pk), "model": locked.model_name},
        )
        from saas.ai.tasks import dispatch_analysis  # the tasks module imports this one

        tenant_id, analysis_id = tenant.pk, str(locked.pk)
        transaction.on_commit(lambda: dispatch_analysis.delay(tenant_id=tenant_id, analysis_id=analysis_id))
    return locked


def analysis_dispatch(*, tenant: Tenant, analysis_id) -> Analysis | None:
    """Send one pending analysis (a retried one): build its input and queue the job; None when it is gone."""
    analysis = Analysis.objects.filter(pk=analysis_id).select_related("study").first()
    if analysis is None:
        return None
    spec = model_spec(analysis.model_name)
    series = Series.objects.filter(study=analysis.study, series_instance_uid=analysis.series_instance_uid).first()
    if spec is None or series is None:
        with transaction.atomic():
            locked = Analysis.objects.select_for_update().get(pk=analysis.pk)
            if locked.status == AnalysisStatus.PENDING:
                _fail(locked, "the model or the analysed series no longer exists")
    else:
        _dispatch(tenant=tenant, study=analysis.study, series=series, spec=spec, analysis_id=analysis.pk)
    with transaction.atomic():
        _study_ai_summary(Study.objects.select_for_update().get(pk=analysis.study_id))
    analysis.refresh_from_db()
    return analysis


def result_payload(raw: object) -> InferenceResult:
    """Parse a result message (the schema module refuses anything unexpected and names the field)."""
    return InferenceResult.from_dict(raw if isinstance(raw, dict) else json.loads(str(raw)))
