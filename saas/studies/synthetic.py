"""Synthetic, PHI-free DICOM studies (CT series, chest CR) for the demo seed and the test suite; pydicom and numpy only.

Pixel contract of :func:`ct_series` (tests may rely on it):

* Patient coordinates (LPS, mm): pixel ``(rows // 2, columns // 2)`` of slice ``slices // 2``
  lies exactly at ``(0, 0, 0)``; slice ``k`` lies at ``z = (k - slices // 2) * slice_thickness``,
  so ``ImagePositionPatient[2]`` and ``SliceLocation`` increase with ``InstanceNumber = k + 1``.
* Stored value = HU + 1024 (``RescaleSlope`` 1, ``RescaleIntercept`` -1024, signed int16).
* With ``noise_hu=0`` the image is exact: air -1000 HU, body ellipse 40 HU
  (:data:`SOFT_TISSUE_HU`) with a subcutaneous fat band -100 HU, rib ring and vertebra
  700 HU (none of them near the centre), and every voxel whose centre lies
  inside a lesion sphere (distance <= diameter / 2) is raised by that lesion's ``delta_hu``.
  Hence the centre pixel of every slice is exactly 40 HU unless a lesion covers it.
* Noise is gaussian with standard deviation ``noise_hu``, drawn from ``numpy.random.default_rng(seed)``:
  same arguments and seed give the same pixels. UIDs are always fresh, never seeded, so
  two generated studies never collide in an archive.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

AIR_HU = -1000
SOFT_TISSUE_HU = 40
FAT_HU = -100
BONE_HU = 700
CT_RESCALE_INTERCEPT = -1024
CR_BITS_STORED = 12
PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")
MANUFACTURER = "ReadRoom Synthetic"


class Lesion(NamedTuple):
    """A sphere in patient coordinates whose voxels are ``delta_hu`` brighter than their surroundings."""

    center_mm: tuple[float, float, float]
    diameter_mm: float
    delta_hu: float


class Nodule(NamedTuple):
    """A disc on a projection image; ``center_mm`` is (x right, y down) from the top-left pixel centre."""

    center_mm: tuple[float, float]
    diameter_mm: float
    delta_value: float


def _ds_number(value: float) -> str:
    # DS values are at most 16 characters; millimetre positions need no more than 4 decimals.
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _check_priority(priority: str | None) -> None:
    if priority is not None and priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {', '.join(PRIORITIES)}")


def _new_dataset(*, sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class_uid
    file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = "READROOM_SYNTH"
    ds = Dataset()
    ds.file_meta = file_meta
    ds.preamble = b"\0" * 128
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    return ds


def _set_patient_and_study(
    ds: Dataset,
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    accession_number: str,
    study_description: str,
    study_date: str,
    study_time: str,
    study_instance_uid: str,
    referring_physician: str,
    priority: str | None,
) -> None:
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_instance_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.StudyID = accession_number[:16]
    ds.AccessionNumber = accession_number
    ds.StudyDescription = study_description
    ds.ReferringPhysicianName = referring_physician
    if priority is not None:
        ds.RequestedProcedurePriority = priority
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "ReadRoom Demo Clinic"


def _set_series(
    ds: Dataset,
    *,
    modality: str,
    series_instance_uid: str,
    series_number: int,
    series_description: str,
    body_part: str,
    study_date: str,
    study_time: str,
) -> None:
    ds.Modality = modality
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = study_date
    ds.SeriesTime = study_time
    ds.BodyPartExamined = body_part


def _ct_phantom(
    *, rows: int, columns: int, pixel_spacing: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axial slice of a body-like phantom in HU, with the x and y coordinate grids (mm) of its pixels."""
    row_spacing, column_spacing = pixel_spacing
    x = (np.arange(columns) - columns // 2) * column_spacing
    y = (np.arange(rows) - rows // 2) * row_spacing
    x_grid, y_grid = np.meshgrid(x, y)
    field_width = columns * column_spacing
    field_height = rows * row_spacing
    semi_axis_x = 0.42 * field_width
    semi_axis_y = 0.32 * field_height
    radius = np.sqrt((x_grid / semi_axis_x) ** 2 + (y_grid / semi_axis_y) ** 2)
    phantom = np.full((rows, columns), AIR_HU, dtype=np.float64)
    phantom[radius <= 1.0] = SOFT_TISSUE_HU
    phantom[(radius > 0.90) & (radius <= 0.96)] = FAT_HU
    phantom[(radius >= 0.82) & (radius <= 0.88)] = BONE_HU
    # +y is posterior in LPS: the vertebral body sits behind the abdomen's centre.
    vertebra_radius = 0.12 * semi_axis_y
    vertebra = (x_grid**2 + (y_grid - 0.62 * semi_axis_y) ** 2) <= vertebra_radius**2
    phantom[vertebra] = BONE_HU
    return phantom, x_grid, y_grid


def ct_series(
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str = "19700101",
    sex: str = "O",
    accession_number: str,
    study_description: str = "CT ABDOMEN",
    study_date: str = "20260101",
    study_time: str = "090000",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    series_description: str | None = None,
    slices: int = 20,
    rows: int = 64,
    columns: int = 64,
    slice_thickness: float = 2.5,
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    body_part: str = "ABDOMEN",
    referring_physician: str = "Referrer^Demo",
    priority: str | None = None,
    seed: int = 0,
    noise_hu: float = 10.0,
    lesions: Sequence[Lesion | tuple[tuple[float, float, float], float, float]] = (),
) -> list[Dataset]:
    """An axial CT series (CT Image Storage), one dataset per slice; see the module docstring for the pixel contract.

    ``pixel_spacing`` is (row spacing, column spacing) in mm, as DICOM orders PixelSpacing.
    ``priority`` fills RequestedProcedurePriority (STAT, HIGH, ROUTINE, MEDIUM, LOW).
    """
    _check_priority(priority)
    if slices < 1 or rows < 8 or columns < 8:
        raise ValueError("a CT series needs at least 1 slice of 8 x 8 pixels")
    study_instance_uid = study_instance_uid or generate_uid()
    series_instance_uid = series_instance_uid or generate_uid()
    frame_of_reference_uid = generate_uid()
    rng = np.random.default_rng(seed)
    phantom, x_grid, y_grid = _ct_phantom(rows=rows, columns=columns, pixel_spacing=pixel_spacing)
    parsed_lesions = [Lesion(*lesion) for lesion in lesions]
    row_spacing, column_spacing = pixel_spacing
    origin_x = -(columns // 2) * column_spacing
    origin_y = -(rows // 2) * row_spacing
    content_time = datetime.now().strftime("%H%M%S")

    datasets: list[Dataset] = []
    for slice_index in range(slices):
        z = (slice_index - slices // 2) * slice_thickness
        hounsfield = phantom.copy()
        for lesion in parsed_lesions:
            center_x, center_y, center_z = lesion.center_mm
            inside = ((x_grid - center_x) ** 2 + (y_grid - center_y) ** 2 + (z - center_z) ** 2) <= (
                lesion.diameter_mm / 2
            ) ** 2
            hounsfield[inside] += lesion.delta_hu
        if noise_hu > 0:
            hounsfield += rng.normal(0.0, noise_hu, size=hounsfield.shape)
        # The scanner range: anything outside would not survive the int16 rescale honestly.
        hounsfield = np.clip(np.rint(hounsfield), -1024, 3071)
        stored = (hounsfield - CT_RESCALE_INTERCEPT).astype(np.int16)

        ds = _new_dataset(sop_class_uid=CTImageStorage, sop_instance_uid=generate_uid())
        _set_patient_and_study(
            ds,
            patient_id=patient_id,
            patient_name=patient_name,
            birth_date=birth_date,
            sex=sex,
            accession_number=accession_number,
            study_description=study_description,
            study_date=study_date,
            study_time=study_time,
            study_instance_uid=study_instance_uid,
            referring_physician=referring_physician,
            priority=priority,
        )
        _set_series(
            ds,
            modality="CT",
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            series_description=series_description or f"{study_description} {_ds_number(slice_thickness)}mm",
            body_part=body_part,
            study_date=study_date,
            study_time=study_time,
        )
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = slice_index + 1
        ds.ContentDate = study_date
        ds.ContentTime = content_time
        ds.KVP = "120"
        ds.SliceThickness = _ds_number(slice_thickness)
        ds.SpacingBetweenSlices = _ds_number(slice_thickness)
        ds.ImagePositionPatient = [_ds_number(origin_x), _ds_number(origin_y), _ds_number(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds_number(z)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.PixelSpacing = [_ds_number(row_spacing), _ds_number(column_spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = str(CT_RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = stored.tobytes()
        datasets.append(ds)
    return datasets


def _cr_chest(*, rows: int, columns: int) -> np.ndarray:
    """A noiseless PA-chest-like picture in [0, 4095]: bright body and mediastinum, dark lungs, ribs."""
    v, u = np.mgrid[0:rows, 0:columns]
    u = (u - columns / 2) / (columns / 2)
    v = (v - rows / 2) / (rows / 2)
    image = np.full((rows, columns), 300.0)
    body = (u / 0.92) ** 2 + (v / 1.1) ** 2 <= 1.0
    image[body] = 2600.0

    def lung(centre_u: float) -> np.ndarray:
        return ((u - centre_u) / 0.3) ** 2 + ((v + 0.05) / 0.62) ** 2 <= 1.0

    lungs = lung(-0.4) | lung(0.4)
    image[lungs] = 900.0
    # Ribs: bright horizontal arcs that only show where they cross the lungs.
    rib_phase = np.sin((v * 9.0 - np.abs(u) * 1.5) * np.pi)
    image[lungs & (rib_phase > 0.82)] = 1700.0
    mediastinum = (np.abs(u) < 0.14 + 0.08 * (v + 0.6)) & (v > -0.7) & (v < 0.65)
    image[mediastinum] = 2900.0
    diaphragm = (v > 0.55) & body
    image[diaphragm] = 2700.0
    return image


def cr_image(
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str = "19700101",
    sex: str = "O",
    accession_number: str,
    study_description: str = "XR CHEST PA",
    study_date: str = "20260101",
    study_time: str = "090000",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "CHEST PA",
    rows: int = 256,
    columns: int = 256,
    pixel_spacing: tuple[float, float] = (1.6, 1.6),
    body_part: str = "CHEST",
    view_position: str = "PA",
    referring_physician: str = "Referrer^Demo",
    priority: str | None = None,
    seed: int = 0,
    noise_value: float = 20.0,
    nodule: Nodule | tuple[tuple[float, float], float, float] | None = None,
) -> Dataset:
    """A PA chest radiograph (Computed Radiography Image Storage), uint16 MONOCHROME2 with 12 bits stored.

    ``nodule`` adds a disc ``delta_value`` brighter at ``center_mm`` (x right, y down from the
    top-left pixel centre). ``noise_value`` is the gaussian noise standard deviation in stored
    values (0 gives an exact image); pixels are seeded like :func:`ct_series`.
    """
    _check_priority(priority)
    if rows < 16 or columns < 16:
        raise ValueError("a radiograph needs at least 16 x 16 pixels")
    image = _cr_chest(rows=rows, columns=columns)
    row_spacing, column_spacing = pixel_spacing
    if nodule is not None:
        parsed = Nodule(*nodule)
        y_mm, x_mm = np.mgrid[0:rows, 0:columns]
        inside = (
            (x_mm * column_spacing - parsed.center_mm[0]) ** 2 + (y_mm * row_spacing - parsed.center_mm[1]) ** 2
        ) <= (parsed.diameter_mm / 2) ** 2
        image[inside] += parsed.delta_value
    if noise_value > 0:
        image += np.random.default_rng(seed).normal(0.0, noise_value, size=image.shape)
    stored = np.clip(np.rint(image), 0, 2**CR_BITS_STORED - 1).astype(np.uint16)

    ds = _new_dataset(sop_class_uid=ComputedRadiographyImageStorage, sop_instance_uid=generate_uid())
    _set_patient_and_study(
        ds,
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession_number=accession_number,
        study_description=study_description,
        study_date=study_date,
        study_time=study_time,
        study_instance_uid=study_instance_uid or generate_uid(),
        referring_physician=referring_physician,
        priority=priority,
    )
    _set_series(
        ds,
        modality="CR",
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        series_description=series_description,
        body_part=body_part,
        study_date=study_date,
        study_time=study_time,
    )
    ds.ViewPosition = view_position
    # PA view as displayed: across a row is towards the patient's left, down a column towards the feet.
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.ContentDate = study_date
    ds.ContentTime = datetime.now().strftime("%H%M%S")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.ImagerPixelSpacing = [_ds_number(row_spacing), _ds_number(column_spacing)]
    ds.PixelSpacing = [_ds_number(row_spacing), _ds_number(column_spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = CR_BITS_STORED
    ds.HighBit = CR_BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.PixelData = stored.tobytes()
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file (preamble, DICM prefix, file meta) in memory."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
