"""De-identified model inputs: the analysed series' voxels and geometry as an `.npz`, and nothing else.

PS3.15 Annex E (basic profile) by construction: no DICOM header travels. The input holds exactly the four
arrays of the workers' message schema (voxels, spacing, orientation, origin), so no name, id, date, UID or
description can reach a worker. Burned-in text is not a risk for CT/MR volumes and synthetic radiographs; a
modality that burns in annotations would need pixel scrubbing before it is routed to a model.
"""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pydicom
from django.conf import settings

from saas.ai.registry import ModelSpec
from saas.studies.models import Instance, Series, Study
from saas.studies.orthanc import OrthancError, orthanc_client
from tenants.models import Tenant

# Hounsfield units outside this range are detector artefacts; int16 holds the rest.
HU_RANGE = (-1024, 3071)


class InputError(ValueError):
    """The series cannot become a model input (inconsistent geometry, unreadable pixels); names the problem."""


@dataclass(frozen=True)
class InputVolume:
    npz: bytes
    shape: tuple[int, int, int]
    # SOP Instance UIDs in slice order (z index -> instance).
    sop_instance_uids: list[str]


def series_for_model(*, study: Study, spec: ModelSpec) -> Series | None:
    """The series the model should read: the largest one it accepts (a thin-slice volume over a scout)."""
    candidates = [
        series
        for series in Series.objects.filter(study=study).order_by("series_number", "pk")
        if spec.accepts(modality=series.modality, body_part=series.body_part, instance_count=series.instance_count)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda series: series.instance_count)


def input_key_for(*, study: Study, series: Series) -> str:
    """What a study version means to a model: the analysed series and exactly its instances.

    Derived from the content, not from Study.version, so the AI objects stored back into the study (which
    reopen it and bump its version) do not ask for the same analysis again; an added slice does.
    """
    uids = sorted(Instance.objects.filter(series=series).values_list("sop_instance_uid", flat=True))
    digest = hashlib.sha256("\n".join([study.study_instance_uid, series.series_instance_uid, *uids]).encode())
    return "sv-" + digest.hexdigest()[:40]


def _fetch(tenant: Tenant, orthanc_instance_id: str) -> pydicom.Dataset:
    try:
        response = orthanc_client(tenant).get(f"/instances/{orthanc_instance_id}/file")
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise OrthancError(f"Orthanc did not return instance {orthanc_instance_id}: {error}") from error
    return pydicom.dcmread(io.BytesIO(response.content))


def _pixels(dataset: pydicom.Dataset, *, hounsfield: bool) -> np.ndarray:
    try:
        pixels = dataset.pixel_array.astype(np.float32)
    except Exception as error:  # noqa: BLE001 - any decoder failure is the same refusal
        raise InputError(f"instance pixels are not decodable ({error.__class__.__name__})") from error
    if pixels.ndim != 2:
        raise InputError(f"expected one 2D grey frame per instance, got shape {pixels.shape}")
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        # The models see attenuation as brighter, whatever polarity the modality stored.
        pixels = float(2 ** int(dataset.BitsStored) - 1) - pixels
    low, high = HU_RANGE if hounsfield else (0, 32767)
    return np.clip(np.rint(pixels), low, high).astype(np.int16)


def _npz(voxels: np.ndarray, spacing, orientation, origin) -> bytes:
    buffer = io.BytesIO()
    # Uncompressed: the object lives for one job on the same network; compressing 250 MB costs seconds.
    np.savez(
        buffer,
        voxels=voxels,
        spacing=np.asarray(spacing, dtype=np.float64),
        orientation=np.asarray(orientation, dtype=np.float64),
        origin=np.asarray(origin, dtype=np.float64),
    )
    return buffer.getvalue()


def volume_build(*, tenant: Tenant, series: Series, spec: ModelSpec) -> InputVolume:
    """Read the series from the tenant's Orthanc and turn it into the de-identified input of ``spec``."""
    instances = list(Instance.objects.filter(series=series).values_list("orthanc_instance_id", flat=True))
    if not instances:
        raise InputError(f"series {series.pk} has no indexed instances")
    with ThreadPoolExecutor(max_workers=settings.READROOM_AI_INPUT_FETCH_THREADS) as pool:
        datasets = list(pool.map(lambda orthanc_id: _fetch(tenant, orthanc_id), instances))
    if spec.input_kind == "image":
        view = str(getattr(datasets[0], "ViewPosition", "") or "").upper()
        if spec.view_positions and view not in spec.view_positions:
            raise InputError(f"view position {view!r} is not one {spec.name} reads ({', '.join(spec.view_positions)})")
        return _image_input(datasets[0])
    return volume_from_datasets(datasets)


def _image_input(dataset: pydicom.Dataset) -> InputVolume:
    spacing = getattr(dataset, "PixelSpacing", None) or getattr(dataset, "ImagerPixelSpacing", None)
    if not spacing:
        raise InputError("the radiograph has neither PixelSpacing nor ImagerPixelSpacing")
    pixels = _pixels(dataset, hounsfield=False)
    npz = _npz(pixels[None], (1.0, float(spacing[0]), float(spacing[1])), (1, 0, 0, 0, 1, 0), (0, 0, 0))
    return InputVolume(npz=npz, shape=(1, *pixels.shape), sop_instance_uids=[str(dataset.SOPInstanceUID)])


def volume_from_datasets(datasets: list[pydicom.Dataset]) -> InputVolume:
    """The de-identified volume of one series' datasets (any order; sorted along the slice normal here)."""
    first = datasets[0]
    try:
        orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
        pixel_spacing = [float(v) for v in first.PixelSpacing]
    except (AttributeError, TypeError, ValueError) as error:
        raise InputError("the series lacks ImageOrientationPatient or PixelSpacing") from error
    normal = np.cross(orientation[:3], orientation[3:])
    shape = (int(first.Rows), int(first.Columns))
    placed = []
    for dataset in datasets:
        if (int(dataset.Rows), int(dataset.Columns)) != shape:
            raise InputError("the slices of the series do not all have the same size")
        if not np.allclose([float(v) for v in dataset.ImageOrientationPatient], orientation, atol=1e-3):
            raise InputError("the slices of the series do not share one orientation")
        position = np.asarray([float(v) for v in dataset.ImagePositionPatient])
        placed.append((float(position @ normal), position, dataset))
    placed.sort(key=lambda item: item[0])
    distances = np.diff([item[0] for item in placed])
    if len(placed) > 1 and (distances <= 1e-3).any():
        raise InputError("two slices of the series share one position (a duplicate or a second acquisition)")
    slice_spacing = float(np.median(distances)) if len(placed) > 1 else float(getattr(first, "SliceThickness", 1.0))
    voxels = np.stack([_pixels(dataset, hounsfield=True) for _, _, dataset in placed])
    npz = _npz(
        voxels,
        (slice_spacing, pixel_spacing[0], pixel_spacing[1]),
        orientation,
        placed[0][1],
    )
    return InputVolume(
        npz=npz,
        shape=tuple(voxels.shape),
        sop_instance_uids=[str(dataset.SOPInstanceUID) for _, _, dataset in placed],
    )
