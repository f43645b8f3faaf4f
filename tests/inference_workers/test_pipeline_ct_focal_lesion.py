"""The ct_focal_lesion pipeline pieces on tiny volumes: resampling, measuring, and the whole model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_workers.pipelines.ct_focal_lesion import (
    Geometry,
    LesionFindings,
    ResampleIsotropic,
    average_along,
    upsample_box,
)
from inference_workers.synthetic import Ellipsoid, voxel_centres_mm
from tests.inference_workers.conftest import tiny_volume


def test_resample_keeps_the_extent_and_averages_down():
    volume = torch.arange(40 * 50 * 50, dtype=torch.float32).reshape(40, 50, 50)

    resampled, spacing = ResampleIsotropic(2.0)(volume, (5.0, 0.8, 0.8))

    assert tuple(resampled.shape) == (100, 20, 20)
    assert spacing == (2.0, 2.0, 2.0)


def test_slab_pooling_gives_the_whole_volume_averages_without_the_float_copy():
    # Given a thin-slice int16 volume whose slice count is not a multiple of the slab
    rng = np.random.default_rng(3)
    voxels = rng.integers(-1024, 3000, size=(2 * ResampleIsotropic.SLAB_SLICES + 5, 61, 47), dtype=np.int16)
    resample = ResampleIsotropic(2.0)
    spacing = (0.7, 0.75, 0.9)
    assert resample.shrinks_only(voxels.shape, spacing)

    pooled, pooled_spacing = resample.pool_in_slabs(voxels, spacing)
    whole, whole_spacing = resample(torch.from_numpy(voxels).float(), spacing)

    assert pooled.shape == whole.shape == (13, 23, 21) and pooled_spacing == whole_spacing
    assert torch.allclose(pooled, whole, atol=1e-2)
    # and a volume that must grow along an axis is not one for slabs
    assert not resample.shrinks_only((10, 61, 47), (5.0, 0.75, 0.9))


@pytest.mark.parametrize(("count", "size"), [(500, 250), (353, 138), (37, 13), (9, 9), (7, 1), (11, 10)])
def test_average_along_an_axis_uses_the_adaptive_pooling_windows(count, size):
    tensor = torch.from_numpy(np.random.default_rng(count).normal(size=(3, count, 5)).astype(np.float32))

    averaged = average_along(tensor, 1, size)

    expected = torch.nn.functional.adaptive_avg_pool1d(tensor.transpose(1, 2), size).transpose(1, 2)
    assert averaged.shape == (3, size, 5) and torch.allclose(averaged, expected, atol=1e-5)


def test_upsample_box_matches_a_constant_and_a_ramp():
    probability = np.tile(np.linspace(0, 1, 10, dtype=np.float32), (4, 6, 1))

    box = (slice(0, 8), slice(0, 12), slice(0, 20))
    upsampled = upsample_box(probability, (8, 12, 20), box)

    assert upsampled.shape == (8, 12, 20)
    assert np.all(np.diff(upsampled[0, 0]) >= 0)
    assert np.allclose(upsampled[:, :, 0], 0) and np.allclose(upsampled[:, :, -1], 1)


def test_findings_measure_a_known_sphere_in_patient_coordinates():
    # Given a probability map that is exactly a 16 mm sphere on a 2 mm grid, and a native grid twice as fine
    spacing = (1.0, 1.0, 1.0)
    z, y, x = voxel_centres_mm((24, 24, 24), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    probability = Ellipsoid((24.0, 24.0, 24.0), (8.0, 8.0, 8.0)).contains(z, y, x).astype(np.float32) * 0.95
    geometry = Geometry(spacing=spacing, orientation=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0), origin=(100.0, -50.0, 20.0))
    measure = LesionFindings(
        label="focal_lesion", threshold=0.5, min_confidence=0.5, min_volume_ml=0.01, critical_diameter_mm=10.0
    )

    # When the findings are measured
    mask, findings = measure(probability, geometry, (48, 48, 48))

    # Then there is one critical finding of the right size, where the sphere is, in patient millimetres
    assert mask.shape == (48, 48, 48)
    (finding,) = findings
    assert finding["critical"] is True
    assert abs(finding["diameter_mm"] - 16.0) < 1.5
    assert abs(finding["volume_ml"] - 4 / 3 * np.pi * 0.8**3) < 0.3
    assert np.allclose(finding["centre_voxel"], (23.5, 23.5, 23.5), atol=0.6)
    # Row direction is -x and the slice normal is row x column = -z.
    assert np.allclose(finding["centre_mm"], (100.0 - 23.5, -50.0 + 23.5, 20.0 - 23.5), atol=0.6)
    assert finding["confidence"] == 0.95


def test_findings_drop_faint_and_tiny_components():
    probability = np.zeros((20, 20, 20), dtype=np.float32)
    probability[5, 5, 5] = 0.99
    probability[12:16, 12:16, 12:16] = 0.6
    measure = LesionFindings(
        label="focal_lesion", threshold=0.5, min_confidence=0.7, min_volume_ml=0.05, critical_diameter_mm=10.0
    )

    mask, findings = measure(probability, Geometry(spacing=(2.0, 2.0, 2.0)), (20, 20, 20))

    assert findings == []
    assert not mask.any()


def test_pipeline_finds_a_15_mm_lesion_in_a_tiny_volume(ct_pipeline):
    volume = tiny_volume(diameter_mm=15.0)

    prediction = ct_pipeline(volume.voxels, Geometry(spacing=volume.spacing))

    assert prediction.mask.shape == volume.voxels.shape and prediction.mask.dtype == np.uint8
    (finding,) = prediction.findings
    assert finding["critical"] is True
    assert 11.0 <= finding["diameter_mm"] <= 19.0
    # Identity orientation and origin: patient (x, y, z) is the volume's (z, y, x) in reverse.
    expected_centre = np.asarray(volume.lesion.shape.centre_mm)[::-1]
    assert np.linalg.norm(np.asarray(finding["centre_mm"]) - expected_centre) < 3.0
    truth = volume.labels > 0
    dice = 2 * (prediction.mask.astype(bool) & truth).sum() / (prediction.mask.sum() + truth.sum())
    assert dice > 0.7
    assert set(prediction.timings) == {"preprocess", "forward", "postprocess"}
