"""Synthetic, PHI-free DICOM (CT and MR series, chest CR and DX) for demo data, tests and benchmarks; pydicom, numpy.

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
* ``organs=True`` (off by default) also paints, inside the body and before the fat band, ribs and
  vertebra (which stay exactly as above), ellipsoidal organs: liver 60 HU, spleen 50 HU, kidneys
  30 HU, aorta 45 HU, gallbladder and spinal canal 5 HU. None of them covers the centre axis
  ``x = y = 0``, so the centre-pixel promise holds with organs too.
* Noise is gaussian with standard deviation ``noise_hu``, drawn from ``numpy.random.default_rng(seed)``:
  same arguments and seed give the same pixels. UIDs are always fresh, never seeded, so
  two generated studies never collide in an archive.

:func:`mr_series` has the same geometry and the same anatomy (organs always on), as T1-weighted
unsigned 12-bit stored values without rescale. With ``noise_value=0`` they are exact per tissue
(:data:`MR_T1_VALUES`: fat brightest, fluid dark, air 0) plus each :class:`BrightFocus`'s
``delta_value`` inside its sphere; noise is Rician (the magnitude of the value plus complex
gaussian noise), seeded the same way.

:func:`iter_ct_series` and :func:`iter_mr_series` yield the same datasets one slice at a time, so a
500-slice series never sits in memory; :func:`random_lesions` and :func:`random_nodule` place
findings where the anatomy makes them measurable.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import NamedTuple

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

AIR_HU = -1000
SOFT_TISSUE_HU = 40
FAT_HU = -100
BONE_HU = 700
LIVER_HU = 60
SPLEEN_HU = 50
KIDNEY_HU = 30
BLOOD_HU = 45
FLUID_HU = 5
CT_RESCALE_INTERCEPT = -1024
CR_BITS_STORED = 12
MR_BITS_STORED = 12
PRIORITIES = ("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW")
MANUFACTURER = "ReadRoom Synthetic"
GYROMAGNETIC_RATIO_MHZ_PER_T = 42.577478

# Tissue labels of the shared body phantom; each modality maps them to its own values.
_AIR, _SOFT_TISSUE, _FAT, _RIB, _VERTEBRA, _LIVER, _SPLEEN, _KIDNEY, _AORTA, _FLUID = range(10)

_CT_HU = np.array(
    [AIR_HU, SOFT_TISSUE_HU, FAT_HU, BONE_HU, BONE_HU, LIVER_HU, SPLEEN_HU, KIDNEY_HU, BLOOD_HU, FLUID_HU],
    dtype=np.float64,
)

MR_T1_VALUES: dict[str, int] = {
    "air": 0,
    "soft_tissue": 700,
    "fat": 2400,
    "rib": 400,
    "vertebra": 1500,  # fatty marrow is bright on T1
    "liver": 1000,
    "spleen": 750,
    "kidney": 850,
    "aorta": 60,  # flow void
    "fluid": 250,
}
_MR_T1 = np.array(list(MR_T1_VALUES.values()), dtype=np.float64)

# Findings are placed only where the surrounding tissue is solid parenchyma, so that "the sphere is
# delta brighter than soft tissue" stays measurable (fat, bone, fluid or a vessel would hide it).
_LESION_TISSUES = (_SOFT_TISSUE, _LIVER, _SPLEEN)

# Placement draws from its own stream, so that a seed's lesions and the same seed's pixel noise are independent.
_PLACEMENT_STREAM = 0x1E5

# (label, centre, semi-axes) as fractions of the body's semi-axes: x of the left-right one, y and z of
# the antero-posterior one. +x is the patient's left, +y posterior, +z head (LPS). An infinite z
# semi-axis makes a vessel running the whole length of the series.
_ORGANS: tuple[tuple[int, tuple[float, float, float], tuple[float, float, float]], ...] = (
    (_LIVER, (-0.42, -0.05, 0.35), (0.33, 0.45, 0.90)),
    (_SPLEEN, (0.55, 0.30, 0.45), (0.16, 0.22, 0.45)),
    (_KIDNEY, (-0.38, 0.45, -0.10), (0.13, 0.20, 0.55)),
    (_KIDNEY, (0.38, 0.45, -0.10), (0.13, 0.20, 0.55)),
    (_FLUID, (-0.25, -0.15, 0.10), (0.08, 0.12, 0.25)),  # gallbladder
    (_AORTA, (0.09, 0.40, 0.0), (0.069, 0.09, np.inf)),
    (_FLUID, (0.0, 0.775, 0.0), (0.031, 0.04, np.inf)),  # spinal canal, behind the vertebral body
)


class Lesion(NamedTuple):
    """A sphere in patient coordinates whose voxels are ``delta_hu`` brighter than their surroundings."""

    center_mm: tuple[float, float, float]
    diameter_mm: float
    delta_hu: float


class BrightFocus(NamedTuple):
    """An MR lesion: a sphere in patient coordinates whose voxels are ``delta_value`` brighter (stored values)."""

    center_mm: tuple[float, float, float]
    diameter_mm: float
    delta_value: float


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


def _body_semi_axes(*, rows: int, columns: int, pixel_spacing: tuple[float, float]) -> tuple[float, float]:
    """The body ellipse's left-right and antero-posterior semi-axes (mm): a fixed share of the field of view."""
    row_spacing, column_spacing = pixel_spacing
    return 0.42 * columns * column_spacing, 0.32 * rows * row_spacing


def _shell_labels(x: np.ndarray, y: np.ndarray, *, semi_axes: tuple[float, float]) -> np.ndarray:
    """Air, body soft tissue, fat band, rib ring and vertebra at each point (mm, LPS): what every slice shares."""
    semi_axis_x, semi_axis_y = semi_axes
    radius = np.sqrt((x / semi_axis_x) ** 2 + (y / semi_axis_y) ** 2)
    labels = np.full(radius.shape, _AIR, dtype=np.uint8)
    labels[radius <= 1.0] = _SOFT_TISSUE
    labels[(radius > 0.90) & (radius <= 0.96)] = _FAT
    labels[(radius >= 0.82) & (radius <= 0.88)] = _RIB
    # +y is posterior in LPS: the vertebral body sits behind the abdomen's centre.
    vertebra_radius = 0.12 * semi_axis_y
    vertebra = np.broadcast_to((x**2 + (y - 0.62 * semi_axis_y) ** 2) <= vertebra_radius**2, labels.shape)
    labels[vertebra] = _VERTEBRA
    return labels


def _paint_organs(
    labels: np.ndarray,
    *,
    paintable: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: float | np.ndarray,
    semi_axes: tuple[float, float],
) -> None:
    """Paint the organs into ``labels`` where ``paintable`` (the shell's soft tissue), later organs over earlier ones.

    Either ``x`` is a row vector, ``y`` a column vector and ``z`` one slice's position, or all three
    are arrays of points of the shape of ``labels``.
    """
    semi_axis_x, semi_axis_y = semi_axes
    one_slice = np.ndim(z) == 0 and x.ndim == 2 and x.shape[0] == 1 and y.ndim == 2 and y.shape[1] == 1
    for label, (centre_x, centre_y, centre_z), (axis_x, axis_y, axis_z) in _ORGANS:
        centre_x, axis_x = centre_x * semi_axis_x, axis_x * semi_axis_x
        centre_y, centre_z, axis_y, axis_z = (value * semi_axis_y for value in (centre_y, centre_z, axis_y, axis_z))
        region: tuple[slice, slice] | tuple[()] = ()
        if one_slice:
            if abs(z - centre_z) > axis_z:
                continue
            # Only the organ's bounding box is computed: most of a slice lies outside any one organ.
            region = (
                slice(
                    np.searchsorted(y[:, 0], centre_y - axis_y), np.searchsorted(y[:, 0], centre_y + axis_y, "right")
                ),
                slice(np.searchsorted(x[0], centre_x - axis_x), np.searchsorted(x[0], centre_x + axis_x, "right")),
            )
        xs = x[:, region[1]] if region else x
        ys = y[region[0]] if region else y
        inside = (
            ((xs - centre_x) / axis_x) ** 2 + ((ys - centre_y) / axis_y) ** 2 + ((z - centre_z) / axis_z) ** 2
        ) <= 1.0
        labels[region][inside & paintable[region]] = label


def _tissue_labels(
    x: np.ndarray, y: np.ndarray, z: float | np.ndarray, *, semi_axes: tuple[float, float], organs: bool
) -> np.ndarray:
    """The tissue label at each point (mm, LPS): a slice (``x`` row, ``y`` column, ``z`` scalar) or point arrays."""
    labels = _shell_labels(x, y, semi_axes=semi_axes)
    if organs:
        _paint_organs(labels, paintable=labels == _SOFT_TISSUE, x=x, y=y, z=z, semi_axes=semi_axes)
    return labels


def _pixel_axes(*, rows: int, columns: int, pixel_spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The x coordinates of the columns as a row vector and the y coordinates of the rows as a column vector (mm)."""
    row_spacing, column_spacing = pixel_spacing
    x = (np.arange(columns) - columns // 2) * column_spacing
    y = (np.arange(rows) - rows // 2) * row_spacing
    return x[np.newaxis, :], y[:, np.newaxis]


def _add_spheres(
    image: np.ndarray,
    *,
    x: np.ndarray,
    y: np.ndarray,
    z: float,
    spheres: Sequence[tuple[tuple[float, float, float], float, float]],
) -> None:
    """Add each sphere's delta to the pixels of this slice whose centres lie inside it."""
    for (center_x, center_y, center_z), diameter_mm, delta in spheres:
        radius = diameter_mm / 2
        if abs(z - center_z) > radius:
            continue
        # Only the sphere's bounding box is computed: a 500-slice series would otherwise redo the whole slice.
        columns = slice(
            np.searchsorted(x[0], center_x - radius, side="left"),
            np.searchsorted(x[0], center_x + radius, side="right"),
        )
        rows = slice(
            np.searchsorted(y[:, 0], center_y - radius, side="left"),
            np.searchsorted(y[:, 0], center_y + radius, side="right"),
        )
        inside = ((x[:, columns] - center_x) ** 2 + (y[rows] - center_y) ** 2 + (z - center_z) ** 2) <= radius**2
        image[rows, columns][inside] += delta


def _axial_series(
    *,
    sop_class_uid: str,
    modality: str,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    accession_number: str,
    study_description: str,
    study_date: str,
    study_time: str,
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    series_number: int,
    series_description: str,
    slices: int,
    rows: int,
    columns: int,
    slice_thickness: float,
    pixel_spacing: tuple[float, float],
    body_part: str,
    referring_physician: str,
    priority: str | None,
    slice_pixels: Callable[[float], np.ndarray],
    modality_tags: Callable[[Dataset], None],
) -> Iterator[Dataset]:
    """Datasets of an axial series, one per slice, generated lazily; ``slice_pixels(z)`` gives the stored pixels."""
    _check_priority(priority)
    if slices < 1 or rows < 8 or columns < 8:
        raise ValueError(f"a {modality} series needs at least 1 slice of 8 x 8 pixels")
    study_instance_uid = study_instance_uid or generate_uid()
    series_instance_uid = series_instance_uid or generate_uid()
    frame_of_reference_uid = generate_uid()
    row_spacing, column_spacing = pixel_spacing
    origin_x = -(columns // 2) * column_spacing
    origin_y = -(rows // 2) * row_spacing
    content_time = datetime.now().strftime("%H%M%S")

    def generate() -> Iterator[Dataset]:
        for slice_index in range(slices):
            z = (slice_index - slices // 2) * slice_thickness
            stored = slice_pixels(z)
            ds = _new_dataset(sop_class_uid=sop_class_uid, sop_instance_uid=generate_uid())
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
                modality=modality,
                series_instance_uid=series_instance_uid,
                series_number=series_number,
                series_description=series_description,
                body_part=body_part,
                study_date=study_date,
                study_time=study_time,
            )
            ds.FrameOfReferenceUID = frame_of_reference_uid
            ds.PositionReferenceIndicator = ""
            ds.PatientPosition = "HFS"
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = slice_index + 1
            ds.ContentDate = study_date
            ds.ContentTime = content_time
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
            modality_tags(ds)
            ds.PixelData = stored.tobytes()
            yield ds

    return generate()


def iter_ct_series(
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
    organs: bool = False,
    lesions: Sequence[Lesion | tuple[tuple[float, float, float], float, float]] = (),
) -> Iterator[Dataset]:
    """Like :func:`ct_series`, but yields one slice at a time; arguments are checked before the first slice."""
    rng = np.random.default_rng(seed)
    x, y = _pixel_axes(rows=rows, columns=columns, pixel_spacing=pixel_spacing)
    semi_axes = _body_semi_axes(rows=rows, columns=columns, pixel_spacing=pixel_spacing)
    # The shell is the same on every slice: label it once, and only the organs per slice.
    shell = _shell_labels(x, y, semi_axes=semi_axes)
    paintable = shell == _SOFT_TISSUE
    parsed_lesions = [Lesion(*lesion) for lesion in lesions]

    def slice_pixels(z: float) -> np.ndarray:
        labels = shell
        if organs:
            labels = shell.copy()
            _paint_organs(labels, paintable=paintable, x=x, y=y, z=z, semi_axes=semi_axes)
        hounsfield = _CT_HU[labels]
        _add_spheres(hounsfield, x=x, y=y, z=z, spheres=parsed_lesions)
        if noise_hu > 0:
            hounsfield += rng.normal(0.0, noise_hu, size=hounsfield.shape)
        # The scanner range: anything outside would not survive the int16 rescale honestly.
        hounsfield = np.clip(np.rint(hounsfield), -1024, 3071)
        return (hounsfield - CT_RESCALE_INTERCEPT).astype(np.int16)

    def ct_tags(ds: Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = str(CT_RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"

    return _axial_series(
        sop_class_uid=CTImageStorage,
        modality="CT",
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession_number=accession_number,
        study_description=study_description,
        study_date=study_date,
        study_time=study_time,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        series_description=series_description or f"{study_description} {_ds_number(slice_thickness)}mm",
        slices=slices,
        rows=rows,
        columns=columns,
        slice_thickness=slice_thickness,
        pixel_spacing=pixel_spacing,
        body_part=body_part,
        referring_physician=referring_physician,
        priority=priority,
        slice_pixels=slice_pixels,
        modality_tags=ct_tags,
    )


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
    organs: bool = False,
    lesions: Sequence[Lesion | tuple[tuple[float, float, float], float, float]] = (),
) -> list[Dataset]:
    """An axial CT series (CT Image Storage), one dataset per slice; see the module docstring for the pixel contract.

    ``pixel_spacing`` is (row spacing, column spacing) in mm, as DICOM orders PixelSpacing.
    ``priority`` fills RequestedProcedurePriority (STAT, HIGH, ROUTINE, MEDIUM, LOW).
    ``organs`` adds liver, spleen, kidneys, aorta, gallbladder and spinal canal to the phantom.
    For long series use :func:`iter_ct_series`, which holds one slice at a time.
    """
    return list(
        iter_ct_series(
            patient_id=patient_id,
            patient_name=patient_name,
            birth_date=birth_date,
            sex=sex,
            accession_number=accession_number,
            study_description=study_description,
            study_date=study_date,
            study_time=study_time,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            series_description=series_description,
            slices=slices,
            rows=rows,
            columns=columns,
            slice_thickness=slice_thickness,
            pixel_spacing=pixel_spacing,
            body_part=body_part,
            referring_physician=referring_physician,
            priority=priority,
            seed=seed,
            noise_hu=noise_hu,
            organs=organs,
            lesions=lesions,
        )
    )


def iter_mr_series(
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str = "19700101",
    sex: str = "O",
    accession_number: str,
    study_description: str = "MR ABDOMEN",
    study_date: str = "20260101",
    study_time: str = "090000",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    series_description: str | None = None,
    slices: int = 20,
    rows: int = 64,
    columns: int = 64,
    slice_thickness: float = 5.0,
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    body_part: str = "ABDOMEN",
    referring_physician: str = "Referrer^Demo",
    priority: str | None = None,
    seed: int = 0,
    noise_value: float = 15.0,
    magnetic_field_strength: float = 1.5,
    repetition_time_ms: float = 500.0,
    echo_time_ms: float = 12.0,
    lesions: Sequence[BrightFocus | tuple[tuple[float, float, float], float, float]] = (),
) -> Iterator[Dataset]:
    """Like :func:`mr_series`, but yields one slice at a time; arguments are checked before the first slice."""
    rng = np.random.default_rng(seed)
    x, y = _pixel_axes(rows=rows, columns=columns, pixel_spacing=pixel_spacing)
    semi_axes = _body_semi_axes(rows=rows, columns=columns, pixel_spacing=pixel_spacing)
    shell = _shell_labels(x, y, semi_axes=semi_axes)
    paintable = shell == _SOFT_TISSUE
    parsed_lesions = [BrightFocus(*lesion) for lesion in lesions]
    maximum = 2**MR_BITS_STORED - 1

    def slice_pixels(z: float) -> np.ndarray:
        labels = shell.copy()
        _paint_organs(labels, paintable=paintable, x=x, y=y, z=z, semi_axes=semi_axes)
        signal = _MR_T1[labels]
        _add_spheres(signal, x=x, y=y, z=z, spheres=parsed_lesions)
        if noise_value > 0:
            # A magnitude image: noise on the real and imaginary channels makes air Rician, never negative.
            real = signal + rng.normal(0.0, noise_value, size=signal.shape)
            imaginary = rng.normal(0.0, noise_value, size=signal.shape)
            signal = np.hypot(real, imaginary)
        return np.clip(np.rint(signal), 0, maximum).astype(np.uint16)

    def mr_tags(ds: Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "se2d1"
        ds.AngioFlag = "N"
        ds.RepetitionTime = _ds_number(repetition_time_ms)
        ds.EchoTime = _ds_number(echo_time_ms)
        ds.EchoTrainLength = 1
        ds.EchoNumbers = "1"
        ds.NumberOfAverages = "1"
        ds.FlipAngle = "90"
        ds.MagneticFieldStrength = _ds_number(magnetic_field_strength)
        ds.ImagingFrequency = _ds_number(GYROMAGNETIC_RATIO_MHZ_PER_T * magnetic_field_strength)
        ds.ImagedNucleus = "1H"
        ds.ReceiveCoilName = "BODY"
        ds.BitsStored = MR_BITS_STORED
        ds.HighBit = MR_BITS_STORED - 1
        ds.PixelRepresentation = 0
        ds.WindowCenter = "1200"
        ds.WindowWidth = "2400"

    return _axial_series(
        sop_class_uid=MRImageStorage,
        modality="MR",
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession_number=accession_number,
        study_description=study_description,
        study_date=study_date,
        study_time=study_time,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        series_description=series_description or f"AX T1 SE {_ds_number(slice_thickness)}mm",
        slices=slices,
        rows=rows,
        columns=columns,
        slice_thickness=slice_thickness,
        pixel_spacing=pixel_spacing,
        body_part=body_part,
        referring_physician=referring_physician,
        priority=priority,
        slice_pixels=slice_pixels,
        modality_tags=mr_tags,
    )


def mr_series(
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str = "19700101",
    sex: str = "O",
    accession_number: str,
    study_description: str = "MR ABDOMEN",
    study_date: str = "20260101",
    study_time: str = "090000",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    series_description: str | None = None,
    slices: int = 20,
    rows: int = 64,
    columns: int = 64,
    slice_thickness: float = 5.0,
    pixel_spacing: tuple[float, float] = (0.7, 0.7),
    body_part: str = "ABDOMEN",
    referring_physician: str = "Referrer^Demo",
    priority: str | None = None,
    seed: int = 0,
    noise_value: float = 15.0,
    magnetic_field_strength: float = 1.5,
    repetition_time_ms: float = 500.0,
    echo_time_ms: float = 12.0,
    lesions: Sequence[BrightFocus | tuple[tuple[float, float, float], float, float]] = (),
) -> list[Dataset]:
    """An axial T1-weighted spin-echo MR series (MR Image Storage), one dataset per slice.

    Geometry follows :func:`ct_series` (slice ``slices // 2`` through the origin, positions
    ``slice_thickness`` apart); pixels are uint16 MONOCHROME2 with 12 bits stored and no rescale,
    exact per tissue as :data:`MR_T1_VALUES` when ``noise_value`` is 0: fat bright, fluid dark, the
    aorta a flow void. Each :class:`BrightFocus` raises the voxels inside its sphere by ``delta_value``.
    ``magnetic_field_strength`` (T) also sets ImagingFrequency; ``repetition_time_ms`` and
    ``echo_time_ms`` fill RepetitionTime and EchoTime. For long series use :func:`iter_mr_series`.
    """
    return list(
        iter_mr_series(
            patient_id=patient_id,
            patient_name=patient_name,
            birth_date=birth_date,
            sex=sex,
            accession_number=accession_number,
            study_description=study_description,
            study_date=study_date,
            study_time=study_time,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            series_description=series_description,
            slices=slices,
            rows=rows,
            columns=columns,
            slice_thickness=slice_thickness,
            pixel_spacing=pixel_spacing,
            body_part=body_part,
            referring_physician=referring_physician,
            priority=priority,
            seed=seed,
            noise_value=noise_value,
            magnetic_field_strength=magnetic_field_strength,
            repetition_time_ms=repetition_time_ms,
            echo_time_ms=echo_time_ms,
            lesions=lesions,
        )
    )


def _fibonacci_sphere(count: int) -> np.ndarray:
    """``count`` nearly evenly spread unit vectors, as a (count, 3) array."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * index / count)
    azimuth = np.pi * (1 + 5**0.5) * index
    return np.stack(
        [np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)],
        axis=1,
    )


# Points that stand for a whole sphere when checking what tissue it lies in: its centre, a middle
# shell and a dense surface. The smallest structure a sphere must not touch (the aorta, about 20 mm
# across at the default field of view) is far wider than the gaps between surface points.
_SPHERE_PROBES = np.concatenate([np.zeros((1, 3)), 0.5 * _fibonacci_sphere(48), _fibonacci_sphere(256)])


def _covers_a_voxel(
    center: tuple[float, float, float],
    radius: float,
    *,
    slices: int,
    slice_thickness: float,
    pixel_spacing: tuple[float, float],
) -> bool:
    """Whether a sphere reaches at least one voxel centre, so that a lesion reported is a lesion drawn.

    The slice nearest its centre cuts it in a disc; a disc whose radius is at least half a pixel's diagonal holds
    a pixel centre wherever it lies on the grid.
    """
    nearest = min(max(round(center[2] / slice_thickness), -(slices // 2)), slices - 1 - slices // 2)
    depth = abs(nearest * slice_thickness - center[2])
    if depth >= radius:
        return False
    return (radius**2 - depth**2) ** 0.5 >= float(np.hypot(*pixel_spacing)) / 2


def random_lesions(
    *,
    count: int,
    slices: int,
    rows: int,
    columns: int,
    slice_thickness: float,
    pixel_spacing: tuple[float, float],
    seed: int,
    diameter_range_mm: tuple[float, float] = (6.0, 30.0),
    delta_range: tuple[float, float] = (40.0, 120.0),
    attempts: int = 5000,
) -> list[Lesion]:
    """``count`` non-overlapping lesions for a series of this geometry with organs, reproducible from ``seed``.

    Each sphere lies wholly in soft tissue, liver or spleen (never in fat, bone, fluid or the aorta),
    its centre between the first and the last slice. Centres and diameters are rounded to 0.1 mm and
    deltas to whole units, so the returned values are exactly the ones to draw. For MR, pass an MR
    ``delta_range`` and wrap each result in :class:`BrightFocus`. Raises ``ValueError`` when they
    do not fit.
    """
    if count < 0:
        raise ValueError("the number of lesions cannot be negative")
    rng = np.random.default_rng([seed, _PLACEMENT_STREAM])
    semi_axes = _body_semi_axes(rows=rows, columns=columns, pixel_spacing=pixel_spacing)
    semi_axis_x, semi_axis_y = semi_axes
    first_z = (0 - slices // 2) * slice_thickness
    last_z = (slices - 1 - slices // 2) * slice_thickness
    placed: list[Lesion] = []
    for _ in range(attempts):
        if len(placed) == count:
            break
        diameter = round(float(rng.uniform(*diameter_range_mm)), 1)
        delta = float(round(rng.uniform(*delta_range)))
        # Uniform over the body ellipse's bounding box; the tissue check rejects what falls outside.
        center = (
            round(float(rng.uniform(-semi_axis_x, semi_axis_x)), 1),
            round(float(rng.uniform(-semi_axis_y, semi_axis_y)), 1),
            round(float(rng.uniform(first_z, last_z)), 1),
        )
        if not _covers_a_voxel(
            center, diameter / 2, slices=slices, slice_thickness=slice_thickness, pixel_spacing=pixel_spacing
        ):
            continue
        probes = np.asarray(center) + _SPHERE_PROBES * (diameter / 2)
        labels = _tissue_labels(probes[:, 0], probes[:, 1], probes[:, 2], semi_axes=semi_axes, organs=True)
        if not np.isin(labels, _LESION_TISSUES).all():
            continue
        # A margin of 1 mm keeps two lesions from touching, so each one's delta stays its own.
        if any(
            np.linalg.norm(np.subtract(center, other.center_mm)) < (diameter + other.diameter_mm) / 2 + 1.0
            for other in placed
        ):
            continue
        placed.append(Lesion(center_mm=center, diameter_mm=diameter, delta_hu=delta))
    if len(placed) < count:
        raise ValueError(
            f"only {len(placed)} of {count} lesions fit in the body without overlapping; ask for fewer lesions"
        )
    return placed


def _normalised_grid(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled to [-1, 1) across the image: u across the columns, v down the rows."""
    v, u = np.mgrid[0:rows, 0:columns]
    return (u - columns / 2) / (columns / 2), (v - rows / 2) / (rows / 2)


def _in_lung(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    def lung(centre_u: float) -> np.ndarray:
        return ((u - centre_u) / 0.3) ** 2 + ((v + 0.05) / 0.62) ** 2 <= 1.0

    return lung(-0.4) | lung(0.4)


def _in_mediastinum(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) < 0.14 + 0.08 * (v + 0.6)) & (v > -0.7) & (v < 0.65)


def _cr_chest(*, rows: int, columns: int) -> np.ndarray:
    """A noiseless PA-chest-like picture in [0, 4095]: bright body and mediastinum, dark lungs, ribs."""
    u, v = _normalised_grid(rows, columns)
    image = np.full((rows, columns), 300.0)
    body = (u / 0.92) ** 2 + (v / 1.1) ** 2 <= 1.0
    image[body] = 2600.0
    lungs = _in_lung(u, v)
    image[lungs] = 900.0
    # Ribs: bright horizontal arcs that only show where they cross the lungs.
    rib_phase = np.sin((v * 9.0 - np.abs(u) * 1.5) * np.pi)
    image[lungs & (rib_phase > 0.82)] = 1700.0
    image[_in_mediastinum(u, v)] = 2900.0
    diaphragm = (v > 0.55) & body
    image[diaphragm] = 2700.0
    return image


def random_nodule(
    *,
    rows: int,
    columns: int,
    pixel_spacing: tuple[float, float],
    seed: int,
    diameter_range_mm: tuple[float, float] = (8.0, 30.0),
    delta_range: tuple[float, float] = (300.0, 600.0),
    attempts: int = 5000,
) -> Nodule:
    """A pulmonary nodule for :func:`cr_image` or :func:`dx_image` of this size, wholly inside a lung field.

    Reproducible from ``seed``; centre and diameter are rounded to 0.1 mm and the delta to whole
    stored values. Raises ``ValueError`` when the image is too small for any nodule in the range.
    """
    rng = np.random.default_rng([seed, _PLACEMENT_STREAM])
    row_spacing, column_spacing = pixel_spacing
    circle = _fibonacci_sphere(64)[:, :2]
    circle /= np.linalg.norm(circle, axis=1, keepdims=True)
    probes = np.concatenate([np.zeros((1, 2)), 0.5 * circle, circle])
    for _ in range(attempts):
        diameter = round(float(rng.uniform(*diameter_range_mm)), 1)
        delta = float(round(rng.uniform(*delta_range)))
        center = (
            round(float(rng.uniform(0, (columns - 1) * column_spacing)), 1),
            round(float(rng.uniform(0, (rows - 1) * row_spacing)), 1),
        )
        points = np.asarray(center) + probes * (diameter / 2)
        u = (points[:, 0] / column_spacing - columns / 2) / (columns / 2)
        v = (points[:, 1] / row_spacing - rows / 2) / (rows / 2)
        # Clear of the mediastinum and the diaphragm, which are painted over the lungs.
        if (_in_lung(u, v) & ~_in_mediastinum(u, v) & (v <= 0.55)).all():
            return Nodule(center_mm=center, diameter_mm=diameter, delta_value=delta)
    raise ValueError("no nodule of the requested size fits in the lung fields of so small an image")


def _chest_radiograph(
    *,
    sop_class_uid: str,
    modality: str,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    accession_number: str,
    study_description: str,
    study_date: str,
    study_time: str,
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    series_number: int,
    series_description: str,
    rows: int,
    columns: int,
    pixel_spacing: tuple[float, float],
    body_part: str,
    view_position: str,
    referring_physician: str,
    priority: str | None,
    seed: int,
    noise_value: float,
    nodule: Nodule | tuple[tuple[float, float], float, float] | None,
) -> Dataset:
    """The tags and pixels CR and DX chest radiographs share; each caller adds its own IOD's tags."""
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

    ds = _new_dataset(sop_class_uid=sop_class_uid, sop_instance_uid=generate_uid())
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
        modality=modality,
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
    return _chest_radiograph(
        sop_class_uid=ComputedRadiographyImageStorage,
        modality="CR",
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession_number=accession_number,
        study_description=study_description,
        study_date=study_date,
        study_time=study_time,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        series_description=series_description,
        rows=rows,
        columns=columns,
        pixel_spacing=pixel_spacing,
        body_part=body_part,
        view_position=view_position,
        referring_physician=referring_physician,
        priority=priority,
        seed=seed,
        noise_value=noise_value,
        nodule=nodule,
    )


def dx_image(
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
    """A PA chest radiograph (Digital X-Ray Image Storage - For Presentation) with the pixels of :func:`cr_image`.

    Adds what the DX IODs require: PresentationIntentType FOR PRESENTATION, an identity Presentation
    LUT, the pixel intensity relationship (LOG, sign -1: brighter means more attenuation), an
    identity rescale, detector type, image laterality and the anatomic region (chest).
    """
    ds = _chest_radiograph(
        sop_class_uid=DigitalXRayImageStorageForPresentation,
        modality="DX",
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession_number=accession_number,
        study_description=study_description,
        study_date=study_date,
        study_time=study_time,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        series_description=series_description,
        rows=rows,
        columns=columns,
        pixel_spacing=pixel_spacing,
        body_part=body_part,
        view_position=view_position,
        referring_physician=referring_physician,
        priority=priority,
        seed=seed,
        noise_value=noise_value,
        nodule=nodule,
    )
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "SCINTILLATOR"
    ds.ImageLaterality = "U"
    ds.KVP = "120"
    ds.AcquisitionContextSequence = DicomSequence()
    region = Dataset()
    region.CodeValue = "43799004"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Chest"
    ds.AnatomicRegionSequence = DicomSequence([region])
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file (preamble, DICM prefix, file meta) in memory."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()
