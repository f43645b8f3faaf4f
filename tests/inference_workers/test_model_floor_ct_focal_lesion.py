"""The committed ct_focal_lesion weights still meet the issue's floors on a small fixed held-out set."""

from __future__ import annotations

from inference_workers.evaluation.evaluate_ct_focal_lesion import EvaluationSet, below_floors, evaluate


def test_committed_weights_meet_the_floors(ct_pipeline):
    # Six fixed held-out volumes (seeds the training never sees), small enough for the normal suite.
    metrics = evaluate(ct_pipeline, EvaluationSet(volumes=6, seed=200_000, matrix=160, in_plane_mm=(1.2, 1.5)))

    assert metrics["lesions_10mm"] >= 4
    assert below_floors(metrics) == [], metrics
