"""`make_synthetic_study --modality CT|MR|CR|DX --out <dir>`: write a PHI-free synthetic study as Part 10 files."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pydicom
from django.core.management.base import BaseCommand, CommandError

from saas.studies.synthetic import (
    BrightFocus,
    cr_image,
    dx_image,
    iter_ct_series,
    iter_mr_series,
    random_lesions,
    random_nodule,
)

MODALITIES = ("CT", "MR", "CR", "DX")
VOLUME_MODALITIES = ("CT", "MR")
DEFAULT_SLICES = 64
MAX_SLICES = 2000
MAX_LESIONS = 50
DEFAULT_MATRIX = {"CT": 512, "MR": 512, "CR": 1024, "DX": 1024}
# The field of view stays fixed, so a smaller matrix shows the same body with larger pixels and the
# lesions keep their size in mm: 0.7 mm pixels at 512 for CT and MR, 0.4 mm at 1024 for radiographs.
FIELD_OF_VIEW_MM = {"CT": 358.4, "MR": 358.4, "CR": 409.6, "DX": 409.6}
MATRIX_RANGE = {"CT": (8, 2048), "MR": (8, 2048), "CR": (16, 4096), "DX": (16, 4096)}
DEFAULT_SLICE_THICKNESS_MM = {"CT": 2.5, "MR": 5.0}
MIN_SLICE_THICKNESS_MM = 0.1
MAX_SLICE_THICKNESS_MM = 50.0
STUDY_DESCRIPTION = {"CT": "CT ABDOMEN", "MR": "MR ABDOMEN", "CR": "XR CHEST PA", "DX": "XR CHEST PA"}
# Stored-value increase of an MR bright focus; CT lesions use random_lesions' default of 40-120 HU.
MR_FOCUS_DELTA_RANGE = (400.0, 1000.0)
LESION_COORDINATES = {
    "CT": "patient LPS mm",
    "MR": "patient LPS mm",
    "CR": "image mm from the top-left pixel centre, x right, y down",
    "DX": "image mm from the top-left pixel centre, x right, y down",
}


class Command(BaseCommand):
    help = (
        "Write a synthetic, PHI-free study (CT or MR series, CR or DX chest radiograph) as DICOM Part 10 files "
        "under OUT/<SeriesInstanceUID>/<InstanceNumber>.dcm and print one JSON line describing it. "
        "Needs no database."
    )
    # Demo seeding and benchmarks run this on machines without the stack: no checks, no models.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--modality", required=True, choices=MODALITIES)
        parser.add_argument(
            "--slices", type=int, help=f"CT and MR only: number of slices (default {DEFAULT_SLICES}, 1-{MAX_SLICES})"
        )
        parser.add_argument(
            "--lesions",
            type=int,
            default=0,
            help="CT: focal lesions 6-30 mm, 40-120 HU above their tissue; MR: bright foci; CR/DX: 1 adds a nodule",
        )
        parser.add_argument("--rows", type=int, help="default 512 for CT and MR, 1024 for CR and DX")
        parser.add_argument("--columns", type=int, help="default 512 for CT and MR, 1024 for CR and DX")
        parser.add_argument("--slice-thickness", type=float, help="CT and MR only, in mm (default 2.5 CT, 5 MR)")
        parser.add_argument("--patient-id", help="default SYN-<modality><number>")
        parser.add_argument("--patient-name", help="default Synthetic^<modality><number>")
        parser.add_argument("--accession-number", help="default SYN<modality><seed>")
        parser.add_argument("--seed", type=int, help="makes pixels and lesions reproducible (default: random)")
        parser.add_argument("--out", required=True, help="directory to write into; created if missing")
        parser.add_argument("--force", action="store_true", help="write into OUT even if it is not empty")

    def handle(
        self,
        *args,
        modality: str,
        slices: int | None,
        lesions: int,
        rows: int | None,
        columns: int | None,
        slice_thickness: float | None,
        patient_id: str | None,
        patient_name: str | None,
        accession_number: str | None,
        seed: int | None,
        out: str,
        force: bool,
        **options,
    ):
        volume = modality in VOLUME_MODALITIES
        # Everything is checked before the first file is written, so a refusal leaves nothing behind.
        if not volume and slices is not None:
            raise CommandError(f"--slices applies to CT and MR only; a {modality} study is one image.")
        if not volume and slice_thickness is not None:
            raise CommandError(f"--slice-thickness applies to CT and MR only, not to {modality}.")
        slices = DEFAULT_SLICES if slices is None else slices
        if volume and not 1 <= slices <= MAX_SLICES:
            raise CommandError(f"--slices must be between 1 and {MAX_SLICES}, not {slices}.")
        slice_thickness = DEFAULT_SLICE_THICKNESS_MM.get(modality) if slice_thickness is None else slice_thickness
        if volume and not MIN_SLICE_THICKNESS_MM <= slice_thickness <= MAX_SLICE_THICKNESS_MM:
            raise CommandError(
                f"--slice-thickness must be between {MIN_SLICE_THICKNESS_MM:g} and {MAX_SLICE_THICKNESS_MM:g} mm, "
                f"not {slice_thickness:g}."
            )
        if volume:
            # Rounded as SliceThickness and the positions are written, so the files, the drawn volume and the
            # report agree exactly (0.33333 would otherwise be drawn at one spacing and written at another).
            slice_thickness = round(slice_thickness, 4)
        if volume and not 0 <= lesions <= MAX_LESIONS:
            raise CommandError(f"--lesions must be between 0 and {MAX_LESIONS} for {modality}, not {lesions}.")
        if not volume and lesions not in (0, 1):
            raise CommandError(f"--lesions for {modality} is 0 or 1 (one pulmonary nodule), not {lesions}.")
        rows = DEFAULT_MATRIX[modality] if rows is None else rows
        columns = DEFAULT_MATRIX[modality] if columns is None else columns
        smallest, largest = MATRIX_RANGE[modality]
        for option, value in (("--rows", rows), ("--columns", columns)):
            if not smallest <= value <= largest:
                raise CommandError(f"{option} must be between {smallest} and {largest} for {modality}, not {value}.")
        if seed is not None and seed < 0:
            raise CommandError(f"--seed must be zero or more, not {seed}.")
        seed = secrets.randbelow(2**31) if seed is None else seed
        number = f"{modality}{seed % 9999 + 1:04d}"
        patient_id = patient_id or f"SYN-{number}"
        patient_name = patient_name or f"Synthetic^{number}"
        accession_number = accession_number or f"SYN{modality}{seed % 10**10}"
        for option, value, limit in (
            ("--patient-id", patient_id, 64),
            ("--patient-name", patient_name, 64),
            ("--accession-number", accession_number, 16),
        ):
            if len(value) > limit or "\\" in value:
                raise CommandError(f"{option} must be at most {limit} characters without a backslash.")
        out_dir = Path(out).resolve()
        if out_dir.exists() and not out_dir.is_dir():
            raise CommandError(f"--out {out_dir} exists and is not a directory.")
        if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
            raise CommandError(f"--out {out_dir} is not empty; choose an empty directory or pass --force.")

        # Square pixels across the fixed field of view; the longer side of the matrix spans it. Rounded as
        # PixelSpacing is written, so the report, the files and the drawn geometry agree exactly.
        spacing = round(FIELD_OF_VIEW_MM[modality] / max(rows, columns), 4)
        pixel_spacing = (spacing, spacing)
        common = {
            "patient_id": patient_id,
            "patient_name": patient_name,
            "accession_number": accession_number,
            "study_description": STUDY_DESCRIPTION[modality],
            "rows": rows,
            "columns": columns,
            "pixel_spacing": pixel_spacing,
            "seed": seed,
        }
        try:
            if volume:
                placed = random_lesions(
                    count=lesions,
                    slices=slices,
                    rows=rows,
                    columns=columns,
                    slice_thickness=slice_thickness,
                    pixel_spacing=pixel_spacing,
                    seed=seed,
                    **({"delta_range": MR_FOCUS_DELTA_RANGE} if modality == "MR" else {}),
                )
            else:
                placed = [random_nodule(rows=rows, columns=columns, pixel_spacing=pixel_spacing, seed=seed)] * lesions
        except ValueError as error:
            raise CommandError(f"Cannot place {lesions} lesions: {error}.") from error

        if modality == "CT":
            datasets = iter_ct_series(
                **common, slices=slices, slice_thickness=slice_thickness, organs=True, lesions=placed
            )
        elif modality == "MR":
            placed = [BrightFocus(*lesion) for lesion in placed]
            datasets = iter_mr_series(**common, slices=slices, slice_thickness=slice_thickness, lesions=placed)
        else:
            make_image = cr_image if modality == "CR" else dx_image
            datasets = iter([make_image(**common, nodule=placed[0] if placed else None)])

        count = 0
        study_instance_uid = series_instance_uid = ""
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            # One slice at a time: a 500-slice 512 x 512 series never sits in memory.
            for ds in datasets:
                study_instance_uid, series_instance_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID
                series_dir = out_dir / series_instance_uid
                series_dir.mkdir(exist_ok=True)
                pydicom.dcmwrite(series_dir / f"{ds.InstanceNumber:04d}.dcm", ds, enforce_file_format=True)
                count += 1
        except OSError as error:
            raise CommandError(f"Cannot write under {out_dir}: {error}") from error

        self.stdout.write(
            json.dumps(
                {
                    "modality": modality,
                    "study_instance_uid": study_instance_uid,
                    "series_instance_uid": series_instance_uid,
                    "count": count,
                    "out": str(out_dir),
                    "patient_id": patient_id,
                    "accession_number": accession_number,
                    "seed": seed,
                    "rows": rows,
                    "columns": columns,
                    "pixel_spacing_mm": list(pixel_spacing),
                    "slice_thickness_mm": slice_thickness if volume else None,
                    "lesion_coordinates": LESION_COORDINATES[modality],
                    # Field names as in Lesion, BrightFocus and Nodule: delta_hu for CT, delta_value otherwise.
                    "lesions": [finding._asdict() for finding in placed],
                }
            )
        )
