"""QIDO-RS study search, checked against the actor's tenants and audited (110112)."""

from __future__ import annotations

import requests
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, parser_classes, renderer_classes
from rest_framework.exceptions import APIException
from rest_framework.renderers import JSONRenderer

from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.services import audit_record
from saas.dicomweb.stow import StowBodyParser, stow
from tenants.access import access_tenant_patient_data
from tenants.enums import TokenScope
from tenants.orthanc import orthanc_endpoint

# Search parameters passed on to Orthanc; anything else is refused rather than silently dropped.
QIDO_STUDY_PARAMETERS = frozenset(
    {
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "StudyInstanceUID",
        "StudyDescription",
        "ReferringPhysicianName",
        "includefield",
        "limit",
        "offset",
        "fuzzymatching",
    }
)
MAX_LIMIT = 1000


class DicomJsonRenderer(JSONRenderer):
    media_type = "application/dicom+json"


class OrthancUnreachable(APIException):
    status_code = 503
    default_detail = "The clinic's image store is not answering; try again shortly."


class BadQuery(APIException):
    status_code = 400


def qido_studies(request, *, slug: str) -> HttpResponse:
    actor = request.actor
    tenant = access_tenant_patient_data(actor, slug, scope=TokenScope.STUDIES_READ)
    unknown = sorted(set(request.GET) - QIDO_STUDY_PARAMETERS)
    if unknown:
        raise BadQuery(f"Unsupported QIDO-RS parameters: {', '.join(unknown)}.")
    params = list(request.GET.lists())
    limit = request.GET.get("limit")
    if limit is not None and (not limit.isdigit() or not 0 < int(limit) <= MAX_LIMIT):
        raise BadQuery(f"limit must be an integer from 1 to {MAX_LIMIT}.")
    if limit is None:
        params.append(("limit", [str(MAX_LIMIT)]))
    endpoint = orthanc_endpoint(tenant)
    try:
        upstream = requests.get(
            f"{endpoint.http_url}/dicom-web/studies",
            params=[(key, value) for key, values in params for value in values],
            auth=endpoint.auth,
            headers={"Accept": "application/dicom+json"},
            timeout=30,
        )
    except requests.RequestException as error:
        raise OrthancUnreachable() from error
    if upstream.status_code >= 500:
        raise OrthancUnreachable()
    matches = upstream.json() if upstream.status_code == 200 and upstream.content else []
    audit_record(
        event_id=AuditEventId.QUERY,
        action=AuditAction.EXECUTE,
        tenant_id=tenant.pk,
        actor=actor,
        study_instance_uids=[match.get("0020000D", {}).get("Value", [""])[0] for match in matches],
        detail={"level": "studies", "matches": len(matches), "parameters": sorted(set(request.GET))},
    )
    return HttpResponse(upstream.content, status=upstream.status_code, content_type="application/dicom+json")


_STOW_RESPONSES = {
    200: OpenApiResponse(description="All instances stored (application/dicom+json)"),
    202: OpenApiResponse(description="Some instances failed; see FailedSOPSequence"),
    409: OpenApiResponse(description="No instance was stored; see FailedSOPSequence"),
}


@extend_schema(
    methods=["GET"],
    summary="QIDO-RS: search a clinic's studies",
    parameters=[OpenApiParameter(name, str, required=False) for name in sorted(QIDO_STUDY_PARAMETERS)],
    responses={(200, "application/dicom+json"): dict},
)
@extend_schema(
    methods=["POST"],
    summary="STOW-RS: store instances in a clinic",
    request={"multipart/related": bytes},
    responses=_STOW_RESPONSES,
)
@api_view(["GET", "POST"])
@parser_classes([StowBodyParser])
@renderer_classes([JSONRenderer, DicomJsonRenderer])
def dicomweb_studies(request, slug: str):
    if request.method == "POST":
        return stow(request, slug=slug)
    return qido_studies(request, slug=slug)


@extend_schema(
    summary="STOW-RS: store instances of one study", request={"multipart/related": bytes}, responses=_STOW_RESPONSES
)
@api_view(["POST"])
@parser_classes([StowBodyParser])
@renderer_classes([JSONRenderer, DicomJsonRenderer])
def stow_study(request, slug: str, study_instance_uid: str):
    return stow(request, slug=slug, study_instance_uid=study_instance_uid)
