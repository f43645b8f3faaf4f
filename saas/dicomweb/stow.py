"""STOW-RS: `POST /dicomweb/<slug>/studies[/<study>]` validates every part, stores it in the tenant's Orthanc,
and answers the standard response (ReferencedSOPSequence / FailedSOPSequence)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import JsonResponse
from rest_framework.exceptions import APIException, ParseError, PermissionDenied
from rest_framework.parsers import BaseParser

from saas.dicomweb.multipart import MultipartError, PartTooLarge, iter_parts
from saas.studies.enums import IngestPath
from saas.studies.ingest import IngestBatch, ItemOutcome, ItemStatus
from saas.studies.uploads import UPLOAD_ROLES
from saas.studies.validation import AcceptedInstance, RefusalKind, ValidationLimits
from tenants.access import access_tenant_patient_data
from tenants.enums import TokenScope

logger = logging.getLogger(__name__)

# DICOM PS3.18 / PS3.4 failure reasons.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
STUDY_UID_MISMATCH = 0xC122

_FAILURE_BY_KIND = {
    RefusalKind.SOP_CLASS_NOT_ALLOWED: SOP_CLASS_NOT_SUPPORTED,
    RefusalKind.PIXEL_MISMATCH: DATASET_DOES_NOT_MATCH,
    RefusalKind.DUPLICATE_SOP_INSTANCE: DUPLICATE_SOP_INSTANCE,
    # Over our size limit is permanent for that file: 0xA700 would tell senders to retry forever.
    RefusalKind.TOO_LARGE: CANNOT_UNDERSTAND,
}


class StowBodyParser(BaseParser):
    """Leaves the body unread so the view can stream it (declared for the OpenAPI schema)."""

    media_type = "multipart/related"

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never used
        return {}


class UnsupportedMediaType(APIException):
    status_code = 415


class LengthRequired(APIException):
    status_code = 411
    default_detail = "STOW-RS needs a Content-Length header or a chunked request body."


def _ui(value: str) -> dict:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _failed(sop_class_uid: str, sop_instance_uid: str, reason: int, comment: str) -> dict:
    return {
        "00081150": _ui(sop_class_uid),
        "00081155": _ui(sop_instance_uid),
        "00081197": {"vr": "US", "Value": [reason]},
        "00000902": {"vr": "LO", "Value": [comment[:64]]},
    }


def _boundary(content_type: str) -> str:
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "multipart/related":
        raise UnsupportedMediaType(
            'STOW-RS takes multipart/related; type="application/dicom" bodies, not ' + (media_type.strip() or "none")
        )
    options = {}
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        options[name.strip().lower()] = value.strip().strip('"')
    if options.get("type", "application/dicom").lower() != "application/dicom":
        raise UnsupportedMediaType('Only type="application/dicom" parts are accepted (no metadata+bulkdata).')
    if not options.get("boundary"):
        raise ParseError("The multipart/related Content-Type has no boundary parameter.")
    return options["boundary"]


def stow(request, *, slug: str, study_instance_uid: str | None = None) -> JsonResponse:
    """Store every valid part; one failure never stops the others."""
    actor = request.actor
    tenant = access_tenant_patient_data(actor, slug, scope=TokenScope.STUDIES_WRITE)
    # As for browser uploads: a person stores studies into a clinic as its administrator or staff, never as a
    # reader (a referring physician, a credentialed radiologist). Tokens carry the studies:write scope instead.
    if actor.token is None and not actor.has_role(tenant.pk, *UPLOAD_ROLES):
        raise PermissionDenied("Only clinic administrators and clinic staff may store studies.")
    boundary = _boundary(request.META.get("CONTENT_TYPE", ""))
    if request.META.get("CONTENT_LENGTH", "").isdigit():
        body = request._request
    elif request.META.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" and "wsgi.input" in request.META:
        # Django reads only Content-Length bodies; gunicorn's input decodes chunked ones itself.
        body = request.META["wsgi.input"]
    else:
        raise LengthRequired()
    limits: ValidationLimits = settings.READROOM_VALIDATION_LIMITS
    base_url = f"{settings.READROOM_PUBLIC_URL.rstrip('/')}/dicomweb/{tenant.slug}"
    batch = IngestBatch(tenant=tenant, actor=actor, path=IngestPath.STOW, limits=limits)
    failed: list[dict] = []
    try:
        for part in iter_parts(
            body,
            boundary,
            max_part_bytes=limits.max_file_bytes,
            max_total_bytes=limits.max_request_bytes,
        ):
            name = f"part {part.index}"
            if part.content_type != "application/dicom":
                failed.append(_failed("", "", CANNOT_UNDERSTAND, f"{name}: not application/dicom"))
                continue
            with part.body:
                batch.add_bytes(name, part.read(), study_instance_uid=study_instance_uid)
    except PartTooLarge as error:
        failed.append(_failed("", "", CANNOT_UNDERSTAND, str(error)))
    except MultipartError as error:
        if not batch.outcomes:
            raise ParseError(f"Malformed multipart/related body: {error}") from error
        failed.append(_failed("", "", CANNOT_UNDERSTAND, f"body malformed after part {len(batch.outcomes)}: {error}"))
    except OSError as error:
        # The body stopped arriving (a dropped connection, a chunked body cut short): what was
        # stored before stays stored, is audited below, and is reported as stored.
        logger.warning("tenant %s: STOW-RS body broke off after part %d: %s", tenant.pk, len(batch.outcomes), error)
        failed.append(_failed("", "", CANNOT_UNDERSTAND, f"body broke off after part {len(batch.outcomes)}"))
    except BaseException:
        # Whatever else stops the request, the instances already in the clinic's Orthanc are audited.
        batch.finish()
        raise
    batch.finish()
    referenced = [_referenced(base_url, instance) for instance in batch.stored]
    failed = [_failed_item(outcome) for outcome in batch.outcomes if outcome.status != ItemStatus.STORED] + failed
    stored_studies = {instance.study_instance_uid for instance in batch.stored}
    answer: dict = {}
    if study_instance_uid or len(stored_studies) == 1:
        answer["00081190"] = {
            "vr": "UR",
            "Value": [f"{base_url}/studies/{study_instance_uid or next(iter(stored_studies))}"],
        }
    if referenced:
        answer["00081199"] = {"vr": "SQ", "Value": referenced}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if referenced else 409)
    return JsonResponse(answer, status=status, content_type="application/dicom+json")


def _referenced(base_url: str, instance: AcceptedInstance) -> dict:
    retrieve_url = (
        f"{base_url}/studies/{instance.study_instance_uid}/series/{instance.series_instance_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )
    return {
        "00081150": _ui(instance.sop_class_uid),
        "00081155": _ui(instance.sop_instance_uid),
        "00081190": {"vr": "UR", "Value": [retrieve_url]},
    }


def _failed_item(outcome: ItemOutcome) -> dict:
    instance = outcome.instance
    if outcome.status == ItemStatus.FAILED:
        reason = PROCESSING_FAILURE
    elif outcome.refusal is not None:
        reason = _FAILURE_BY_KIND.get(outcome.refusal.kind, CANNOT_UNDERSTAND)
    else:
        reason = STUDY_UID_MISMATCH
    return _failed(
        instance.sop_class_uid if instance else "",
        instance.sop_instance_uid if instance else "",
        reason,
        outcome.reason,
    )
