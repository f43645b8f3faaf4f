"""Tests for the synthetic DICOM generator (CT, MR, CR, DX): valid Part 10 files, sane geometry, the pixel contract."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
)

from saas.studies.synthetic import (
    BLOOD_HU,
    FLUID_HU,
    KIDNEY_HU,
    LIVER_HU,
    MR_T1_VALUES,
    SOFT_TISSUE_HU,
    SPLEEN_HU,
    BrightFocus,
    Lesion,
    cr_image,
    ct_series,
    dataset_bytes,
    dx_image,
    iter_ct_series,
    mr_series,
    random_lesions,
    random_nodule,
)
from saas.studies.validation import AcceptedInstance, validate_instance


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


def test_ct_organs_keep_the_centre_soft_tissue_and_the_shell_unchanged() -> None:
    # given the same noiseless geometry with and without organs, through the liver and kidneys
    plain = _ct(noise_hu=0, slices=5, rows=128, columns=128, slice_thickness=8.0)
    with_organs = _ct(noise_hu=0, slices=5, rows=128, columns=128, slice_thickness=8.0, organs=True)

    for without, within in zip(plain, with_organs, strict=True):
        hounsfield, reference = _hounsfield(within), _hounsfield(without)
        # then the centre is still exactly soft tissue and air, fat, ribs and vertebra did not move
        assert hounsfield[64, 64] == SOFT_TISSUE_HU
        shell = reference != SOFT_TISSUE_HU
        assert np.array_equal(hounsfield[shell], reference[shell])
        # and organs appear only where the plain phantom has soft tissue, with their documented values
        assert set(np.unique(hounsfield[~shell])) <= {
            SOFT_TISSUE_HU,
            LIVER_HU,
            SPLEEN_HU,
            KIDNEY_HU,
            BLOOD_HU,
            FLUID_HU,
        }
    middle = _hounsfield(with_organs[2])
    assert {LIVER_HU, KIDNEY_HU, BLOOD_HU, FLUID_HU} <= set(np.unique(middle))


def test_iter_ct_series_yields_the_same_slices_lazily_and_checks_arguments_first() -> None:
    # given the same arguments for the list and the generator
    listed = _ct(slices=4, seed=3, organs=True)
    generated = iter_ct_series(
        patient_id="SYN-001",
        patient_name="Synthetic^Patient",
        accession_number="ACC-001",
        slices=4,
        seed=3,
        organs=True,
    )

    # then the generator gives the same pixels slice by slice
    assert all(np.array_equal(a.pixel_array, b.pixel_array) for a, b in zip(listed, generated, strict=True))
    # and a bad argument is refused when it is called, before anything is iterated
    with pytest.raises(ValueError, match="URGENT"):
        iter_ct_series(patient_id="SYN-001", patient_name="Synthetic^Patient", accession_number="A", priority="URGENT")


def _mr(**overrides: object) -> list[pydicom.Dataset]:
    arguments: dict[str, object] = {
        "patient_id": "SYN-010",
        "patient_name": "Synthetic^Magnet",
        "accession_number": "ACC-010",
        "rows": 128,
        "columns": 128,
        "slices": 5,
    }
    arguments.update(overrides)
    return mr_series(**arguments)  # type: ignore[arg-type]


def test_mr_series_round_trips_as_t1_weighted_mr_images() -> None:
    # given an MR series at 3 T
    series = _mr(magnetic_field_strength=3.0, repetition_time_ms=450, echo_time_ms=10, slice_thickness=4.0)

    for ds in series:
        # when each slice is written and read back
        read_back = pydicom.dcmread(io.BytesIO(dataset_bytes(ds)))

        # then it is an MR Image Storage instance with its acquisition tags and unsigned 12-bit pixels
        assert read_back.SOPClassUID == MRImageStorage == read_back.file_meta.MediaStorageSOPClassUID
        assert read_back.Modality == "MR"
        assert float(read_back.MagneticFieldStrength) == 3.0
        assert abs(float(read_back.ImagingFrequency) - 127.73) < 0.01
        assert (float(read_back.RepetitionTime), float(read_back.EchoTime)) == (450.0, 10.0)
        assert read_back.ScanningSequence == "SE" and read_back.ImagedNucleus == "1H"
        assert read_back.PhotometricInterpretation == "MONOCHROME2"
        pixels = read_back.pixel_array
        assert pixels.dtype == np.uint16 and pixels.shape == (128, 128) and pixels.max() <= 4095
    # with the geometry conventions of the CT series
    z_positions = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert np.allclose(np.diff(z_positions), 4.0) and z_positions[5 // 2] == 0.0
    assert len({ds.SeriesInstanceUID for ds in series}) == 1 and len({ds.SOPInstanceUID for ds in series}) == 5


def test_mr_contrast_is_t1_like_and_exact_without_noise() -> None:
    # given a noiseless MR series with a bright focus at the origin
    series = _mr(noise_value=0, lesions=[BrightFocus(center_mm=(0.0, 0.0, 0.0), diameter_mm=10.0, delta_value=500)])
    middle = series[5 // 2].pixel_array.astype(int)

    # then fat is brightest, fluid darker than soft tissue, air black
    assert MR_T1_VALUES["fat"] > MR_T1_VALUES["liver"] > MR_T1_VALUES["soft_tissue"] > MR_T1_VALUES["fluid"] > 0
    assert MR_T1_VALUES["air"] == 0
    # and away from the focus every pixel is one tissue's exact value, fat and fluid included
    first = series[0].pixel_array
    assert set(np.unique(first)) <= set(MR_T1_VALUES.values())
    assert {MR_T1_VALUES["fat"], MR_T1_VALUES["fluid"], MR_T1_VALUES["air"]} <= set(np.unique(first))
    # and the focus adds its delta to the soft tissue at the centre
    assert middle[64, 64] == MR_T1_VALUES["soft_tissue"] + 500
    assert first[64, 64] == MR_T1_VALUES["soft_tissue"]


def test_mr_noise_is_seeded_and_never_negative() -> None:
    # given the same seed twice
    first, again = _mr(seed=4, slices=1), _mr(seed=4, slices=1)

    # then the pixels are identical and the air is Rician noise above zero, not clipped gaussian
    assert np.array_equal(first[0].pixel_array, again[0].pixel_array)
    air = first[0].pixel_array[:8, :8].astype(float)
    assert 5 < air.mean() < 40


def test_random_lesions_are_reproducible_and_lie_wholly_in_solid_tissue() -> None:
    # given a geometry and a seed
    geometry = {"slices": 30, "rows": 160, "columns": 160, "slice_thickness": 4.0, "pixel_spacing": (2.24, 2.24)}

    # when lesions are placed twice with the same seed
    lesions = random_lesions(count=6, seed=11, **geometry)  # type: ignore[arg-type]
    assert lesions == random_lesions(count=6, seed=11, **geometry)  # type: ignore[arg-type]
    assert lesions != random_lesions(count=6, seed=12, **geometry)  # type: ignore[arg-type]

    # then each is in range, within the slab, apart from the others
    for lesion in lesions:
        assert 6 <= lesion.diameter_mm <= 30 and 40 <= lesion.delta_hu <= 120
        assert -15 * 4.0 <= lesion.center_mm[2] <= 14 * 4.0
    for index, lesion in enumerate(lesions):
        for other in lesions[index + 1 :]:
            distance = np.linalg.norm(np.subtract(lesion.center_mm, other.center_mm))
            assert distance >= (lesion.diameter_mm + other.diameter_mm) / 2
    # and every voxel a noiseless series raises sits on soft tissue, liver or spleen
    series = _ct(noise_hu=0, organs=True, lesions=lesions, **geometry)
    plain = _ct(noise_hu=0, organs=True, **geometry)
    raised_on = {
        value
        for with_lesions, without in zip(series, plain, strict=True)
        for value in _hounsfield(without)[_hounsfield(with_lesions) != _hounsfield(without)]
    }
    assert raised_on and raised_on <= {SOFT_TISSUE_HU, LIVER_HU, SPLEEN_HU}


def test_random_lesions_refuse_what_does_not_fit() -> None:
    # when far more large lesions are asked for than one thin slab holds, then nothing is returned
    with pytest.raises(ValueError, match="fit"):
        random_lesions(
            count=300,
            slices=1,
            rows=64,
            columns=64,
            slice_thickness=1.0,
            pixel_spacing=(5.6, 5.6),
            seed=0,
            diameter_range_mm=(29.0, 30.0),
            attempts=2000,
        )


def test_dx_image_is_a_for_presentation_digital_x_ray_with_the_cr_pixels() -> None:
    # given the same arguments for a CR and a DX image
    common = {"patient_id": "SYN-020", "patient_name": "Synthetic^Detector", "accession_number": "ACC-020", "seed": 5}
    dx = dx_image(**common)  # type: ignore[arg-type]
    cr = cr_image(**common)  # type: ignore[arg-type]

    # when the DX is written and read back
    raw = dataset_bytes(dx)
    read_back = pydicom.dcmread(io.BytesIO(raw))

    # then it is a DX For Presentation instance with the same picture, and ingest validation accepts it
    assert read_back.SOPClassUID == DigitalXRayImageStorageForPresentation
    assert read_back.file_meta.MediaStorageSOPClassUID == DigitalXRayImageStorageForPresentation
    assert read_back.Modality == "DX"
    assert read_back.PresentationIntentType == "FOR PRESENTATION"
    assert read_back.PresentationLUTShape == "IDENTITY"
    assert read_back.PixelIntensityRelationship == "LOG"
    assert read_back.ImageLaterality == "U"
    assert read_back.AnatomicRegionSequence[0].CodeMeaning == "Chest"
    assert np.array_equal(read_back.pixel_array, cr.pixel_array)
    assert isinstance(validate_instance("chest.dcm", raw), AcceptedInstance)


def test_random_nodule_lies_in_a_lung_field() -> None:
    # given a reproducible nodule for a 256 x 256 radiograph
    nodule = random_nodule(rows=256, columns=256, pixel_spacing=(1.6, 1.6), seed=9)
    assert nodule == random_nodule(rows=256, columns=256, pixel_spacing=(1.6, 1.6), seed=9)
    common = {"patient_id": "SYN-021", "patient_name": "Synthetic^Nodule", "accession_number": "A21", "noise_value": 0}

    # when it is drawn on a noiseless radiograph
    plain = dx_image(**common).pixel_array.astype(int)  # type: ignore[arg-type]
    with_nodule = dx_image(**common, nodule=nodule).pixel_array.astype(int)  # type: ignore[arg-type]

    # then it adds its delta only over lung (900) or rib (1700), never over mediastinum, body or diaphragm
    changed = with_nodule != plain
    assert changed.any()
    assert set(np.unique(plain[changed])) <= {900, 1700}
    assert set(np.unique(with_nodule[changed] - plain[changed])) == {nodule.delta_value}
