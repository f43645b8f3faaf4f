"""Which models a series is routed to, read from the bundles' own metadata."""

import json

import pytest

from saas.ai.registry import RegistryError, model_spec, model_specs


def test_every_enabled_bundle_is_read_with_its_version_and_pool():
    # Given the committed bundles, when the registry reads them
    names = {spec.name: spec for spec in model_specs()}
    # Then each names the version its worker serves and the queue of its pool
    metadata = json.loads(open("inference_workers/models/ct_focal_lesion/configs/metadata.json").read())
    assert names["ct_focal_lesion"].version == metadata["version"]
    assert names["ct_focal_lesion"].queue == "inference.cpu"
    assert names["ct_focal_lesion"].input_kind == "volume"
    assert names["dx_chest_triage"].input_kind == "image"


def test_routing_follows_modality_body_part_and_slice_count():
    ct = model_spec("ct_focal_lesion")
    assert ct.accepts(modality="CT", body_part="abdomen", instance_count=40)
    assert not ct.accepts(modality="MR", body_part="ABDOMEN", instance_count=40)
    assert not ct.accepts(modality="CT", body_part="HEAD", instance_count=40)
    # A scout or a single slice is not a volume
    assert not ct.accepts(modality="CT", body_part="ABDOMEN", instance_count=1)
    dx = model_spec("dx_chest_triage")
    assert dx.accepts(modality="DX", body_part="CHEST", instance_count=1)
    assert not dx.accepts(modality="CT", body_part="CHEST", instance_count=1)
    # A 2D model reads a series of one radiograph, and only the projections it was trained on
    assert not dx.accepts(modality="DX", body_part="CHEST", instance_count=2)
    assert "PA" in dx.view_positions and "LL" not in dx.view_positions


def test_a_missing_bundle_is_named(settings):
    # Given a setting that enables a model nobody trained
    settings.READROOM_AI_MODELS = ["ct_focal_lesion", "no_such_model"]
    model_specs.cache_clear()
    try:
        # When the registry is read, then the error names the model and the file it looked for
        with pytest.raises(RegistryError, match="no_such_model.*metadata.json"):
            model_specs()
    finally:
        model_specs.cache_clear()
