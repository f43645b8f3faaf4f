"""Reads of the study index, always within the caller's tenant context."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
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
DUPLICATE_SOP_INSTANCE_REASON = "SOP Instance UID already stored in another study or series"
DUPLICATE_SERIES_REASON = "Series Instance UID already stored in another study"
# As the index keeps UIDs (saas.studies.services._text).
_UID_CHARACTERS = 64


@dataclass
class IngestHomes:
    """Where the instances and series of one ingest batch belong: looked up in the index once each, and
    remembered as they are stored, so that one request cannot store the same UID under two studies."""

    sop_instances: dict[str, tuple[str, str]] = field(default_factory=dict)
    series: dict[str, str | None] = field(default_factory=dict)

    def stored(self, *, sop_instance_uid: str, study_instance_uid: str, series_instance_uid: str) -> None:
        study, series = study_instance_uid[:_UID_CHARACTERS], series_instance_uid[:_UID_CHARACTERS]
        self.sop_instances[sop_instance_uid[:_UID_CHARACTERS]] = (study, series)
        self.series[series] = study


def instance_conflict(
    *, tenant, sop_instance_uid: str, study_instance_uid: str, series_instance_uid: str, homes: IngestHomes
) -> str | None:
    """Why an instance may not be stored: its UID is indexed (or stored by this batch) in another study or
    series, or its series in another study.

    The same instance sent again is stored once; one that reuses a UID elsewhere is refused and the first copy
    stays (a SOP Instance UID names one image, a Series Instance UID one series of one study, and the archive
    key holds both). The patient is not compared: the index files a study under the patient it first came with,
    and a later series with another Patient ID still belongs to that study.
    """
    sop, study, series = (uid[:_UID_CHARACTERS] for uid in (sop_instance_uid, study_instance_uid, series_instance_uid))
    context = current_context()
    with (
        contextlib.nullcontext()
        if context and tenant.pk in context.tenant_ids
        else tenant_context(tenant_ids=[tenant.pk])
    ):
        if sop not in homes.sop_instances:
            indexed = (
                Instance.objects.filter(tenant=tenant, sop_instance_uid=sop)
                .values_list("study__study_instance_uid", "series__series_instance_uid")
                .first()
            )
            if indexed is not None:
                homes.sop_instances[sop] = tuple(indexed)
        if sop in homes.sop_instances:
            return None if homes.sop_instances[sop] == (study, series) else DUPLICATE_SOP_INSTANCE_REASON
        if series not in homes.series:
            homes.series[series] = (
                Series.objects.filter(tenant=tenant, series_instance_uid=series)
                .values_list("study__study_instance_uid", flat=True)
                .first()
            )
    home = homes.series[series]
    return None if home is None or home == study else DUPLICATE_SERIES_REASON
