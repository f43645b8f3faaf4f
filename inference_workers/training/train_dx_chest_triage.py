"""Train the dx_chest_triage demo classifier on synthetic chest radiographs and write the bundle's models/model.pt.

    python -m inference_workers.training.train_dx_chest_triage [--steps 1600] [--seed 0] [--threads 2]

A fixed number of steps, so the same seed and thread count reproduce the same weights (bit for bit
on the same machine); about 13 minutes on 2 CPU cores of its own (26 min of CPU time), faster on a
GPU. ``--max-minutes`` stops a run on an overloaded machine early, and says so, rather than let it
run on for hours; such weights are not the card's. Training chests use seeds from ``--seed``
upwards, the validation printed at the end seeds from 50000, and the evaluation holds out 100000 up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention

from inference_workers.pipelines.ct_focal_lesion import load_bundle_config, pick_device
from inference_workers.pipelines.dx_chest_triage import BUNDLE_DIR, DxPreprocess
from inference_workers.synthetic_dx import (
    ChestAnatomy,
    attenuation,
    pixel_centres_mm,
    random_chest,
    random_exposure,
    random_nodule,
    to_pixels,
)

VALIDATION_SEED = 50_000
# Nodules start this much denser and reach their true density after this fraction of the steps.
CURRICULUM_BOOST = 2.0
CURRICULUM_FRACTION = 0.3
# Subpixels per model pixel for nodules on the model grid (~1.6 mm): the edge must be area-averaged.
NODULE_SUBPIXELS = 4


def render_background(seed: int, *, model_shape: tuple[int, int], supersample: int = 2):
    """A chest without nodules as attenuation on the model grid: rendered finer, area-averaged like the pipeline."""
    rng = np.random.default_rng(seed)
    anatomy = random_chest(rng)
    fine_shape = tuple(n * supersample for n in model_shape)
    fine_spacing = tuple(extent / n for extent, n in zip(anatomy.extent_mm, fine_shape, strict=True))
    fine = attenuation(anatomy, shape=fine_shape, spacing=fine_spacing)
    coarse = F.avg_pool2d(torch.from_numpy(fine)[None, None], supersample)[0, 0].numpy()
    return anatomy, coarse.astype(np.float16)


class BatchSampler:
    """A training batch from pooled chests: half get a fresh nodule, every image a fresh exposure and noise.

    Pairing the same chest with and without a nodule is what makes the network look at the nodule,
    not at the chest. Besides the label, each example carries the evidence-map target: the cells
    of the network's last grid whose centres lie within the nodule's radius plus ``margin_mm``.
    Returns raw pixel values; the caller runs the pipeline's own preprocessing on its device.
    """

    def __init__(
        self,
        chests: list[ChestAnatomy],
        backgrounds: np.ndarray,
        *,
        map_shape: tuple[int, int],
        margin_mm: float,
        seed: int,
    ) -> None:
        self.chests = chests
        self.backgrounds = backgrounds
        self.map_shape = map_shape
        self.margin_mm = margin_mm
        self.rng = np.random.default_rng(seed)
        # Early steps see denser nodules (a curriculum): the network finds the needle before it gets faint.
        self.contrast_boost = 1.0

    def example(self, index: int, with_nodule: bool) -> tuple[np.ndarray, np.ndarray]:
        anatomy = self.chests[index]
        model_shape = self.backgrounds.shape[1:]
        spacing = tuple(extent / n for extent, n in zip(anatomy.extent_mm, model_shape, strict=True))
        attenuation_mm = self.backgrounds[index].astype(np.float32)
        target = np.zeros(self.map_shape, dtype=np.float32)
        if with_nodule:
            nodule = random_nodule(self.rng, anatomy)
            nodule = dataclasses.replace(nodule, density=nodule.density * self.contrast_boost)
            y, x = pixel_centres_mm(model_shape, spacing)
            nodule.render(y, x, attenuation_mm, subpixels=NODULE_SUBPIXELS)
            cell = tuple(extent / n for extent, n in zip(anatomy.extent_mm, self.map_shape, strict=True))
            cy, cx = pixel_centres_mm(self.map_shape, cell)
            distance = np.hypot(cy - nodule.centre_mm[0], cx - nodule.centre_mm[1])
            target[distance <= nodule.diameter_mm / 2 + self.margin_mm] = 1.0
        pixels = to_pixels(attenuation_mm, random_exposure(self.rng, anatomy), spacing=spacing, rng=self.rng)
        if self.rng.uniform() < 0.5:
            # Mirrored chests (heart on the other side) cost nothing and double the shapes seen.
            pixels, target = pixels[:, ::-1], target[:, ::-1]
        return pixels, target

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = self.rng.integers(len(self.chests), size=batch_size)
        labels = self.rng.uniform(size=batch_size) < 0.5
        examples = [self.example(int(i), bool(label)) for i, label in zip(indices, labels, strict=True)]
        pixels, targets = zip(*examples, strict=True)
        return (
            torch.from_numpy(np.stack(pixels))[:, None],
            torch.from_numpy(labels.astype(np.float32))[:, None],
            torch.from_numpy(np.stack(targets))[:, None],
        )


def crop_windows(
    images: torch.Tensor, maps: torch.Tensor, *, cells: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each example to a window of ``cells`` evidence cells a side, holding the nodule when there is one.

    The network is fully convolutional and its score a pooled map, so a window teaches the same thing
    as the whole image at a fraction of the cost; windows are cut on the cell grid so the map target
    stays aligned, and negatives' windows fall anywhere (neck, abdomen, outside the body), so nothing
    in the whole image is unfamiliar at inference.
    """
    stride = images.shape[-1] // maps.shape[-1]
    span = maps.shape[-1] - cells
    image_windows, map_windows = [], []
    for image, target in zip(images, maps, strict=True):
        # Offsets are drawn on the CPU (the seeded generator lives there) whatever device the maps are on.
        positive = torch.nonzero(target[0]).cpu()
        if len(positive):
            centre = positive.float().mean(dim=0).round().long()
            low = (centre - cells + 2).clamp(0, span)
            high = (centre - 1).clamp(0, span)
            offset = low + (torch.rand(2, generator=generator) * (high - low + 1).float()).long()
        else:
            offset = torch.randint(span + 1, (2,), generator=generator)
        oy, ox = (int(v) for v in offset)
        map_windows.append(target[:, oy : oy + cells, ox : ox + cells])
        image_windows.append(image[:, oy * stride : (oy + cells) * stride, ox * stride : (ox + cells) * stride])
    return torch.stack(image_windows), torch.stack(map_windows)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) statistic; ties count half."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("AUC needs both positive and negative examples")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def train(
    *,
    steps: int,
    max_minutes: float,
    seed: int,
    pool_size: int,
    batch_size: int,
    window_cells: int,
    whole_fraction: float,
    validate_every: int,
    output: Path,
) -> dict:
    torch.manual_seed(seed)
    device = pick_device()
    _, parser = load_bundle_config(BUNDLE_DIR)
    model_shape = tuple(parser["model_shape"])
    preprocess = DxPreprocess(model_shape=model_shape, percentiles=tuple(parser["percentiles"]))
    network = parser.get_parsed_content("network").to(device)
    with torch.no_grad():
        map_shape = tuple(network.evidence_map(torch.zeros(1, 1, *model_shape, device=device)).shape[-2:])

    started = time.perf_counter()
    rendered = [render_background(seed + index, model_shape=model_shape) for index in range(pool_size)]
    chests = [anatomy for anatomy, _ in rendered]
    backgrounds = np.stack([background for _, background in rendered])
    generation_seconds = time.perf_counter() - started
    print(f"rendered {pool_size} chests in {generation_seconds:.0f} s", flush=True)
    sampler = BatchSampler(chests, backgrounds, map_shape=map_shape, margin_mm=6.0, seed=seed)

    peak_lr = 3e-3
    optimiser = torch.optim.AdamW(network.parameters(), lr=peak_lr, weight_decay=1e-4)
    # Positive cells are a handful among a thousand: weigh them up so the map does not learn "never".
    map_loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(20.0, device=device))
    image_loss = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(seed)
    deadline = started + max_minutes * 60
    recent: list[float] = []
    network.train()
    step = 0
    for step in range(1, steps + 1):
        if time.perf_counter() > deadline:
            print(f"stopped at step {step - 1} of {steps}: --max-minutes reached", flush=True)
            step -= 1
            break
        # Linear warm-up, then cosine decay over the fixed number of steps.
        for group in optimiser.param_groups:
            warm = min(1.0, step / 50)
            group["lr"] = peak_lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        sampler.contrast_boost = 1.0 + (CURRICULUM_BOOST - 1.0) * max(0.0, 1.0 - step / (CURRICULUM_FRACTION * steps))
        pixels, labels, maps = sampler(batch_size)
        images = preprocess(pixels.to(device))
        # The last steps see whole images: the pooled score over the full map is what inference thresholds.
        if window_cells and step <= steps * (1 - whole_fraction):
            images, maps = crop_windows(images, maps.to(device), cells=window_cells, generator=generator)
        labels, maps = labels.to(device), maps.to(device)
        optimiser.zero_grad(set_to_none=True)
        evidence = network.evidence_map(images)
        loss = image_loss(network.pool(evidence), labels) + map_loss(evidence, maps)
        loss.backward()
        optimiser.step()
        recent = (recent + [loss.item()])[-50:]
        if step % 25 == 0:
            print(f"step {step} {time.perf_counter() - started:.0f} s loss {np.mean(recent):.4f}", flush=True)
        if validate_every and step % validate_every == 0 and step < steps:
            network.eval()
            quick = validate(network, preprocess, model_shape=model_shape, map_shape=map_shape, device=device)
            print(f"step {step} validation {json.dumps(quick)}", flush=True)
            network.train()
    training_seconds = time.perf_counter() - started

    network.eval()
    validation = validate(network, preprocess, model_shape=model_shape, map_shape=map_shape, device=device)
    output.parent.mkdir(parents=True, exist_ok=True)
    network.cpu()
    torch.save(network.state_dict(), output)
    summary = {
        "device": device.type,
        "threads": torch.get_num_threads(),
        "steps": step,
        "batch_size": batch_size,
        "window_cells": window_cells,
        "whole_fraction": whole_fraction,
        "pool_size": pool_size,
        "generation_seconds": round(generation_seconds, 1),
        "seconds": round(training_seconds, 1),
        "final_loss": round(float(np.mean(recent)), 4),
        "weights_bytes": output.stat().st_size,
        **validation,
    }
    print(json.dumps(summary), flush=True)
    return summary


@torch.no_grad()
def validate(network, preprocess, *, model_shape, map_shape, device, chests: int = 100, draws: int = 4) -> dict:
    """Quick check on the model grid with chests the training never saw (seeds 50000+), to choose thresholds."""
    rendered = [render_background(VALIDATION_SEED + index, model_shape=model_shape) for index in range(chests)]
    sampler = BatchSampler(
        [anatomy for anatomy, _ in rendered],
        np.stack([background for _, background in rendered]),
        map_shape=map_shape,
        margin_mm=6.0,
        seed=VALIDATION_SEED,
    )
    scores, labels = [], []
    for _ in range(draws):
        pixels, batch_labels, _ = sampler(chests)
        scores.append(torch.sigmoid(network(preprocess(pixels.to(device)))).cpu().numpy().ravel())
        labels.append(batch_labels.numpy().ravel())
    scores, labels = np.concatenate(scores), np.concatenate(labels).astype(bool)
    result = {"validation_images": int(len(scores)), "validation_auc": round(roc_auc(scores, labels), 4)}
    for threshold in (0.3, 0.5, 0.7, 0.9):
        result[f"validation_sensitivity@{threshold}"] = round(float((scores[labels] >= threshold).mean()), 3)
        result[f"validation_specificity@{threshold}"] = round(float((scores[~labels] < threshold).mean()), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--max-minutes", type=float, default=60.0, help="stop early (and say so) past this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=600, help="chests rendered once and reused")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument(
        "--window-cells", type=int, default=16, help="train on windows this many cells a side; 0 = whole images"
    )
    parser.add_argument("--whole-fraction", type=float, default=0.1, help="last fraction of steps on whole images")
    parser.add_argument("--validate-every", type=int, default=0, help="also validate every this many steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=BUNDLE_DIR / "models" / "model.pt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(
        steps=args.steps,
        max_minutes=args.max_minutes,
        seed=args.seed,
        pool_size=args.pool_size,
        batch_size=args.batch_size,
        window_cells=args.window_cells,
        whole_fraction=args.whole_fraction,
        validate_every=args.validate_every,
        output=args.output,
    )


if __name__ == "__main__":
    main()
