"""Evaluate the committed ct_focal_lesion weights on held-out synthetic CT volumes and print the model-card metrics.

    python -m inference_workers.evaluation.evaluate_ct_focal_lesion [--volumes 20] [--seed 100000]

A lesion counts as found when a predicted component overlaps it; a predicted component that overlaps
no lesion is a false positive. Dice is per volume with lesions (mean) and pooled over all voxels.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from inference_workers.pipelines.ct_focal_lesion import CtFocalLesionPipeline, Geometry
from inference_workers.synthetic import random_volume

HELD_OUT_SEED = 100_000
CRITICAL_MM = 10.0
FLOORS = {"sensitivity_10mm": 0.9, "false_positives_per_volume": 1.0, "dice_mean": 0.7}


@dataclass(frozen=True)
class EvaluationSet:
    """Held-out volumes: seeds from ``seed`` up, never used by training (which starts at 0)."""

    volumes: int = 20
    seed: int = HELD_OUT_SEED
    matrix: int = 224
    in_plane_mm: tuple[float, float] = (0.9, 1.5)

    def __iter__(self):
        for index in range(self.volumes):
            rng = np.random.default_rng(self.seed + index)
            lesion_count = int(rng.integers(0, 4))
            yield random_volume(rng, lesion_count=lesion_count, matrix=self.matrix, in_plane_mm=self.in_plane_mm)


def evaluate(pipeline: CtFocalLesionPipeline, evaluation_set: EvaluationSet) -> dict:
    found = {"all": [0, 0], "10mm": [0, 0]}
    false_positives = 0
    dices: list[float] = []
    overlap = predicted_total = truth_total = 0
    critical_agree = 0
    seconds = 0.0
    volumes = 0
    for voxels, spacing, phantom, labels in evaluation_set:
        volumes += 1
        started = time.perf_counter()
        prediction = pipeline(voxels, Geometry(spacing=spacing))
        seconds += time.perf_counter() - started
        mask = prediction.mask.astype(bool)
        truth = labels > 0
        components, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        for index, lesion in enumerate(phantom.lesions, start=1):
            inside = labels == index
            if not inside.any():
                continue
            hit = bool(mask[inside].any())
            for key in ("all", "10mm") if lesion.diameter_mm >= CRITICAL_MM else ("all",):
                found[key][0] += hit
                found[key][1] += 1
        for component in range(1, count + 1):
            if not truth[components == component].any():
                false_positives += 1
        both = int((mask & truth).sum())
        overlap += both
        predicted_total += int(mask.sum())
        truth_total += int(truth.sum())
        if truth.any():
            dices.append(2 * both / (int(mask.sum()) + int(truth.sum())))
        truth_critical = any(lesion.diameter_mm >= CRITICAL_MM for lesion in phantom.lesions)
        critical_agree += truth_critical == any(finding["critical"] for finding in prediction.findings)
    return {
        "volumes": volumes,
        "lesions": found["all"][1],
        "lesions_10mm": found["10mm"][1],
        "sensitivity_all": round(found["all"][0] / max(1, found["all"][1]), 3),
        "sensitivity_10mm": round(found["10mm"][0] / max(1, found["10mm"][1]), 3),
        "false_positives_per_volume": round(false_positives / max(1, volumes), 3),
        "dice_mean": round(float(np.mean(dices)) if dices else 0.0, 3),
        "dice_pooled": round(2 * overlap / max(1, predicted_total + truth_total), 3),
        "critical_flag_accuracy": round(critical_agree / max(1, volumes), 3),
        "seconds_per_volume": round(seconds / max(1, volumes), 2),
    }


def below_floors(metrics: dict) -> list[str]:
    failures = []
    if metrics["sensitivity_10mm"] < FLOORS["sensitivity_10mm"]:
        failures.append(f"sensitivity_10mm {metrics['sensitivity_10mm']} < {FLOORS['sensitivity_10mm']}")
    if metrics["false_positives_per_volume"] > FLOORS["false_positives_per_volume"]:
        failures.append(f"false_positives_per_volume {metrics['false_positives_per_volume']} > 1")
    if metrics["dice_mean"] < FLOORS["dice_mean"]:
        failures.append(f"dice_mean {metrics['dice_mean']} < {FLOORS['dice_mean']}")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metrics = evaluate(CtFocalLesionPipeline(), EvaluationSet(volumes=args.volumes, seed=args.seed))
    print(json.dumps(metrics))
    failures = below_floors(metrics)
    print("floors: " + ("met" if not failures else "NOT met: " + "; ".join(failures)))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
