"""`audit_verify [--tenant <slug>]`: exit 0 when every hash chain verifies, 1 with the first broken row."""

from django.core.management.base import BaseCommand, CommandError

from saas.audit.enums import AuditAction, AuditEventId, AuditOutcome
from saas.audit.services import audit_chains_verify, audit_record
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Recompute the SHA-256 chain of every tenant (and the platform chain) and report the first broken row."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", help="verify only this tenant's chain")

    def handle(self, *args, tenant: str | None, **options):
        if tenant:
            found = Tenant.objects.filter(slug=tenant).first()
            if found is None:
                raise CommandError(f"No tenant with slug '{tenant}'.")
            tenant_ids, include_platform = [found.pk], False
        else:
            tenant_ids, include_platform = list(Tenant.objects.values_list("pk", flat=True)), True
        slugs = dict(Tenant.objects.values_list("pk", "slug"))
        report = audit_chains_verify(tenant_ids=tenant_ids, include_platform=include_platform)
        audit_record(
            event_id=AuditEventId.AUDIT_LOG_USED,
            action=AuditAction.READ,
            outcome=AuditOutcome.SUCCESS if not report.breaks else AuditOutcome.SERIOUS_FAILURE,
            tenant_id=None,
            actor_username="audit_verify",
            detail={"operation": "audit_verify", "chains": report.chains, "broken": len(report.breaks)},
        )
        if report.breaks:
            first = report.breaks[0]
            chain = (
                "platform" if first.tenant_id is None else slugs.get(first.tenant_id, f"tenant id {first.tenant_id}")
            )
            self.stderr.write(
                f"BROKEN chain={chain} seq={first.seq} row_id={first.row_id}: {first.reason}"
                + (f" ({len(report.breaks)} chains broken)" if len(report.breaks) > 1 else "")
            )
            raise SystemExit(1)
        self.stdout.write(f"OK: {report.chains} chains, {report.events} events verified")
