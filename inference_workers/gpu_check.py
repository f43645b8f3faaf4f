"""The GPU check for a machine with CUDA: both pipelines on the GPU agree with the CPU, meet their floors, and train.

    python -m inference_workers.gpu_check --out <dir>

Run on the device machine when a session is lent one (CI has no GPU). It compares, on the same inputs,
the CPU path (float32) with the CUDA path the workers choose at start (mixed precision and batched
sliding windows for the 3D model; full precision for the 2D model, whose GradCAM needs gradients):
masks, findings and probabilities must agree; the committed weights are re-evaluated on the GPU
against the model cards' floors; a short training run of each model runs on CUDA. Prints one JSON
object and writes it to ``<out>/gpu_check.json``; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inference_workers.evaluation import evaluate_ct_focal_lesion as ct_eval
from inference_workers.evaluation import evaluate_dx_chest_triage as dx_eval
from inference_workers.pipelines.ct_focal_lesion import CtFocalLesionPipeline, Geometry
from inference_workers.pipelines.dx_chest_triage import DxChestTriagePipeline
from inference_workers.synthetic import random_volume
from inference_workers.synthetic_dx import random_radiograph

CT_SEED = 424_242
DX_IMAGES = 16
MIN_MASK_DICE = 0.95
MAX_PROBABILITY_DIFFERENCE = 0.02


def _timed(function, *args):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    value = function(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def check_ct(cpu: CtFocalLesionPipeline, gpu: CtFocalLesionPipeline, *, quick: bool = False) -> dict:
    """One large volume (about 500 slices of 512 x 512) through both paths."""
    rng = np.random.default_rng(CT_SEED)
    matrix, extent = (128, (60.0, 64.0)) if quick else (512, (480.0, 500.0))
    voxels, spacing, phantom, _ = random_volume(
        rng, lesion_count=3, matrix=matrix, in_plane_mm=(0.7, 0.8), slice_mm=(1.0, 1.0), z_extent_mm=extent
    )
    geometry = Geometry(spacing=spacing)
    gpu(voxels[:64], geometry)  # warm-up: kernels and cuDNN autotuning are not part of a job's time
    on_cpu, cpu_seconds = _timed(cpu, voxels, geometry)
    on_gpu, gpu_seconds = _timed(gpu, voxels, geometry)
    dice = _dice(on_cpu.mask.astype(bool), on_gpu.mask.astype(bool))
    cpu_sizes = sorted(round(f["diameter_mm"]) for f in on_cpu.findings)
    gpu_sizes = sorted(round(f["diameter_mm"]) for f in on_gpu.findings)
    return {
        "shape": list(voxels.shape),
        "lesions": [round(lesion.diameter_mm, 1) for lesion in phantom.lesions],
        "cpu_seconds": round(cpu_seconds, 2),
        "gpu_seconds": round(gpu_seconds, 2),
        "speedup": round(cpu_seconds / gpu_seconds, 1),
        "gpu_timings": {name: round(value, 3) for name, value in on_gpu.timings.items()},
        "mask_dice_cpu_vs_gpu": round(dice, 4),
        "findings_cpu": cpu_sizes,
        "findings_gpu": gpu_sizes,
        "ok": dice >= MIN_MASK_DICE and len(cpu_sizes) == len(gpu_sizes),
    }


def check_dx(cpu: DxChestTriagePipeline, gpu: DxChestTriagePipeline, *, images: int = DX_IMAGES) -> dict:
    differences, cpu_seconds, gpu_seconds, peaks_agree = [], 0.0, 0.0, 0
    for index in range(images):
        radiograph = random_radiograph(np.random.default_rng(CT_SEED + index), nodule=index % 2 == 0)
        geometry = Geometry(spacing=radiograph.spacing)
        on_cpu, seconds = _timed(cpu, radiograph.voxels, geometry)
        cpu_seconds += seconds
        on_gpu, seconds = _timed(gpu, radiograph.voxels, geometry)
        gpu_seconds += seconds
        differences.append(abs(on_cpu.probability - on_gpu.probability))
        peaks_agree += np.unravel_index(np.argmax(on_cpu.heatmap), on_cpu.heatmap.shape) == np.unravel_index(
            np.argmax(on_gpu.heatmap), on_gpu.heatmap.shape
        )
    return {
        "images": images,
        "max_probability_difference": round(float(max(differences)), 5),
        "heatmap_peaks_agree": f"{peaks_agree}/{images}",
        "cpu_seconds_per_image": round(cpu_seconds / images, 3),
        "gpu_seconds_per_image": round(gpu_seconds / images, 3),
        "ok": max(differences) <= MAX_PROBABILITY_DIFFERENCE,
    }


def check_floors(ct_gpu: CtFocalLesionPipeline, dx_gpu: DxChestTriagePipeline, *, quick: bool = False) -> dict:
    ct_metrics = ct_eval.evaluate(ct_gpu, ct_eval.EvaluationSet(volumes=2 if quick else 20))
    dx_metrics = dx_eval.evaluate(dx_gpu, dx_eval.EvaluationSet(images=4 if quick else 200))
    failures = ct_eval.below_floors(ct_metrics) + dx_eval.below_floors(dx_metrics)
    return {"ct_focal_lesion": ct_metrics, "dx_chest_triage": dx_metrics, "failures": failures, "ok": not failures}


def check_training(out: Path) -> dict:
    """Each training script for a short while on CUDA: it must run there and save weights that load."""
    import subprocess

    results = {}
    commands = {
        "ct_focal_lesion": ["-m", "inference_workers.training.train_ct_focal_lesion", "--minutes", "1",
                            "--pool-size", "60", "--threads", "8", "--output", str(out / "ct_model.pt")],
        "dx_chest_triage": ["-m", "inference_workers.training.train_dx_chest_triage", "--steps", "150",
                            "--max-minutes", "1.5", "--pool-size", "200", "--threads", "8",
                            "--output", str(out / "dx_model.pt")],
    }  # fmt: skip
    for name, arguments in commands.items():
        started = time.perf_counter()
        finished = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=240)
        weights = Path(arguments[-1])
        loads = weights.exists() and bool(torch.load(weights, map_location="cpu", weights_only=True))
        results[name] = {
            "seconds": round(time.perf_counter() - started, 1),
            "exit": finished.returncode,
            "log_tail": (finished.stdout + finished.stderr).strip().splitlines()[-4:],
            "ok": finished.returncode == 0 and loads,
        }
        weights.unlink(missing_ok=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--skip-training", action="store_true")
    # Rehearsal on a machine without a GPU: the same code on small inputs, "GPU" side on the CPU.
    parser.add_argument("--rehearse-on-cpu", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available() and not args.rehearse_on_cpu:
        print("no CUDA device: this check is for a machine with a GPU", file=sys.stderr)
        return 2
    quick = args.rehearse_on_cpu
    torch.set_num_threads(2 if quick else min(16, os.cpu_count() or 1))
    report: dict = {
        "torch": torch.__version__,
        "device": "cpu rehearsal" if quick else torch.cuda.get_device_name(0),
        "cpu_threads": torch.get_num_threads(),
    }
    cuda, cpu = torch.device("cpu" if quick else "cuda"), torch.device("cpu")
    ct_gpu, dx_gpu = CtFocalLesionPipeline(device=cuda), DxChestTriagePipeline(device=cuda)
    checks = {
        "ct_cpu_vs_gpu": lambda: check_ct(CtFocalLesionPipeline(device=cpu), ct_gpu, quick=quick),
        "dx_cpu_vs_gpu": lambda: check_dx(DxChestTriagePipeline(device=cpu), dx_gpu, images=2 if quick else DX_IMAGES),
        "floors_on_gpu": lambda: check_floors(ct_gpu, dx_gpu, quick=quick),
    }
    if not args.skip_training:
        checks["training_on_gpu"] = lambda: check_training(args.out)
    for name, check in checks.items():
        started = time.perf_counter()
        try:
            report[name] = check()
        except Exception as error:  # noqa: BLE001 - one failing check must not hide the others' results
            report[name] = {"ok": False, "error": f"{error.__class__.__name__}: {error}"}
        report[name]["check_seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps({name: report[name]}), flush=True)
    training = report.get("training_on_gpu", {})
    passed = all(report[name].get("ok", False) for name in ("ct_cpu_vs_gpu", "dx_cpu_vs_gpu", "floors_on_gpu"))
    if training:
        runs = [item for item in training.values() if isinstance(item, dict)]
        passed = passed and "error" not in training and bool(runs) and all(item["ok"] for item in runs)
    report["passed"] = passed
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"passed": passed}))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
