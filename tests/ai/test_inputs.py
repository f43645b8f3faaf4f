"""The de-identified model input: voxels and geometry only, slices in patient order, refusals that name the problem."""

import io
import math
import random

import numpy as np
import pytest

from saas.ai.inputs import NOT_AIR_HU, InputError, input_key_for, series_for_model, volume_build
from saas.ai.registry import model_spec
from saas.studies.models import Series, Study
from tenants.context import tenant_context
from tests.ai.conftest import PATIENT_ID, PATIENT_NAME, chest_dx, lesion_ct, store_all

pytestmark = [pytest.mark.django_db, pytest.mark.orthanc]


def test_a_ct_series_becomes_voxels_in_slice_order_with_nothing_identifying(ai_clinic, pipeline):
    # Given a CT whose slices reach Orthanc in random order
    datasets = lesion_ct(slices=24)
    shuffled = datasets[:]
    random.Random(1).shuffle(shuffled)
    store_all(ai_clinic, shuffled)
    pipeline.sync_until_completed(1)
    spec = model_spec("ct_focal_lesion")
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        study = Study.objects.get()
        series = series_for_model(study=study, spec=spec)
        # When the input is built
        volume = volume_build(tenant=ai_clinic, series=series, spec=spec)
    # Then it holds exactly the four arrays of the message schema, in HU, ordered along the normal
    with np.load(io.BytesIO(volume.npz), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["orientation", "origin", "spacing", "voxels"]
        voxels, origin = archive["voxels"], archive["origin"]
        assert voxels.dtype == np.int16 and voxels.shape == volume.shape
        assert archive["spacing"].tolist() == pytest.approx([2.5, 2.8, 2.8])
    expected = np.stack([d.pixel_array.astype(np.int16) - 1024 for d in datasets])
    # cut in-plane to the body: what is left out is air, with a margin of at least 10 mm kept around the rest
    z0, row0, column0 = volume.offset
    rows, columns = slice(row0, row0 + voxels.shape[1]), slice(column0, column0 + voxels.shape[2])
    assert z0 == 0 and voxels.shape[0] == 24 and voxels.shape[1] * voxels.shape[2] < 0.8 * 128 * 128
    np.testing.assert_array_equal(voxels, expected[:, rows, columns])
    outside = np.ones((128, 128), dtype=bool)
    outside[rows, columns] = False
    assert (expected[:, outside] <= NOT_AIR_HU).all()
    body_rows, body_columns = np.nonzero((voxels > NOT_AIR_HU).any(axis=0))
    margin = math.ceil(10.0 / 2.8)
    assert (body_rows.min(), body_columns.min()) == (margin, margin)
    assert (voxels.shape[1] - 1 - body_rows.max(), voxels.shape[2] - 1 - body_columns.max()) == (margin, margin)
    # and the origin moved with the cut (axial slices: rows along y, columns along x)
    first = [float(v) for v in datasets[0].ImagePositionPatient]
    assert origin.tolist() == pytest.approx([first[0] + column0 * 2.8, first[1] + row0 * 2.8, first[2]])
    assert volume.sop_instance_uids == [str(d.SOPInstanceUID) for d in datasets]
    # And nothing that identifies the patient or the study travels
    for secret in (PATIENT_NAME, PATIENT_ID, "Testperson", str(datasets[0].StudyInstanceUID), "ACC-AI-1"):
        assert secret.encode() not in volume.npz


def test_a_radiograph_becomes_one_slice_with_its_pixel_spacing(ai_clinic, pipeline):
    dataset = chest_dx()
    store_all(ai_clinic, [dataset])
    pipeline.sync_until_completed(1)
    spec = model_spec("dx_chest_triage")
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        series = series_for_model(study=Study.objects.get(), spec=spec)
        volume = volume_build(tenant=ai_clinic, series=series, spec=spec)
    with np.load(io.BytesIO(volume.npz), allow_pickle=False) as archive:
        assert archive["voxels"].shape == (1, 256, 256)
        assert archive["spacing"].tolist() == pytest.approx([1.0, 1.6, 1.6])
        np.testing.assert_array_equal(archive["voxels"][0], dataset.pixel_array.astype(np.int16))
    assert PATIENT_NAME.encode() not in volume.npz


def test_two_slices_at_one_position_are_refused_by_name(ai_clinic, pipeline):
    # Given a series where a second acquisition repeats a slice position
    datasets = lesion_ct(slices=12)
    datasets[5].ImagePositionPatient = list(datasets[4].ImagePositionPatient)
    store_all(ai_clinic, datasets)
    pipeline.sync_until_completed(1)
    spec = model_spec("ct_focal_lesion")
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        series = Series.objects.get()
        # When the input is built, then the refusal says what is wrong
        with pytest.raises(InputError, match="share one position"):
            volume_build(tenant=ai_clinic, series=series, spec=spec)


def test_the_input_key_changes_with_the_slices_not_with_the_study_version(ai_clinic, pipeline):
    datasets = lesion_ct(slices=12)
    store_all(ai_clinic, datasets[:10])
    pipeline.sync_until_completed(1)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        study = Study.objects.get()
        before = input_key_for(study=study, series=Series.objects.get())
        Study.objects.filter(pk=study.pk).update(version=study.version + 1)
        assert input_key_for(study=Study.objects.get(), series=Series.objects.get()) == before
    store_all(ai_clinic, datasets[10:])
    pipeline.sync_until_completed(2)
    with tenant_context(tenant_ids=[ai_clinic.pk]):
        assert input_key_for(study=Study.objects.get(), series=Series.objects.get()) != before
