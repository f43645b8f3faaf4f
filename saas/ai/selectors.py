"""Read side of the AI domain: what the viewer and the worklist show of a study's analyses."""

from __future__ import annotations

from saas.ai.enums import AnalysisStatus
from saas.ai.models import Analysis, Finding
from saas.studies.models import Study


def study_findings(study: Study) -> list[dict]:
    """Findings of the newest successful analysis per model, critical and largest first, as the viewer lists them.

    Each entry names the analysed series and the instance (slice) nearest to the finding's centre,
    so a click can jump there, and the SEG that outlines it (segment_number 0: no outline).
    """
    rows = (
        Finding.objects.filter(study=study, analysis__in=[analysis.pk for analysis in latest_analyses(study)])
        .select_related("analysis")
        .order_by("-critical", "-diameter_mm", "-confidence", "pk")
    )
    return [
        {
            "id": finding.pk,
            "label": finding.label,
            "confidence": finding.confidence,
            "diameter_mm": finding.diameter_mm,
            "volume_ml": finding.volume_ml,
            "centre_mm": list(finding.centre_mm),
            "critical": finding.critical,
            "model": f"{finding.analysis.model_name} {finding.analysis.model_version}",
            "series_instance_uid": finding.series_instance_uid,
            "sop_instance_uid": finding.sop_instance_uid,
            "segment_number": finding.segment_number,
            "seg_sop_instance_uid": finding.analysis.seg_sop_instance_uid,
        }
        for finding in rows
    ]


def latest_analyses(study: Study) -> list[Analysis]:
    """The newest successful analysis of each model for the study.

    Not filtered by Study.version: the AI objects stored back into the study reopen it (a new version)
    without changing what was analysed, and an analysis of new slices supersedes the older one.
    """
    latest: dict[str, Analysis] = {}
    for analysis in Analysis.objects.filter(study=study, status=AnalysisStatus.SUCCEEDED).order_by("finished_at"):
        latest[analysis.model_name] = analysis
    return sorted(latest.values(), key=lambda analysis: analysis.model_name)


def analyses_for_tenant(*, status: str | None = None):
    """Every analysis of the tenants in context, newest first (the administrators' view of failures)."""
    queryset = Analysis.objects.select_related("study").order_by("-created_at")
    return queryset.filter(status=status) if status else queryset
