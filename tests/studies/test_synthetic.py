"""Tests for the synthetic DICOM generator: valid Part 10 files, sane geometry, and the documented pixel contract."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage, ExplicitVRLittleEndian

from saas.studies.synthetic import SOFT_TISSUE_HU, Lesion, cr_image, ct_series, dataset_bytes


def _hounsfield(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _ct(**overrides: object) -> list[pydicom.Dataset]:
    arguments: dict[str, object] = {
        "patient_id": "SYN-001",
        "patient_name": "Synthetic^Patient",
        "accession_number": "ACC-001",
    }
    arguments.update(overrides)
    return ct_series(**arguments)  # type: ignore[arg-type]


def test_ct_series_round_trips_as_part10_files() -> None:
    # given a default CT series
    series = _ct(priority="HIGH")

    for ds in series:
        # when each slice is written and read back
        raw = dataset_bytes(ds)
        read_back = pydicom.dcmread(io.BytesIO(raw))

        # then it is a Part 10 file with preamble, explicit VR little endian, and unchanged content
        assert raw[:128] == b"\0" * 128 and raw[128:132] == b"DICM"
        assert read_back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert read_back.SOPClassUID == CTImageStorage == read_back.file_meta.MediaStorageSOPClassUID
        assert read_back.SOPInstanceUID == ds.SOPInstanceUID == read_back.file_meta.MediaStorageSOPInstanceUID
        assert read_back.PatientID == "SYN-001"
        assert read_back.AccessionNumber == "ACC-001"
        assert read_back.RequestedProcedurePriority == "HIGH"
        assert np.array_equal(read_back.pixel_array, ds.pixel_array)
        assert read_back.pixel_array.dtype == np.int16


def test_ct_series_shares_study_and_series_uids_and_has_unique_instances() -> None:
    # given caller-chosen study and series UIDs
    study_instance_uid = pydicom.uid.generate_uid()
    series_instance_uid = pydicom.uid.generate_uid()

    # when a series is generated with them
    series = _ct(study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid, slices=12)

    # then every slice carries them, and every SOP instance UID is distinct and valid
    assert len(series) == 12
    assert {ds.StudyInstanceUID for ds in series} == {study_instance_uid}
    assert {ds.SeriesInstanceUID for ds in series} == {series_instance_uid}
    assert len({ds.SOPInstanceUID for ds in series}) == 12
    assert len({ds.FrameOfReferenceUID for ds in series}) == 1
    assert all(ds.SOPInstanceUID.is_valid for ds in series)


def test_ct_series_positions_follow_instance_numbers_at_slice_thickness() -> None:
    # given a series with 3 mm slices
    series = _ct(slices=9, slice_thickness=3.0)

    # when positions are read in instance-number order
    ordered = sorted(series, key=lambda ds: ds.InstanceNumber)
    z_positions = [float(ds.ImagePositionPatient[2]) for ds in ordered]

    # then they increase by exactly the slice thickness, centred on z = 0, and match SliceLocation
    assert [ds.InstanceNumber for ds in ordered] == list(range(1, 10))
    assert np.allclose(np.diff(z_positions), 3.0)
    assert z_positions[9 // 2] == 0.0
    assert [float(ds.SliceLocation) for ds in ordered] == z_positions
    assert all([float(value) for value in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0] for ds in ordered)


def test_ct_centre_pixel_is_exact_soft_tissue_without_noise() -> None:
    # given a noiseless series without lesions
    series = _ct(noise_hu=0, slices=5, rows=33, columns=48)

    # when the centre pixel of each slice is converted to HU
    centre_values = [_hounsfield(ds)[33 // 2, 48 // 2] for ds in series]

    # then it is exactly the soft-tissue value and the corners are air
    assert centre_values == [SOFT_TISSUE_HU] * 5
    assert all(_hounsfield(ds)[0, 0] == -1000 for ds in series)


def test_ct_lesion_brightens_exactly_the_voxels_inside_its_sphere() -> None:
    # given a 6 mm lesion of +100 HU centred at the patient origin, 2.5 mm slices
    lesion = Lesion(center_mm=(0.0, 0.0, 0.0), diameter_mm=6.0, delta_hu=100)

    # when a noiseless series is generated
    series = _ct(noise_hu=0, slices=9, lesions=[lesion])
    centre = [_hounsfield(ds)[32, 32] for ds in series]

    # then slices within 3 mm of z = 0 show 140 HU at the centre and the others stay at 40 HU
    assert centre == [40, 40, 40, 140, 140, 140, 40, 40, 40]
    middle = _hounsfield(series[4])
    # 0.7 mm pixels: 4 pixels (2.8 mm) from the centre is inside, 5 (3.5 mm) is outside
    assert middle[32, 32 + 4] == 140 and middle[32, 32 + 5] == 40


def test_ct_noise_is_seeded() -> None:
    # given the same arguments twice and once with another seed
    first = _ct(seed=7, slices=3)
    again = _ct(seed=7, slices=3)
    other = _ct(seed=8, slices=3)

    # then the same seed gives identical pixels and another seed different ones, around 40 HU
    assert all(np.array_equal(a.pixel_array, b.pixel_array) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0].pixel_array, other[0].pixel_array)
    patch = _hounsfield(first[1])[28:36, 28:36]
    assert abs(patch.mean() - SOFT_TISSUE_HU) < 10 and 3 < patch.std() < 20


def test_ct_series_rejects_an_unknown_priority() -> None:
    # when a priority outside the DICOM defined terms is asked for, then nothing is generated
    with pytest.raises(ValueError, match="URGENT"):
        _ct(priority="URGENT")


def test_cr_image_is_a_valid_uint16_chest_radiograph() -> None:
    # given a default radiograph
    ds = cr_image(patient_id="SYN-002", patient_name="Synthetic^Chest", accession_number="ACC-002")

    # when it is written and read back
    read_back = pydicom.dcmread(io.BytesIO(dataset_bytes(ds)))

    # then it is a 12-bit MONOCHROME2 CR image of the requested size
    assert read_back.SOPClassUID == ComputedRadiographyImageStorage
    assert read_back.Modality == "CR"
    assert read_back.PhotometricInterpretation == "MONOCHROME2"
    pixels = read_back.pixel_array
    assert pixels.dtype == np.uint16 and pixels.shape == (256, 256)
    assert pixels.max() <= 4095
    # lungs (dark) and mediastinum (bright) are both present
    assert pixels[128, 64] < 1200 < pixels[128, 128]


def test_cr_nodule_adds_its_delta_where_it_lies() -> None:
    # given the same noiseless radiograph with and without a 20 mm, +400 nodule at (100 mm, 150 mm)
    common = {
        "patient_id": "SYN-003",
        "patient_name": "Synthetic^Nodule",
        "accession_number": "ACC-003",
        "noise_value": 0,
    }
    plain = cr_image(**common).pixel_array.astype(int)  # type: ignore[arg-type]
    with_nodule = cr_image(**common, nodule=((100.0, 150.0), 20.0, 400)).pixel_array.astype(int)  # type: ignore[arg-type]

    # then the pixel at the nodule centre (1.6 mm pixels) is 400 brighter, and far away nothing changed
    row, column = round(150 / 1.6), round(100 / 1.6)
    assert with_nodule[row, column] - plain[row, column] == 400
    assert with_nodule[10, 10] == plain[10, 10]
