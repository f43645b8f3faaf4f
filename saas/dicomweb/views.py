"""DICOMweb at /dicomweb/<slug>/: QIDO-RS from the index, WADO-RS streamed from the tenant's Orthanc, STOW-RS.

Every request is checked the same way (a session or a `studies:read` token; a patient-data role
or a valid radiologist credential in that clinic; UIDs resolved through the tenant-scoped index,
so another clinic's UID is the same 404 as a missing one) and audited: searches across studies
at once (110112), everything about one study through the per-window aggregation (110112 for
queries, 110103 for retrievals) so no frame waits on the audit log. WADO-RS reads reuse the actor's and
the study's lookups for up to tenants.access.DECISION_CACHE_SECONDS, and open the tenant context only
around what they do look up, so a frame usually costs no database round trip; the checks run every time.
"""

from __future__ import annotations

import hashlib
import json
import re

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotModified
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.decorators import api_view, parser_classes, renderer_classes
from rest_framework.exceptions import APIException, NotAcceptable, NotFound
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer

from saas.audit.enums import AuditAction, AuditEventId
from saas.audit.services import AuditWriteFailed, audit_record
from saas.dicomweb.qido import (
    ATTRIBUTES,
    CONTROL_PARAMETERS,
    Answer,
    Level,
    QueryError,
    answer_keywords,
    query_parse,
    query_rows,
    row_as_dicom_json,
)
from saas.dicomweb.selectors import representative_instance, series_by_uid, study_by_uid, study_cache
from saas.dicomweb.services import AccessNotAudited, dicomweb_access_record, study_bring_online
from saas.dicomweb.stow import StowBodyParser, stow
from saas.dicomweb.upstream import Relay, accel_redirect_applies, public_base_url, relay_open, relay_response
from saas.studies.models import Study
from tenants.access import access_tenant_patient_data, actor_tenant_context
from tenants.enums import TokenScope
from tenants.middleware import tenant_context_in_view
from tenants.models import Tenant

DICOM_JSON = "application/dicom+json"
RENDERED_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
RENDERED_PARAMETERS = frozenset({"window", "viewport", "quality"})
THUMBNAIL_VIEWPORT = "128,128"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_FRAMES_RE = re.compile(r"^[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,999}$")
_SYNTAX_RE = re.compile(r"^(\*|[0-9]+(\.[0-9]+){1,30})$")
_VIEWPORT_RE = re.compile(r"^[1-9][0-9]{0,3},[1-9][0-9]{0,3}$")


class DicomJsonRenderer(JSONRenderer):
    media_type = "application/dicom+json"


class BadQuery(APIException):
    status_code = 400


class AnyAcceptNegotiation(DefaultContentNegotiation):
    """WADO-RS answers are not rendered by DRF (they are streamed), so any Accept gets past negotiation;
    refusals are rendered as JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        ranges = [part.split(";", 1)[0].strip().lower() for part in request.META.get("HTTP_ACCEPT", "").split(",")]
        json_possible = any("json" in media or media in ("*/*", "application/*") for media in ranges)
        if not json_possible and not format_suffix and "format" not in request.GET:
            # A frame's or an image's Accept names no JSON renderer (a viewer's frames ask for
            # `multipart/related; type=...; transfer-syntax=*`): what negotiation would end in below,
            # without raising and catching NotAcceptable on every frame.
            return renderers[0], renderers[0].media_type
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


def _any_accept(function):
    function.content_negotiation_class = AnyAcceptNegotiation
    return function


def _dicomweb(methods: list[str]):
    def decorate(function):
        return api_view(methods)(renderer_classes([JSONRenderer])(_any_accept(function)))

    return decorate


def _retrieval(function):
    """A WADO-RS GET: opens the actor's tenant context only around the database work it does, which is
    none when the study's lookup is cached (see _study), so a frame costs no transaction."""
    return tenant_context_in_view(_dicomweb(["GET"])(function))


def _tenant(request, slug: str) -> Tenant:
    return access_tenant_patient_data(request.actor, slug, scope=TokenScope.STUDIES_READ)


def _study_lookup(request, tenant: Tenant, study_instance_uid: str, *, fresh: bool = False) -> Study:
    """The clinic's indexed study with this UID, reused for up to DECISION_CACHE_SECONDS (tenants.access).

    The actor's access to the clinic is checked on every request before this (_tenant); what is reused
    is only which row of that clinic's index the UID names. A 404 is never cached, and the key holds
    the clinic, so another clinic's UID is looked up (and missed) in the asker's clinic every time.
    """
    key = (tenant.pk, study_instance_uid)
    study = None if fresh else study_cache.get(key)
    if study is None:
        with actor_tenant_context(request.actor):
            study = study_by_uid(tenant=tenant, study_instance_uid=study_instance_uid)
        study_cache.put(key, study)
    return study


def _study(request, slug: str, study_instance_uid: str) -> tuple[Tenant, Study]:
    tenant = _tenant(request, slug)
    return tenant, _study_lookup(request, tenant, study_instance_uid)


def _online(request, tenant: Tenant, study: Study) -> Study:
    if study.evicted_at is None:
        return study
    with actor_tenant_context(request.actor):
        restored = study_bring_online(tenant=tenant, study=study)
        # Read again with its patient while the context is open: the audit below needs both.
        study = study_by_uid(tenant=tenant, study_instance_uid=restored.study_instance_uid)
    study_cache.put((tenant.pk, study.study_instance_uid), study)
    return study


# QIDO-RS -------------------------------------------------------------------------------------


def _qido(request, *, slug: str, level: Level, study_instance_uid: str | None = None, series_instance_uid=None):
    tenant = _tenant(request, slug)
    study = series = None
    if study_instance_uid is not None:
        study = study_by_uid(tenant=tenant, study_instance_uid=study_instance_uid)
    if series_instance_uid is not None:
        series = series_by_uid(study=study, series_instance_uid=series_instance_uid)
    try:
        query = query_parse(request.GET, level=level)
        matching = query_rows(query, tenant=tenant, study=study, series=series)
    except QueryError as error:
        raise BadQuery(str(error)) from error
    rows = list(matching[query.offset : query.offset + query.limit + 1])
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    keywords = answer_keywords(query, spans_studies=study is None, spans_series=series is None)
    answer = Answer(base_url=public_base_url(tenant))
    matches = [row_as_dicom_json(row, level=level, keywords=keywords, answer=answer) for row in rows]
    if study is not None:
        dicomweb_access_record(
            actor=request.actor, tenant=tenant, study=study, event_id=AuditEventId.QUERY, counts={f"qido_{level}": 1}
        )
    else:
        matched = {row if isinstance(row, Study) else row.study for row in rows}
        try:
            audit_record(
                event_id=AuditEventId.QUERY,
                action=AuditAction.EXECUTE,
                tenant_id=tenant.pk,
                actor=request.actor,
                patient_ids=[match.patient.patient_id for match in matched],
                study_instance_uids=[match.study_instance_uid for match in matched],
                detail={
                    "interface": "dicomweb",
                    "level": level.value,
                    "matches": len(matches),
                    "parameters": sorted(set(request.GET)),
                },
            )
        except AuditWriteFailed as error:
            raise AccessNotAudited() from error
    response = HttpResponse(json.dumps(matches, separators=(",", ":")), content_type=DICOM_JSON)
    response["Cache-Control"] = "private, no-cache"
    if more:
        # PS3.18 6.7.1.2: the client learns that a next page exists.
        response["Warning"] = '299 readroom "There are additional results that can be requested."'
    return response


def qido_studies(request, *, slug: str) -> HttpResponse:
    return _qido(request, slug=slug, level=Level.STUDY)


_QIDO_SCHEMA = {
    "parameters": [
        OpenApiParameter(name, str, required=False)
        for name in sorted({a.keyword for a in ATTRIBUTES if a.match} | CONTROL_PARAMETERS)
    ],
    "responses": {(200, DICOM_JSON): dict},
}


@extend_schema(summary="QIDO-RS: search a clinic's series", **_QIDO_SCHEMA)
@_dicomweb(["GET"])
def qido_all_series(request, slug: str):
    return _qido(request, slug=slug, level=Level.SERIES)


@extend_schema(summary="QIDO-RS: search a clinic's instances", **_QIDO_SCHEMA)
@_dicomweb(["GET"])
def qido_all_instances(request, slug: str):
    return _qido(request, slug=slug, level=Level.INSTANCE)


@extend_schema(summary="QIDO-RS: search the series of a study", **_QIDO_SCHEMA)
@_dicomweb(["GET"])
def qido_study_series(request, slug: str, study_instance_uid: str):
    return _qido(request, slug=slug, level=Level.SERIES, study_instance_uid=study_instance_uid)


@extend_schema(summary="QIDO-RS: search the instances of a study", **_QIDO_SCHEMA)
@_dicomweb(["GET"])
def qido_study_instances(request, slug: str, study_instance_uid: str):
    return _qido(request, slug=slug, level=Level.INSTANCE, study_instance_uid=study_instance_uid)


@extend_schema(summary="QIDO-RS: search the instances of a series", **_QIDO_SCHEMA)
@_dicomweb(["GET"])
def qido_series_instances(request, slug: str, study_instance_uid: str, series_instance_uid: str):
    return _qido(
        request,
        slug=slug,
        level=Level.INSTANCE,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
    )


# WADO-RS -------------------------------------------------------------------------------------


def _accept(request, default: str) -> str:
    accept = request.headers.get("Accept", "").strip()
    return default if accept in ("", "*/*") else accept


def _multipart_accept(request, part_type: str) -> str:
    """The Accept to send Orthanc for a multipart answer: wildcards made explicit, the rest passed through.

    Orthanc refuses `type="*/*"` (what dicomweb-client sends by default), so a wildcard becomes the
    standard part type with the transfer syntax the client asked for, `*` (as stored) by default.
    """
    ranges = [media_range.strip() for media_range in request.headers.get("Accept", "").split(",")]
    ranges = [media_range for media_range in ranges if media_range]
    for media_range in ranges:
        media_type, _, rest = media_range.partition(";")
        media_type = media_type.strip().lower()
        parameters = {}
        for parameter in rest.split(";"):
            name, _, value = parameter.partition("=")
            parameters[name.strip().lower()] = value.strip().strip('"')
        if media_type == "multipart/related":
            wanted = parameters.get("type", "*/*").lower()
            if wanted in ("*/*", part_type.split("/")[0] + "/*"):
                syntax = parameters.get("transfer-syntax", "*")
                return f'multipart/related; type="{part_type}"; transfer-syntax={syntax}'
            return media_range
        if media_type in ("*/*", "multipart/*"):
            break
    else:
        if ranges:
            return ranges[0]
    return f'multipart/related; type="{part_type}"; transfer-syntax=*'


def _single_part_syntax(request) -> str | None:
    """For `Accept: application/octet-stream[; transfer-syntax=...]` first: the transfer syntax of the single-part
    answer (PS3.18 8.7.3; Explicit VR Little Endian unless named, `*` as stored), else None (multipart).

    Cornerstone's loader scans a multipart answer for its boundary byte by byte in the browser's main thread;
    a single part spares it that for every frame of a stack.
    """
    media_range = request.headers.get("Accept", "").split(",")[0]
    media_type, _, rest = media_range.partition(";")
    if media_type.strip().lower() != "application/octet-stream":
        return None
    for parameter in rest.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "transfer-syntax" and value.strip().strip('"'):
            syntax = value.strip().strip('"')
            if not _SYNTAX_RE.fullmatch(syntax):
                raise NotAcceptable("transfer-syntax is a UID (e.g. 1.2.840.10008.1.2.1) or *.")
            return syntax
    return EXPLICIT_VR_LITTLE_ENDIAN


def _wants_gzip(request) -> bool:
    for coding in request.headers.get("Accept-Encoding", "").split(","):
        name, _, parameters = coding.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            return parameters.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _immutable(request, key: str) -> dict[str, str]:
    """Cache headers for bytes fixed by a SOP Instance UID: cached privately, revalidated by ETag."""
    variant = f"{key}|{request.headers.get('Accept', '')}|{sorted(request.GET.lists())}"
    return {
        "ETag": '"' + hashlib.sha256(variant.encode()).hexdigest()[:40] + '"',
        "Cache-Control": f"private, max-age={settings.READROOM_DICOMWEB_FRAME_MAX_AGE}",
        "Vary": "Accept",
    }


def _not_modified(request, headers: dict[str, str]) -> bool:
    tags = [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]
    return "ETag" in headers and (headers["ETag"] in tags or f"W/{headers['ETag']}" in tags)


def _serve(request, tenant: Tenant, study: Study, relay: Relay, counts: dict[str, int]):
    """Audit, then hand Orthanc's answer to the client (or to nginx), unless the browser's copy is current."""
    if _not_modified(request, relay.headers):
        dicomweb_access_record(
            actor=request.actor,
            tenant=tenant,
            study=study,
            event_id=AuditEventId.INSTANCES_ACCESSED,
            counts={f"{name}_revalidated": count for name, count in counts.items()},
        )
        response = HttpResponseNotModified()
        for name, value in relay.headers.items():
            response[name] = value
        return response
    # A browser revalidating its copy does not bring an evicted study back; serving bytes does.
    study = _online(request, tenant, study)
    # Orthanc answers first, so only what is actually served is counted as accessed.
    try:
        upstream = relay_open(request, tenant, relay)
    except NotFound:
        # The study may have been evicted after its lookup was cached: bring it back rather than
        # answer 404 for images the index holds; anything else missing stays the same 404.
        current = _study_lookup(request, tenant, study.study_instance_uid, fresh=True)
        if current.evicted_at is None:
            raise
        study = _online(request, tenant, current)
        upstream = relay_open(request, tenant, relay)
    try:
        dicomweb_access_record(
            actor=request.actor, tenant=tenant, study=study, event_id=AuditEventId.INSTANCES_ACCESSED, counts=counts
        )
    except BaseException:
        if upstream is not None:
            upstream.close()
        raise
    return relay_response(tenant, relay, upstream)


def _series_path(study_instance_uid: str, series_instance_uid: str) -> str:
    return f"/dicom-web/studies/{study_instance_uid}/series/{series_instance_uid}"


def _instance_path(study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str) -> str:
    return f"{_series_path(study_instance_uid, series_instance_uid)}/instances/{sop_instance_uid}"


def _metadata(request, slug: str, study_instance_uid: str, path: str, kind: str):
    tenant, study = _study(request, slug, study_instance_uid)
    relay = Relay(
        path=f"{path}/metadata",
        accept=DICOM_JSON,
        rewrite_urls=True,
        gzip=_wants_gzip(request),
        # Late instances change a study's metadata, so the browser revalidates every time.
        headers={"Cache-Control": "private, no-cache", "Vary": "Accept-Encoding"},
        accel_allowed=False,
    )
    return _serve(request, tenant, study, relay, counts={kind: 1})


def _rendered_params(request, *, thumbnail: bool) -> list[tuple[str, str]]:
    # `accept` (PS3.18 8.3.3.1, what OHIF puts on thumbnail URLs) stands in for the Accept header.
    unknown = sorted(set(request.GET) - (RENDERED_PARAMETERS | {"charset", "accept"}))
    if unknown:
        supported = sorted(RENDERED_PARAMETERS | {"accept"})
        raise BadQuery(f"Unsupported parameters: {', '.join(unknown)}. Supported: {', '.join(supported)}.")
    params = [(name, value) for name, values in request.GET.lists() if name in RENDERED_PARAMETERS for value in values]
    if thumbnail:
        viewport = request.GET.get("viewport", THUMBNAIL_VIEWPORT)
        if not _VIEWPORT_RE.fullmatch(viewport):
            raise BadQuery("viewport must be two positive integers: columns,rows (e.g. 128,128).")
        params = [(name, value) for name, value in params if name != "viewport"] + [("viewport", viewport)]
    return params


def _rendered_accept(request) -> str:
    accept = request.GET.get("accept", "").strip() or _accept(request, "image/jpeg")
    for media_type in RENDERED_MEDIA_TYPES:
        if media_type in accept:
            return media_type
    if "image/*" in accept or "*/*" in accept:
        return "image/jpeg"
    raise NotAcceptable(f"Rendered images are available as {', '.join(RENDERED_MEDIA_TYPES)}.")


def _rendered(request, slug, study_instance_uid, path, *, key: str | None, thumbnail: bool, kind: str):
    tenant, study = _study(request, slug, study_instance_uid)
    params = _rendered_params(request, thumbnail=thumbnail)
    headers = _immutable(request, key) if key else {"Cache-Control": "private, no-cache"}
    relay = Relay(path=f"{path}/rendered", params=params, accept=_rendered_accept(request), headers=headers)
    return _serve(request, tenant, study, relay, counts={kind: 1})


_WADO_RESPONSES = {(200, "multipart/related"): bytes}
_IMAGE_RESPONSES = {(200, media_type): bytes for media_type in RENDERED_MEDIA_TYPES}


@extend_schema(summary="WADO-RS: metadata of a study", responses={(200, DICOM_JSON): dict})
@_retrieval
def study_metadata(request, slug: str, study_instance_uid: str):
    return _metadata(request, slug, study_instance_uid, f"/dicom-web/studies/{study_instance_uid}", "study_metadata")


@extend_schema(summary="WADO-RS: rendered study", responses={(200, "image/jpeg"): bytes})
@_retrieval
def study_rendered(request, slug: str, study_instance_uid: str):
    path = f"/dicom-web/studies/{study_instance_uid}"
    return _rendered(request, slug, study_instance_uid, path, key=None, thumbnail=False, kind="rendered")


@extend_schema(summary="WADO-RS: thumbnail of a study (its first series' middle image)", responses=_IMAGE_RESPONSES)
@_retrieval
def study_thumbnail(request, slug: str, study_instance_uid: str):
    tenant, study = _study(request, slug, study_instance_uid)
    with actor_tenant_context(request.actor):
        instance = representative_instance(study=study)
    return _instance_thumbnail(request, tenant, study, instance.series.series_instance_uid, instance.sop_instance_uid)


def _instance_thumbnail(request, tenant, study, series_instance_uid, sop_instance_uid, frame: str | None = None):
    path = _instance_path(study.study_instance_uid, series_instance_uid, sop_instance_uid)
    if frame is not None:
        path += f"/frames/{frame}"
    relay = Relay(
        path=f"{path}/rendered",
        params=_rendered_params(request, thumbnail=True),
        accept=_rendered_accept(request),
        headers=_immutable(request, f"{sop_instance_uid}/thumbnail/{frame or ''}"),
    )
    return _serve(request, tenant, study, relay, counts={"thumbnail": 1})


@extend_schema(summary="WADO-RS: retrieve a series", responses=_WADO_RESPONSES)
@_retrieval
def series_retrieve(request, slug: str, study_instance_uid: str, series_instance_uid: str):
    tenant, study = _study(request, slug, study_instance_uid)
    relay = Relay(
        path=_series_path(study_instance_uid, series_instance_uid),
        accept=_multipart_accept(request, "application/dicom"),
        headers={"Cache-Control": "private, no-cache"},
    )
    return _serve(request, tenant, study, relay, counts={"series": 1})


@extend_schema(summary="WADO-RS: metadata of a series", responses={(200, DICOM_JSON): dict})
@_retrieval
def series_metadata(request, slug: str, study_instance_uid: str, series_instance_uid: str):
    path = _series_path(study_instance_uid, series_instance_uid)
    return _metadata(request, slug, study_instance_uid, path, "series_metadata")


@extend_schema(summary="WADO-RS: rendered series", responses={(200, "image/jpeg"): bytes})
@_retrieval
def series_rendered(request, slug: str, study_instance_uid: str, series_instance_uid: str):
    path = _series_path(study_instance_uid, series_instance_uid)
    return _rendered(request, slug, study_instance_uid, path, key=None, thumbnail=False, kind="rendered")


@extend_schema(summary="WADO-RS: thumbnail of a series (its middle image)", responses=_IMAGE_RESPONSES)
@_retrieval
def series_thumbnail(request, slug: str, study_instance_uid: str, series_instance_uid: str):
    tenant, study = _study(request, slug, study_instance_uid)
    with actor_tenant_context(request.actor):
        instance = representative_instance(study=study, series_instance_uid=series_instance_uid)
    return _instance_thumbnail(request, tenant, study, series_instance_uid, instance.sop_instance_uid)


@extend_schema(summary="WADO-RS: retrieve an instance", responses=_WADO_RESPONSES)
@_retrieval
def instance_retrieve(request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str):
    tenant, study = _study(request, slug, study_instance_uid)
    relay = Relay(
        path=_instance_path(study_instance_uid, series_instance_uid, sop_instance_uid),
        accept=_multipart_accept(request, "application/dicom"),
        headers=_immutable(request, f"{sop_instance_uid}/instance"),
    )
    return _serve(request, tenant, study, relay, counts={"instances": 1})


@extend_schema(summary="WADO-RS: metadata of an instance", responses={(200, DICOM_JSON): dict})
@_retrieval
def instance_metadata(request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str):
    path = _instance_path(study_instance_uid, series_instance_uid, sop_instance_uid)
    return _metadata(request, slug, study_instance_uid, path, "instance_metadata")


@extend_schema(summary="WADO-RS: rendered instance", responses={(200, "image/jpeg"): bytes})
@_retrieval
def instance_rendered(request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str):
    path = _instance_path(study_instance_uid, series_instance_uid, sop_instance_uid)
    key = f"{sop_instance_uid}/rendered"
    return _rendered(request, slug, study_instance_uid, path, key=key, thumbnail=False, kind="rendered")


@extend_schema(summary="WADO-RS: thumbnail of an instance", responses=_IMAGE_RESPONSES)
@_retrieval
def instance_thumbnail(request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str):
    tenant, study = _study(request, slug, study_instance_uid)
    return _instance_thumbnail(request, tenant, study, series_instance_uid, sop_instance_uid)


def _frames(frames: str) -> str:
    if not _FRAMES_RE.fullmatch(frames):
        raise BadQuery("Frame numbers are a comma-separated list of integers from 1, e.g. frames/1 or frames/1,2,3.")
    return frames


@extend_schema(
    summary="WADO-RS: frames of an instance (stored or requested transfer syntax)",
    responses={(200, "multipart/related"): bytes, (200, "application/octet-stream"): bytes},
)
@_retrieval
def instance_frames(
    request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, frames: str
):
    frames = _frames(frames)
    single_part_syntax = _single_part_syntax(request)
    if single_part_syntax is not None and "," in frames:
        raise NotAcceptable("A single-part answer holds one frame; ask for multipart/related to get several.")
    tenant, study = _study(request, slug, study_instance_uid)
    path = f"{_instance_path(study_instance_uid, series_instance_uid, sop_instance_uid)}/frames/{frames}"
    headers = _immutable(request, f"{sop_instance_uid}/frames/{frames}")
    if single_part_syntax is not None:
        # Orthanc answers multipart only, so Django unwraps its one part. Behind nginx the bytes are worth more
        # off the web process than one scan in the browser: nginx serves the multipart form, which the viewer
        # reads as well (HTTP lets a server answer another type than the one asked for).
        accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={single_part_syntax}'
        single_part = not accel_redirect_applies(request)
        relay = Relay(path=path, accept=accept, headers=headers, rewrite_urls=not single_part, single_part=single_part)
    else:
        accept = _multipart_accept(request, "application/octet-stream")
        relay = Relay(path=path, accept=accept, rewrite_urls=True, headers=headers)
    return _serve(request, tenant, study, relay, counts={"frames": frames.count(",") + 1})


@extend_schema(summary="WADO-RS: rendered frames", responses={(200, "image/jpeg"): bytes})
@_retrieval
def frames_rendered(
    request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, frames: str
):
    frames = _frames(frames)
    path = f"{_instance_path(study_instance_uid, series_instance_uid, sop_instance_uid)}/frames/{frames}"
    key = f"{sop_instance_uid}/frames/{frames}/rendered"
    return _rendered(request, slug, study_instance_uid, path, key=key, thumbnail=False, kind="rendered")


@extend_schema(summary="WADO-RS: thumbnail of a frame", responses=_IMAGE_RESPONSES)
@_retrieval
def frames_thumbnail(
    request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, frames: str
):
    frames = _frames(frames)
    tenant, study = _study(request, slug, study_instance_uid)
    frame = frames.split(",")[0]
    return _instance_thumbnail(request, tenant, study, series_instance_uid, sop_instance_uid, frame=frame)


_BULK_RE = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*$")


@extend_schema(summary="WADO-RS: bulk data, as announced by BulkDataURI in the metadata", responses=_WADO_RESPONSES)
@_retrieval
def instance_bulkdata(
    request, slug: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str, tag_path: str
):
    if not _BULK_RE.fullmatch(tag_path):
        raise BadQuery("A bulk data path is a tag (8 hex digits), optionally nested as tag/item/tag.")
    tenant, study = _study(request, slug, study_instance_uid)
    relay = Relay(
        path=f"{_instance_path(study_instance_uid, series_instance_uid, sop_instance_uid)}/bulk/{tag_path}",
        accept=_multipart_accept(request, "application/octet-stream"),
        rewrite_urls=True,
        headers=_immutable(request, f"{sop_instance_uid}/bulk/{tag_path}"),
    )
    return _serve(request, tenant, study, relay, counts={"bulkdata": 1})


def study_retrieve(request, *, slug: str, study_instance_uid: str):
    tenant, study = _study(request, slug, study_instance_uid)
    relay = Relay(
        path=f"/dicom-web/studies/{study_instance_uid}",
        accept=_multipart_accept(request, "application/dicom"),
        headers={"Cache-Control": "private, no-cache"},
    )
    return _serve(request, tenant, study, relay, counts={"studies": 1})


# /studies and /studies/{study}: QIDO-RS or WADO-RS on GET, STOW-RS on POST ---------------------

_STOW_RESPONSES = {
    200: OpenApiResponse(description="All instances stored (application/dicom+json)"),
    202: OpenApiResponse(description="Some instances failed; see FailedSOPSequence"),
    409: OpenApiResponse(description="No instance was stored; see FailedSOPSequence"),
}


@extend_schema(methods=["GET"], summary="QIDO-RS: search a clinic's studies", **_QIDO_SCHEMA)
@extend_schema(
    methods=["POST"],
    summary="STOW-RS: store instances in a clinic",
    request={"multipart/related": bytes},
    responses=_STOW_RESPONSES,
)
@api_view(["GET", "POST"])
@parser_classes([StowBodyParser])
@renderer_classes([JSONRenderer, DicomJsonRenderer])
@_any_accept
def dicomweb_studies(request, slug: str):
    if request.method == "POST":
        return stow(request, slug=slug)
    return qido_studies(request, slug=slug)


@extend_schema(methods=["GET"], summary="WADO-RS: retrieve a study", responses=_WADO_RESPONSES)
@extend_schema(
    methods=["POST"],
    summary="STOW-RS: store instances of one study",
    request={"multipart/related": bytes},
    responses=_STOW_RESPONSES,
)
@tenant_context_in_view
@api_view(["GET", "POST"])
@parser_classes([StowBodyParser])
@renderer_classes([JSONRenderer, DicomJsonRenderer])
@_any_accept
def stow_study(request, slug: str, study_instance_uid: str):
    if request.method == "POST":
        return stow(request, slug=slug, study_instance_uid=study_instance_uid)
    return study_retrieve(request, slug=slug, study_instance_uid=study_instance_uid)
