"""Tests for `make_synthetic_study`: readable Part 10 files, consistent geometry, findings where reported, refusals.

None of these tests asks for the database: pytest-django refuses any query from them, which is how they
show that the command runs without the stack.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.management import CommandError, call_command
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    MRImageStorage,
)

from saas.studies.management.commands.make_synthetic_study import Command
from saas.studies.synthetic import AIR_HU, MR_T1_VALUES, SOFT_TISSUE_HU
from saas.studies.validation import AcceptedInstance, validate_instance


def _make(out: Path, *arguments: str) -> dict:
    stdout = io.StringIO()
    call_command("make_synthetic_study", *arguments, "--out", str(out), stdout=stdout)
    lines = stdout.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def _read_series(report: dict) -> list[pydicom.Dataset]:
    files = sorted((Path(report["out"]) / report["series_instance_uid"]).iterdir())
    assert [file.name for file in files] == [f"{number:04d}.dcm" for number in range(1, report["count"] + 1)]
    return [pydicom.dcmread(file) for file in files]


def _raw(ds: pydicom.Dataset) -> bytes:
    return Path(ds.filename).read_bytes()


def _hounsfield(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_ct_writes_one_readable_file_per_slice_with_consistent_geometry(tmp_path: Path) -> None:
    # when a small CT series is made
    report = _make(
        tmp_path / "ct", "--modality", "CT", "--slices", "7", "--rows", "96", "--columns", "96",
        "--slice-thickness", "3", "--seed", "1",
    )  # fmt: skip

    # then the report describes it
    assert report["modality"] == "CT" and report["count"] == 7 and report["out"] == str(tmp_path / "ct")
    assert report["seed"] == 1 and report["lesions"] == []
    series = _read_series(report)
    spacing = round(358.4 / 96, 4)
    assert report["pixel_spacing_mm"] == [spacing, spacing] and report["slice_thickness_mm"] == 3.0

    # and every file is a CT Part 10 instance of that one study and series, named by its instance number
    for number, ds in enumerate(series, start=1):
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage == ds.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == report["study_instance_uid"]
        assert ds.SeriesInstanceUID == report["series_instance_uid"]
        assert ds.InstanceNumber == number
        assert [float(value) for value in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(value) for value in ds.PixelSpacing] == [spacing, spacing]
        # the centre pixel (48, 48) lies on the patient's z axis
        assert np.allclose([float(value) for value in ds.ImagePositionPatient[:2]], [-48 * spacing] * 2, atol=1e-4)
        assert float(ds.SliceThickness) == 3.0
        assert str(ds.PatientName).startswith("Synthetic^CT") and ds.PatientID.startswith("SYN-CT")
    assert len({ds.SOPInstanceUID for ds in series}) == 7
    assert len({ds.FrameOfReferenceUID for ds in series}) == 1
    z_positions = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert np.allclose(np.diff(z_positions), 3.0) and z_positions[3] == 0.0
    assert [float(ds.SliceLocation) for ds in series] == z_positions


def test_ct_at_full_size_is_int16_hounsfield_with_air_bone_and_soft_tissue(tmp_path: Path) -> None:
    # when a default-size CT with a few slices is made
    report = _make(tmp_path / "ct", "--modality", "CT", "--slices", "2", "--seed", "2")

    for ds in _read_series(report):
        # then each slice is 512 x 512 signed 16-bit, rescaled to HU
        assert (ds.Rows, ds.Columns) == (512, 512)
        assert ds.pixel_array.dtype == np.int16
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1.0, -1024.0, "HU")
        hounsfield = _hounsfield(ds)
        # with air in the corners, soft tissue at the centre and bone somewhere
        assert abs(hounsfield[:32, :32].mean() - AIR_HU) < 5
        assert abs(hounsfield[248:264, 248:264].mean() - SOFT_TISSUE_HU) < 5
        assert hounsfield.min() >= -1024 and 500 < hounsfield.max() <= 3071
        # and the project's own ingest validation accepts it
        assert isinstance(validate_instance("slice.dcm", _raw(ds)), AcceptedInstance)


def _sphere_mean(volume: np.ndarray, series: list[pydicom.Dataset], center_mm: list[float], radius_mm: float) -> float:
    first = series[0]
    row_spacing, column_spacing = (float(value) for value in first.PixelSpacing)
    origin_x, origin_y = (float(value) for value in first.ImagePositionPatient[:2])
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in series])[:, None, None]
    y = (origin_y + np.arange(first.Rows) * row_spacing)[None, :, None]
    x = (origin_x + np.arange(first.Columns) * column_spacing)[None, None, :]
    inside = (x - center_mm[0]) ** 2 + (y - center_mm[1]) ** 2 + (z - center_mm[2]) ** 2 <= radius_mm**2
    assert inside.any()
    return float(volume[inside].mean())


def test_ct_lesions_are_bright_spheres_at_the_reported_centres(tmp_path: Path) -> None:
    # when a CT with three lesions is made
    report = _make(
        tmp_path / "ct", "--modality", "CT", "--slices", "40", "--rows", "256", "--columns", "256",
        "--lesions", "3", "--seed", "7",
    )  # fmt: skip
    series = _read_series(report)
    volume = np.stack([_hounsfield(ds) for ds in series])

    # then the report lists three lesions within the documented ranges, in patient coordinates
    assert report["lesion_coordinates"] == "patient LPS mm"
    assert len(report["lesions"]) == 3
    for lesion in report["lesions"]:
        assert set(lesion) == {"center_mm", "diameter_mm", "delta_hu"}
        assert 6 <= lesion["diameter_mm"] <= 30 and 40 <= lesion["delta_hu"] <= 120
        # and the voxels of each sphere are clearly brighter than soft tissue
        mean = _sphere_mean(volume, series, lesion["center_mm"], lesion["diameter_mm"] / 2)
        assert mean >= SOFT_TISSUE_HU + 30, (lesion, mean)


def test_every_reported_lesion_is_drawn_even_with_thick_slices_and_a_small_matrix(tmp_path: Path) -> None:
    # when ten lesions are asked for in ten 20 mm slices of 128 x 128 (spheres may fall between two slices)
    report = _make(
        tmp_path / "ct", "--modality", "CT", "--slices", "10", "--slice-thickness", "20", "--lesions", "10",
        "--seed", "4", "--rows", "128", "--columns", "128",
    )  # fmt: skip
    series = _read_series(report)
    # then each reported sphere holds at least one voxel centre of the written series
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in series])
    spacing = float(series[0].PixelSpacing[0])
    x0, y0 = float(series[0].ImagePositionPatient[0]), float(series[0].ImagePositionPatient[1])
    xs, ys = x0 + spacing * np.arange(128), y0 + spacing * np.arange(128)
    assert len(report["lesions"]) == 10
    for lesion in report["lesions"]:
        (cx, cy, cz), radius = lesion["center_mm"], lesion["diameter_mm"] / 2
        inside = (
            (xs[None, None, :] - cx) ** 2 + (ys[None, :, None] - cy) ** 2 + (zs[:, None, None] - cz) ** 2
        ) < radius**2
        assert inside.any(), lesion


def test_a_slice_thickness_is_written_drawn_and_reported_as_one_value(tmp_path: Path) -> None:
    report = _make(tmp_path / "ct", "--modality", "CT", "--slices", "3", "--slice-thickness", "0.33333", "--seed", "1")
    series = _read_series(report)
    assert report["slice_thickness_mm"] == 0.3333
    assert {str(ds.SliceThickness) for ds in series} == {"0.3333"}
    assert [float(ds.ImagePositionPatient[2]) for ds in series] == [-0.3333, 0.0, 0.3333]


def test_the_same_seed_gives_the_same_lesions_and_pixels_but_new_uids(tmp_path: Path) -> None:
    # when the same small CT is made twice with one seed
    arguments = ("--modality", "CT", "--slices", "6", "--rows", "64", "--columns", "64", "--lesions", "2")
    first = _make(tmp_path / "a", *arguments, "--seed", "5")
    again = _make(tmp_path / "b", *arguments, "--seed", "5")

    # then lesions, identifiers and pixels repeat, while the UIDs are fresh
    assert first["lesions"] == again["lesions"]
    assert (first["patient_id"], first["accession_number"]) == (again["patient_id"], again["accession_number"])
    assert first["study_instance_uid"] != again["study_instance_uid"]
    for a, b in zip(_read_series(first), _read_series(again), strict=True):
        assert np.array_equal(a.pixel_array, b.pixel_array)


def test_mr_writes_a_valid_t1_series_with_bright_foci(tmp_path: Path) -> None:
    # when an MR series with two foci is made
    report = _make(
        tmp_path / "mr", "--modality", "MR", "--slices", "12", "--rows", "128", "--columns", "128",
        "--lesions", "2", "--seed", "3",
    )  # fmt: skip
    series = _read_series(report)

    # then the files are MR Image Storage with T1 acquisition tags and unsigned pixels
    assert report["count"] == 12 and report["slice_thickness_mm"] == 5.0
    for ds in series:
        assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR"
        assert float(ds.MagneticFieldStrength) > 0 and float(ds.RepetitionTime) > float(ds.EchoTime) > 0
        assert ds.pixel_array.dtype == np.uint16
        assert isinstance(validate_instance("mr.dcm", _raw(ds)), AcceptedInstance)
    assert np.allclose(np.diff([float(ds.ImagePositionPatient[2]) for ds in series]), 5.0)
    volume = np.stack([ds.pixel_array.astype(float) for ds in series])
    assert abs(volume[6, 60:68, 60:68].mean() - MR_T1_VALUES["soft_tissue"]) < 30
    # and each reported focus is brighter than soft tissue by most of its delta
    for focus in report["lesions"]:
        assert set(focus) == {"center_mm", "diameter_mm", "delta_value"}
        mean = _sphere_mean(volume, series, focus["center_mm"], focus["diameter_mm"] / 2)
        assert mean >= MR_T1_VALUES["soft_tissue"] + 0.5 * focus["delta_value"], (focus, mean)


@pytest.mark.parametrize(
    ("modality", "sop_class_uid"),
    [("CR", ComputedRadiographyImageStorage), ("DX", DigitalXRayImageStorageForPresentation)],
)
def test_radiographs_are_valid_and_their_nodule_is_where_reported(
    tmp_path: Path, modality: str, sop_class_uid: str
) -> None:
    # when a chest radiograph with one nodule is made
    report = _make(
        tmp_path / modality, "--modality", modality, "--rows", "256", "--columns", "256", "--lesions", "1",
        "--seed", "4",
    )  # fmt: skip
    (ds,) = _read_series(report)

    # then it is one valid instance of its SOP class
    assert report["count"] == 1 and report["slice_thickness_mm"] is None
    assert ds.SOPClassUID == sop_class_uid == ds.file_meta.MediaStorageSOPClassUID and ds.Modality == modality
    assert ds.pixel_array.dtype == np.uint16 and ds.pixel_array.shape == (256, 256)
    assert isinstance(validate_instance("chest.dcm", _raw(ds)), AcceptedInstance)
    if modality == "DX":
        assert ds.PresentationIntentType == "FOR PRESENTATION"
    # and the nodule brightens the lung (900) around its reported centre (image mm, x right, y down)
    (nodule,) = report["lesions"]
    spacing = report["pixel_spacing_mm"][0]
    rows, columns = np.mgrid[0:256, 0:256]
    inside = (columns * spacing - nodule["center_mm"][0]) ** 2 + (rows * spacing - nodule["center_mm"][1]) ** 2 <= (
        nodule["diameter_mm"] / 2
    ) ** 2
    assert ds.pixel_array[inside].mean() >= 900 + nodule["delta_value"] - 50


def test_out_directory_is_refused_when_not_empty_and_reused_with_force(tmp_path: Path) -> None:
    # given an output directory that already holds a file
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    # when a study is made into it without --force, then it is refused and nothing is written
    with pytest.raises(CommandError, match="is not empty; choose an empty directory or pass --force"):
        _make(out, "--modality", "CR", "--rows", "64", "--columns", "64")
    assert [path.name for path in out.iterdir()] == ["keep.txt"]

    # and with --force the study is added beside the existing file
    report = _make(out, "--modality", "CR", "--rows", "64", "--columns", "64", "--force")
    assert sorted(path.name for path in out.iterdir()) == sorted(["keep.txt", report["series_instance_uid"]])
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--modality", "CT", "--slices", "0"), "--slices must be between 1 and 2000, not 0."),
        (("--modality", "MR", "--slices", "2001"), "--slices must be between 1 and 2000, not 2001."),
        (("--modality", "CT", "--slice-thickness", "0"), "--slice-thickness must be between 0.1 and 50 mm, not 0."),
        (("--modality", "CT", "--slice-thickness", "0.00001"), "--slice-thickness must be between 0.1 and 50 mm"),
        (("--modality", "CT", "--lesions", "-1"), "--lesions must be between 0 and 50 for CT, not -1."),
        (("--modality", "CR", "--lesions", "2"), "--lesions for CR is 0 or 1 (one pulmonary nodule), not 2."),
        (("--modality", "DX", "--slices", "3"), "--slices applies to CT and MR only"),
        (("--modality", "CT", "--rows", "4"), "--rows must be between 8 and 2048 for CT, not 4."),
        (("--modality", "CT", "--seed", "-3"), "--seed must be zero or more, not -3."),
        (("--modality", "CT", "--accession-number", "A" * 17), "--accession-number must be at most 16 characters"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message_and_nothing_written(
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    # when the command is given a bad option, then it says which and what is allowed, and creates nothing
    out = tmp_path / "never"
    with pytest.raises(CommandError) as refused:
        _make(out, *arguments)
    assert message in str(refused.value)
    assert not out.exists()


def test_the_command_needs_neither_system_checks_nor_the_database() -> None:
    # the command must run where only the code is installed: no checks that import the stack's settings
    assert Command.requires_system_checks == []
