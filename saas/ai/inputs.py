"""De-identified model inputs: the analysed series' voxels and geometry as an `.npz`, and nothing else.

PS3.15 Annex E (basic profile) by construction: no DICOM header travels. The input holds exactly the four
arrays of the workers' message schema (voxels, spacing, orientation, origin), so no name, id, date, UID or
description can reach a worker. Burned-in text is not a risk for CT/MR volumes and synthetic radiographs; a
modality that burns in annotations would need pixel scrubbing before it is routed to a model.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydicom
from django.conf import settings
from rest_framework.exceptions import APIException

from saas.ai.registry import ModelSpec
from saas.dicomweb.upstream import orthanc_open
from saas.studies.models import Instance, Series, Study
from saas.studies.orthanc import OrthancError
from tenants.models import Tenant

# Hounsfield units outside this range are detector artefacts; int16 holds the rest.
HU_RANGE = (-1024, 3071)


class InputError(ValueError):
    """The series cannot become a model input (inconsistent geometry, unreadable pixels); names the problem."""


# A CT voxel above this is not air: the body, the table, anything in the beam (air is -1000 HU, lung
# -850 to -700 HU). CT inputs are cut to the in-plane box around such voxels in any slice.
NOT_AIR_HU = -900
# Kept around that box, so a model still sees the body's edge in context.
CROP_MARGIN_MM = 10.0


@dataclass(frozen=True)
class InputVolume:
    npz: bytes
    # The shape of the voxels sent (after the crop).
    shape: tuple[int, int, int]
    # SOP Instance UIDs in slice order (z index -> instance).
    sop_instance_uids: list[str]
    # Where the input's voxel (0, 0, 0) lies in the series' own grid (slice, row, column): outputs on the
    # input's grid are moved back by it.
    offset: tuple[int, int, int] = (0, 0, 0)


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


def instance_file(tenant: Tenant, orthanc_instance_id: str) -> bytes:
    """One instance's Part 10 bytes, over the pooled standard-library connections of the DICOMweb relay.

    A series is hundreds of half-megabyte files: httpx's per-response work cost twice the time of the
    transfer itself here (500 CT slices: 1.5 s against 0.5 s).
    """
    try:
        response = orthanc_open(tenant, f"/instances/{orthanc_instance_id}/file")
        try:
            return response.read()
        finally:
            response.close()
    except APIException as error:
        raise OrthancError(f"Orthanc did not return instance {orthanc_instance_id}: {error.detail}") from error
    except (OSError, http.client.HTTPException) as error:
        raise OrthancError(f"Orthanc did not return instance {orthanc_instance_id}: {error!r}") from error


def _fetch(tenant: Tenant, orthanc_instance_id: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(instance_file(tenant, orthanc_instance_id)))


def _decoded(dataset: pydicom.Dataset) -> np.ndarray:
    """The stored pixel values of a one-frame grey instance (decompressed when the transfer syntax says so)."""
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # noqa: BLE001 - any decoder failure is the same refusal
        raise InputError(f"instance pixels are not decodable ({error.__class__.__name__})") from error
    if pixels.ndim != 2:
        raise InputError(f"expected one 2D grey frame per instance, got shape {pixels.shape}")
    return pixels


def _fetch_decoded(tenant: Tenant, orthanc_instance_id: str) -> tuple[pydicom.Dataset, np.ndarray]:
    """One instance's header and decoded pixels; decoding here lets the fetch threads share it."""
    dataset = _fetch(tenant, orthanc_instance_id)
    pixels = _decoded(dataset)
    # The encoded bytes are not needed once decoded: a 500-slice CT would otherwise be held twice.
    del dataset.PixelData
    return dataset, pixels


def _rescale(dataset: pydicom.Dataset) -> tuple[float, float]:
    return float(getattr(dataset, "RescaleSlope", 1) or 1), float(getattr(dataset, "RescaleIntercept", 0) or 0)


def _pixels(dataset: pydicom.Dataset, pixels: np.ndarray, *, hounsfield: bool) -> np.ndarray:
    slope, intercept = _rescale(dataset)
    values = pixels.astype(np.float32) * slope + intercept
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        # The models see attenuation as brighter, whatever polarity the modality stored.
        values = float(2 ** int(dataset.BitsStored) - 1) - values
    low, high = HU_RANGE if hounsfield else (0, 32767)
    return np.clip(np.rint(values), low, high).astype(np.int16)


def _hounsfield_into(out: np.ndarray, dataset: pydicom.Dataset, pixels: np.ndarray) -> None:
    """Write one slice in HU into ``out``; integer arithmetic for the usual slope 1 and whole-number intercept."""
    slope, intercept = _rescale(dataset)
    if slope != 1 or not intercept.is_integer() or getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        out[...] = _pixels(dataset, pixels, hounsfield=True)
        return
    values = pixels.astype(np.int32)
    values += int(intercept)
    np.clip(values, *HU_RANGE, out=values)
    out[...] = values


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
        slices = list(pool.map(lambda orthanc_id: _fetch_decoded(tenant, orthanc_id), instances))
    if spec.input_kind == "image":
        view = str(getattr(slices[0][0], "ViewPosition", "") or "").upper()
        if spec.view_positions and view not in spec.view_positions:
            raise InputError(f"view position {view!r} is not one {spec.name} reads ({', '.join(spec.view_positions)})")
        return _image_input(*slices[0])
    return _volume(slices)


def _image_input(dataset: pydicom.Dataset, decoded: np.ndarray) -> InputVolume:
    spacing = getattr(dataset, "PixelSpacing", None) or getattr(dataset, "ImagerPixelSpacing", None)
    if not spacing:
        raise InputError("the radiograph has neither PixelSpacing nor ImagerPixelSpacing")
    pixels = _pixels(dataset, decoded, hounsfield=False)
    npz = _npz(pixels[None], (1.0, float(spacing[0]), float(spacing[1])), (1, 0, 0, 0, 1, 0), (0, 0, 0))
    return InputVolume(npz=npz, shape=(1, *pixels.shape), sop_instance_uids=[str(dataset.SOPInstanceUID)])


def volume_from_datasets(datasets: list[pydicom.Dataset]) -> InputVolume:
    """The de-identified volume of one series' datasets (any order; sorted along the slice normal here)."""
    return _volume([(dataset, _decoded(dataset)) for dataset in datasets])


def _volume(slices: list[tuple[pydicom.Dataset, np.ndarray]]) -> InputVolume:
    first = slices[0][0]
    try:
        orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
        pixel_spacing = [float(v) for v in first.PixelSpacing]
    except (AttributeError, TypeError, ValueError) as error:
        raise InputError("the series lacks ImageOrientationPatient or PixelSpacing") from error
    normal = np.cross(orientation[:3], orientation[3:])
    shape = (int(first.Rows), int(first.Columns))
    placed = []
    for dataset, pixels in slices:
        if (int(dataset.Rows), int(dataset.Columns)) != shape or pixels.shape != shape:
            raise InputError("the slices of the series do not all have the same size")
        if not np.allclose([float(v) for v in dataset.ImageOrientationPatient], orientation, atol=1e-3):
            raise InputError("the slices of the series do not share one orientation")
        position = np.asarray([float(v) for v in dataset.ImagePositionPatient])
        placed.append((float(position @ normal), position, dataset, pixels))
    placed.sort(key=lambda item: item[0])
    distances = np.diff([item[0] for item in placed])
    if len(placed) > 1 and (distances <= 1e-3).any():
        raise InputError("two slices of the series share one position (a duplicate or a second acquisition)")
    slice_spacing = float(np.median(distances)) if len(placed) > 1 else float(getattr(first, "SliceThickness", 1.0))
    voxels = np.empty((len(placed), *shape), dtype=np.int16)
    for z, (_, _, dataset, pixels) in enumerate(placed):
        _hounsfield_into(voxels[z], dataset, pixels)
    rows, columns = (
        _body_box(voxels, pixel_spacing)
        if str(getattr(first, "Modality", "")).upper() == "CT"
        else (slice(0, shape[0]), slice(0, shape[1]))
    )
    # The origin moves with the crop, so every voxel keeps its patient position.
    origin = (
        placed[0][1]
        + columns.start * pixel_spacing[1] * orientation[:3]
        + rows.start * pixel_spacing[0] * orientation[3:]
    )
    cropped = voxels[:, rows, columns]
    npz = _npz(cropped, (slice_spacing, pixel_spacing[0], pixel_spacing[1]), orientation, origin)
    return InputVolume(
        npz=npz,
        shape=tuple(cropped.shape),
        sop_instance_uids=[str(dataset.SOPInstanceUID) for _, _, dataset, _ in placed],
        offset=(0, rows.start, columns.start),
    )


def _body_box(voxels: np.ndarray, pixel_spacing: list[float]) -> tuple[slice, slice]:
    """Rows and columns around every voxel that is not air in any slice, with a margin; all of them when none is.

    The air around the body is a third to a half of a CT's voxels: cut away, it is neither sent nor read.
    """
    projection = voxels.max(axis=0) > NOT_AIR_HU
    present = [np.flatnonzero(projection.any(axis=1)), np.flatnonzero(projection.any(axis=0))]
    if present[0].size == 0:
        return slice(0, voxels.shape[1]), slice(0, voxels.shape[2])
    box = []
    for indices, spacing, size in zip(present, pixel_spacing, voxels.shape[1:], strict=True):
        margin = math.ceil(CROP_MARGIN_MM / spacing)
        box.append(slice(max(0, int(indices[0]) - margin), min(size, int(indices[-1]) + 1 + margin)))
    return box[0], box[1]
