"""Train the ct_focal_lesion demo UNet on synthetic CT crops and write the bundle's models/model.pt.

    python -m inference_workers.training.train_ct_focal_lesion [--minutes 15] [--seed 0]

Runs on 2 CPU cores in about the given minutes (faster on a GPU). Training phantoms use seeds from
``--seed`` upwards; the evaluation script holds out seeds from 100000 upwards.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from monai.losses import DiceCELoss

from inference_workers.pipelines.ct_focal_lesion import (
    BUNDLE_DIR,
    ResampleIsotropic,
    ScaleHounsfield,
    load_bundle_config,
    pick_device,
)
from inference_workers.synthetic import random_phantom, render

SLICE_THICKNESSES_MM = (1.25, 2.0, 2.5, 3.0, 5.0)


class CropSampler:
    """One training example: a cube of a random phantom at a random native spacing, resampled to the model grid."""

    def __init__(self, *, target_spacing_mm: float, hu_window: tuple[float, float], crop_mm: float) -> None:
        self.crop_mm = crop_mm
        self.target_spacing_mm = target_spacing_mm
        self.resample = ResampleIsotropic(target_spacing_mm)
        self.scale = ScaleHounsfield(hu_window)
        self.model_count = int(round(crop_mm / target_spacing_mm))

    def __call__(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        extent = (rng.uniform(160, 260), rng.uniform(250, 330), rng.uniform(320, 420))
        lesion_count = int(rng.choice([0, 1, 2, 3, 4], p=[0.1, 0.3, 0.3, 0.2, 0.1]))
        phantom = random_phantom(rng, extent_mm=extent, lesion_count=lesion_count)
        if phantom.lesions and rng.uniform() < 0.75:
            centre = np.asarray(phantom.lesions[rng.integers(len(phantom.lesions))].shape.centre_mm)
            centre = centre + rng.uniform(-0.3, 0.3, size=3) * self.crop_mm
        else:
            cy, cx = phantom.body_centre_yx
            ay, ax = phantom.body_semi_axes_yx
            centre = np.array([rng.uniform(0, extent[0]), cy + rng.uniform(-ay, ay), cx + rng.uniform(-ax, ax)])
        start = centre - self.crop_mm / 2
        pixel = rng.uniform(0.7, 1.5)
        nominal = (float(rng.choice(SLICE_THICKNESSES_MM)), pixel, pixel)
        native_count = tuple(max(2, int(round(self.crop_mm / s))) for s in nominal)
        spacing = tuple(self.crop_mm / n for n in native_count)
        voxels, _ = render(
            phantom, shape=native_count, spacing=spacing, origin_mm=tuple(start + np.asarray(spacing) / 2), rng=rng
        )
        image, _ = self.resample(torch.from_numpy(voxels.astype(np.float32)), spacing)
        image = self.scale(image)
        model_spacing = (self.target_spacing_mm,) * 3
        _, labels = render(
            phantom,
            shape=(self.model_count,) * 3,
            spacing=model_spacing,
            origin_mm=tuple(start + self.target_spacing_mm / 2),
        )
        return image.numpy().astype(np.float16), (labels > 0).astype(np.uint8)


def train(*, minutes: float, seed: int, pool_size: int, batch_size: int, crop_mm: float, output: Path) -> dict:
    torch.manual_seed(seed)
    device = pick_device()
    _, parser = load_bundle_config(BUNDLE_DIR)
    sampler = CropSampler(
        target_spacing_mm=parser["target_spacing_mm"], hu_window=tuple(parser["hu_window"]), crop_mm=crop_mm
    )
    started = time.perf_counter()
    pool = [sampler(seed + index) for index in range(pool_size)]
    images = torch.from_numpy(np.stack([image for image, _ in pool]))[:, None]
    labels = torch.from_numpy(np.stack([label for _, label in pool]))[:, None]
    generation_seconds = time.perf_counter() - started
    print(f"generated {pool_size} crops in {generation_seconds:.0f} s", flush=True)

    network = parser.get_parsed_content("network").to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_function = DiceCELoss(sigmoid=True, batch=True)
    generator = torch.Generator().manual_seed(seed)
    budget = minutes * 60 - generation_seconds
    training_started = time.perf_counter()
    iteration = 0
    recent: list[float] = []
    network.train()
    while (elapsed := time.perf_counter() - training_started) < budget:
        # Cosine decay over the wall-clock budget, so a faster machine simply takes more steps.
        for group in optimiser.param_groups:
            group["lr"] = 3e-3 * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * elapsed / budget)))
        chosen = torch.randint(len(pool), (batch_size,), generator=generator)
        image, label = images[chosen].float(), labels[chosen].float()
        for axis in (2, 3, 4):
            if torch.rand(1, generator=generator) < 0.5:
                image, label = image.flip(axis), label.flip(axis)
        # Scanner calibration differs a little; lesions must not be defined by one absolute value.
        image = image + (torch.rand(batch_size, 1, 1, 1, 1, generator=generator) - 0.5) * 0.05
        image, label = image.to(device), label.to(device)
        optimiser.zero_grad(set_to_none=True)
        loss = loss_function(network(image), label)
        loss.backward()
        optimiser.step()
        recent = (recent + [loss.item()])[-50:]
        iteration += 1
        if iteration % 20 == 0:
            print(f"iteration {iteration} {elapsed:.0f} s loss {np.mean(recent):.4f}", flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    network.cpu().eval()
    torch.save(network.state_dict(), output)
    summary = {
        "device": device.type,
        "iterations": iteration,
        "batch_size": batch_size,
        "pool_size": pool_size,
        "crop_mm": crop_mm,
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": round(float(np.mean(recent)), 4),
        "weights_bytes": output.stat().st_size,
    }
    print(json.dumps(summary), flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget, crop generation included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-size", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--crop-mm", type=float, default=64.0, help="training cube edge; 64 mm = 32^3 model voxels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=BUNDLE_DIR / "models" / "model.pt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(
        minutes=args.minutes,
        seed=args.seed,
        pool_size=args.pool_size,
        batch_size=args.batch_size,
        crop_mm=args.crop_mm,
        output=args.output,
    )


if __name__ == "__main__":
    main()
