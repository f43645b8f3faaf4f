"""The committed dx_chest_triage weights still meet the issue's floor (held-out AUC >= 0.95) on a small fixed set."""

from __future__ import annotations

from inference_workers.evaluation.evaluate_dx_chest_triage import EvaluationSet, below_floors, evaluate


def test_committed_weights_meet_the_floors(dx_pipeline):
    # Forty fixed held-out radiographs at native detector spacing (seeds no training run sees), half with a nodule.
    metrics = evaluate(dx_pipeline, EvaluationSet(images=40, seed=200_000))

    assert metrics["positives"] == 20
    assert below_floors(metrics) == [], metrics
