"""Reads for DICOMweb: resolving UIDs from a URL through the tenant-scoped index (missing and foreign look alike)."""

from __future__ import annotations

from django.http import Http404

from saas.studies.models import Instance, Series, Study
from tenants.access import DECISION_CACHE_SECONDS, DecisionCache
from tenants.models import Tenant
from tenants.viewsets import NOT_FOUND_MESSAGE

# (tenant id, StudyInstanceUID) -> the study row (with its patient) that a retrieval last found; see
# saas.dicomweb.views._study_lookup for what it may be trusted with.
study_cache = DecisionCache(ttl=DECISION_CACHE_SECONDS)


def study_by_uid(*, tenant: Tenant, study_instance_uid: str) -> Study:
    """The tenant's indexed study with this UID; 404 when absent, whoever else may hold it."""
    study = Study.objects.select_related("patient").filter(tenant=tenant, study_instance_uid=study_instance_uid).first()
    if study is None:
        raise Http404(NOT_FOUND_MESSAGE)
    return study


def series_by_uid(*, study: Study, series_instance_uid: str) -> Series:
    series = Series.objects.filter(study=study, series_instance_uid=series_instance_uid).first()
    if series is None:
        raise Http404(NOT_FOUND_MESSAGE)
    return series


def instance_by_uid(*, study: Study, series_instance_uid: str, sop_instance_uid: str) -> Instance:
    instance = (
        Instance.objects.select_related("series")
        .filter(study=study, series__series_instance_uid=series_instance_uid, sop_instance_uid=sop_instance_uid)
        .first()
    )
    if instance is None:
        raise Http404(NOT_FOUND_MESSAGE)
    return instance


def representative_instance(*, study: Study, series_instance_uid: str | None = None) -> Instance:
    """The instance a thumbnail shows: the middle slice of the series (of the first series for a study)."""
    rows = Instance.objects.filter(study=study)
    if series_instance_uid is not None:
        rows = rows.filter(series__series_instance_uid=series_instance_uid)
    else:
        first = Series.objects.filter(study=study).order_by("series_number", "pk").first()
        rows = rows.filter(series=first)
    count = rows.count()
    if count == 0:
        raise Http404(NOT_FOUND_MESSAGE)
    return rows.select_related("series").order_by("instance_number", "pk")[count // 2]
