"""The demo data set: two clinics with AI, a person of every role, and a few synthetic studies in each Orthanc."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from pydicom.uid import generate_uid

from saas.studies.enums import IngestPath
from saas.studies.ingest import IngestBatch
from saas.studies.models import Study
from saas.studies.synthetic import cr_image, ct_series, dataset_bytes, dx_image, random_nodule
from tenants.context import tenant_context
from tenants.enums import Role
from tenants.models import Tenant
from tenants.orthanc import orthanc_endpoint
from tenants.services import credential_grant, tenant_ai_set, tenant_create, user_provision

DEMO_PASSWORD = "ReadRoom-demo-2026"  # noqa: S105 - printed by `make demo`, demo data only
DEMO_CLINICS = (("northside", "Northside Imaging"), ("lakeside", "Lakeside Radiology"))


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    clinics: str


def _demo_studies(slug: str) -> list[list]:
    """Deterministic study UIDs, so a second seed finds the studies already there."""
    studies = []
    for number, (description, priority, lesions) in enumerate(
        [("CT ABDOMEN WITH CONTRAST", "ROUTINE", ()), ("CT CHEST", "STAT", [((40.0, -30.0, 0.0), 15.0, 80.0)])]
    ):
        studies.append(
            ct_series(
                patient_id=f"{slug.upper()}-{1001 + number}",
                patient_name=f"Demo^Patient{number + 1}",
                accession_number=f"{slug[:3].upper()}{5001 + number}",
                study_description=description,
                study_instance_uid=generate_uid(entropy_srcs=["readroom-demo", slug, "ct", str(number)]),
                priority=priority,
                # A body-sized field of view, so the demo AI model sees the anatomy it was trained on.
                slices=40,
                rows=128,
                columns=128,
                pixel_spacing=(2.8, 2.8),
                seed=number,
                lesions=lesions,
            )
        )
    studies.append(
        [
            cr_image(
                patient_id=f"{slug.upper()}-2001",
                patient_name="Demo^Chest",
                accession_number=f"{slug[:3].upper()}6001",
                study_instance_uid=generate_uid(entropy_srcs=["readroom-demo", slug, "cr"]),
                seed=7,
            )
        ]
    )
    studies.append(
        [
            dx_image(
                patient_id=f"{slug.upper()}-3001",
                patient_name="Demo^Nodule",
                accession_number=f"{slug[:3].upper()}7001",
                study_instance_uid=generate_uid(entropy_srcs=["readroom-demo", slug, "dx"]),
                nodule=random_nodule(rows=256, columns=256, pixel_spacing=(1.6, 1.6), seed=5),
                seed=11,
            )
        ]
    )
    return studies


def _upload_missing(tenant: Tenant, studies: list[list]) -> int:
    """Send the demo studies through the same validation and audit as any upload, once."""
    endpoint = orthanc_endpoint(tenant)
    batch = IngestBatch(tenant=tenant, actor=None, path=IngestPath.UPLOAD)
    for datasets in studies:
        study_uid = datasets[0].StudyInstanceUID
        with tenant_context(tenant_ids=[tenant.pk]):
            indexed = Study.objects.filter(tenant=tenant, study_instance_uid=study_uid).exists()
        found = requests.post(f"{endpoint.http_url}/tools/lookup", data=study_uid, auth=endpoint.auth, timeout=30)
        found.raise_for_status()
        if indexed or found.json():
            continue
        for number, dataset in enumerate(datasets):
            batch.add_bytes(f"demo/{study_uid}/{number}.dcm", dataset_bytes(dataset))
    batch.finish()
    return len(batch.stored)


def demo_seed() -> tuple[list[DemoLogin], int]:
    """Create (or refresh) the demo; returns the logins and how many instances were uploaded."""
    logins: list[DemoLogin] = []
    uploaded = 0
    tenants = []
    for slug, name in DEMO_CLINICS:
        tenant, _ = tenant_create(slug=slug, name=name)
        # The demo clinics subscribe to AI: their CT and chest studies are analysed as they arrive.
        tenant_ai_set(tenant=tenant, enabled=True)
        tenants.append(tenant)
        for role in (Role.CLINIC_ADMIN, Role.CLINIC_STAFF, Role.REFERRING_PHYSICIAN, Role.BILLING_ADMIN):
            username = f"{slug}-{role.value.replace('_', '-')}"
            user_provision(username=username, role=role, password=DEMO_PASSWORD, tenant=tenant)
            logins.append(DemoLogin(username, role.value, slug))
        uploaded += _upload_missing(tenant, _demo_studies(slug))
    radiologist = user_provision(username="dr-reader", role=Role.RADIOLOGIST, password=DEMO_PASSWORD, tenant=tenants[0])
    credential_grant(radiologist=radiologist, tenant=tenants[1], modalities=["CT", "CR", "DX"])
    logins.append(DemoLogin("dr-reader", Role.RADIOLOGIST.value, ", ".join(slug for slug, _ in DEMO_CLINICS)))
    user_provision(username="platform-admin", role=Role.PLATFORM_ADMIN, password=DEMO_PASSWORD)
    logins.append(DemoLogin("platform-admin", Role.PLATFORM_ADMIN.value, "-"))
    return logins, uploaded
