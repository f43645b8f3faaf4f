"""Reads of the study index, always within the caller's tenant context."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import date

from django.db.models import Count, Q, QuerySet

from saas.studies.enums import StudyStatus
from saas.studies.models import Instance, Series, Study
from tenants.context import current_context, tenant_context


@dataclass(frozen=True)
class StudySearch:
    text: str = ""  # patient name or patient id
    accession_number: str = ""
    date_from: date | None = None
    date_to: date | None = None
    status: str = ""
    tenant_ids: frozenset[int] | None = None


def studies_search(*, search: StudySearch) -> QuerySet[Study]:
    """Studies of the context's clinics, newest first, narrowed by the search."""
    rows = Study.objects.select_related("patient", "tenant")
    if search.tenant_ids is not None:
        rows = rows.filter(tenant_id__in=search.tenant_ids)
    if search.text:
        rows = rows.filter(
            Q(patient__patient_name__icontains=search.text.replace(" ", "^"))
            | Q(patient__patient_name__icontains=search.text)
            | Q(patient__patient_id__iexact=search.text)
        )
    if search.accession_number:
        rows = rows.filter(accession_number__iexact=search.accession_number)
    # StudyDate is DICOM DA (YYYYMMDD), so string comparison orders it correctly.
    if search.date_from:
        rows = rows.filter(study_date__gte=search.date_from.strftime("%Y%m%d"))
    if search.date_to:
        rows = rows.filter(study_date__lte=search.date_to.strftime("%Y%m%d"))
    if search.status:
        rows = rows.filter(status=search.status)
    # Studies the AI flagged critical come first: a clinic sees at once what may need a call.
    return rows.order_by("-ai_critical", "-study_date", "-study_time", "-pk")


def study_status_counts(*, rows: QuerySet[Study]) -> dict[str, int]:
    counts = {status.value: 0 for status in StudyStatus}
    for row in rows.order_by().values("status").annotate(total=Count("pk")):
        counts[row["status"]] = row["total"]
    return counts


def study_has_segmentations(*, study: Study) -> bool:
    """Whether the index holds a SEG series in this study (the viewer keeps its WebGL renderer for them)."""
    return study.series.filter(modality="SEG").exists()


# At most 64 characters: a STOW-RS answer carries them as an ErrorComment (LO).
DUPLICATE_SOP_INSTANCE_REASON = "SOP Instance UID already stored for another patient/study/series"
DUPLICATE_SERIES_REASON = "Series Instance UID already stored for another patient/study"


def instance_conflict(
    *,
    tenant,
    sop_instance_uid: str,
    hierarchy: tuple[str, str, str],
    series_homes: dict[str, tuple[str, str] | None] | None = None,
) -> str | None:
    """Why an instance may not be stored: its UID is indexed under another (patient id, study UID, series UID),
    or its series under another (patient id, study UID).

    The same instance sent again is stored once; one that reuses a UID elsewhere is refused and the first copy
    stays (a SOP Instance UID names one image, a Series Instance UID one series of one study, and the archive
    key holds both). ``series_homes`` remembers series already looked up, for a batch of one series.
    """
    context = current_context()
    with (
        contextlib.nullcontext()
        if context and tenant.pk in context.tenant_ids
        else tenant_context(tenant_ids=[tenant.pk])
    ):
        indexed = (
            Instance.objects.filter(tenant=tenant, sop_instance_uid=sop_instance_uid)
            .values_list("study__patient__patient_id", "study__study_instance_uid", "series__series_instance_uid")
            .first()
        )
        if indexed is not None:
            return None if tuple(indexed) == tuple(hierarchy) else DUPLICATE_SOP_INSTANCE_REASON
        series_homes = {} if series_homes is None else series_homes
        series_instance_uid = hierarchy[2]
        if series_instance_uid not in series_homes:
            home = (
                Series.objects.filter(tenant=tenant, series_instance_uid=series_instance_uid)
                .values_list("study__patient__patient_id", "study__study_instance_uid")
                .first()
            )
            series_homes[series_instance_uid] = None if home is None else tuple(home)
    home = series_homes[series_instance_uid]
    return None if home is None or home == tuple(hierarchy[:2]) else DUPLICATE_SERIES_REASON
