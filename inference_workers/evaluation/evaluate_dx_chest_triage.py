"""Evaluate the committed dx_chest_triage weights on held-out synthetic chest radiographs and print the card's metrics.

    python -m inference_workers.evaluation.evaluate_dx_chest_triage [--images 200] [--seed 100000]

Every image is rendered whole at a native detector spacing (0.14-0.2 mm) and goes through the
pipeline as a job's input would (area resize, scaling, network, GradCAM, finding). Every other
image has one nodule (8-30 mm). AUC is over the image probabilities; sensitivity and specificity
are at the bundle's operating threshold; a finding is localised when its centre lies within the
nodule's radius plus 10 mm of the nodule's centre.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from inference_workers.pipelines.ct_focal_lesion import Geometry
from inference_workers.pipelines.dx_chest_triage import DxChestTriagePipeline
from inference_workers.synthetic_dx import random_radiograph
from inference_workers.training.train_dx_chest_triage import roc_auc

HELD_OUT_SEED = 100_000
LOCALISED_WITHIN_MM = 10.0
SMALL_NODULE_MM = 15.0
FLOORS = {"auc": 0.95, "localised": 0.8}


@dataclass(frozen=True)
class EvaluationSet:
    """Held-out radiographs: seeds from ``seed`` up, never used by training (0 up) or its validation (50000 up)."""

    images: int = 200
    seed: int = HELD_OUT_SEED
    pixel_mm_range: tuple[float, float] = (0.14, 0.2)

    def __iter__(self):
        for index in range(self.images):
            rng = np.random.default_rng(self.seed + index)
            yield random_radiograph(rng, nodule=index % 2 == 0, pixel_mm_range=self.pixel_mm_range)


def evaluate(pipeline: DxChestTriagePipeline, evaluation_set: EvaluationSet) -> dict:
    scores: list[float] = []
    labels: list[bool] = []
    found = {"small": [0, 0], "large": [0, 0]}
    false_positives = false_critical = true_critical = 0
    centre_errors: list[float] = []
    diameter_errors: list[float] = []
    localised = 0
    seconds = 0.0
    for radiograph in evaluation_set:
        started = time.perf_counter()
        prediction = pipeline(radiograph.voxels, Geometry(spacing=radiograph.spacing))
        seconds += time.perf_counter() - started
        scores.append(prediction.probability)
        labels.append(bool(radiograph.nodules))
        finding = prediction.findings[0] if prediction.findings else None
        if not radiograph.nodules:
            false_positives += finding is not None
            false_critical += bool(finding and finding["critical"])
            continue
        nodule = radiograph.nodules[0]
        size = "small" if nodule.diameter_mm < SMALL_NODULE_MM else "large"
        found[size][1] += 1
        if finding is None:
            continue
        found[size][0] += 1
        true_critical += finding["critical"]
        # Detector millimetres: pixel j's centre lies at (j + 0.5) * spacing (see synthetic_dx.pixel_centres_mm).
        predicted_mm = (np.asarray(finding["centre_voxel"][1:]) + 0.5) * np.asarray(radiograph.spacing[1:])
        error = float(np.linalg.norm(predicted_mm - np.asarray(nodule.centre_mm)))
        centre_errors.append(error)
        diameter_errors.append(abs(finding["diameter_mm"] - nodule.diameter_mm))
        localised += error <= nodule.diameter_mm / 2 + LOCALISED_WITHIN_MM
    scores_array, labels_array = np.asarray(scores), np.asarray(labels)
    positives, negatives = int(labels_array.sum()), int((~labels_array).sum())
    detected = found["small"][0] + found["large"][0]
    return {
        "images": len(scores),
        "positives": positives,
        "auc": round(roc_auc(scores_array, labels_array), 4),
        "operating_threshold": pipeline.findings.operating_threshold,
        "sensitivity": round(detected / max(1, positives), 3),
        "specificity": round(1 - false_positives / max(1, negatives), 3),
        "sensitivity_small_8_15mm": round(found["small"][0] / max(1, found["small"][1]), 3),
        "sensitivity_large_15_30mm": round(found["large"][0] / max(1, found["large"][1]), 3),
        "critical_threshold": pipeline.findings.critical_threshold,
        "critical_among_positives": round(true_critical / max(1, positives), 3),
        "critical_among_negatives": round(false_critical / max(1, negatives), 3),
        "localised": round(localised / max(1, detected), 3),
        "centre_error_mm_median": round(float(np.median(centre_errors)) if centre_errors else 0.0, 1),
        "diameter_error_mm_median": round(float(np.median(diameter_errors)) if diameter_errors else 0.0, 1),
        "seconds_per_image": round(seconds / max(1, len(scores)), 3),
    }


def below_floors(metrics: dict) -> list[str]:
    return [f"{name} {metrics[name]} < {floor}" for name, floor in FLOORS.items() if metrics[name] < floor]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    metrics = evaluate(DxChestTriagePipeline(), EvaluationSet(images=args.images, seed=args.seed))
    print(json.dumps(metrics))
    failures = below_floors(metrics)
    print("floors: " + ("met" if not failures else "NOT met: " + "; ".join(failures)))
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
