"""Inference worker fixtures: tiny CT volumes, chest radiographs, the local S3 server and our own Redis database."""

from __future__ import annotations

import dataclasses
import io
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from inference_workers.synthetic import Ellipsoid, Lesion, random_phantom, render
from inference_workers.synthetic_dx import Nodule, lung_air, random_chest, random_exposure, render_radiograph

ROOT = Path(__file__).resolve().parents[2]


def local_env() -> dict[str, str]:
    values = {}
    env_file = ROOT / "var" / "local.env"
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return {**values, **{key: value for key, value in os.environ.items() if key in values}}


@dataclasses.dataclass
class TinyVolume:
    voxels: np.ndarray
    spacing: tuple[float, float, float]
    labels: np.ndarray
    lesion: Lesion

    def npz_bytes(self, **geometry) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            voxels=self.voxels,
            spacing=np.asarray(self.spacing),
            orientation=np.asarray(geometry.get("orientation", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))),
            origin=np.asarray(geometry.get("origin", (0.0, 0.0, 0.0))),
        )
        return buffer.getvalue()


def tiny_volume(*, diameter_mm: float = 15.0, seed: int = 7) -> TinyVolume:
    """A 36 x 112 x 112 body slab at 2.5 x 1.4 x 1.4 mm with one lesion in the soft tissue near the centre."""
    rng = np.random.default_rng(seed)
    shape, spacing = (36, 112, 112), (2.5, 1.4, 1.4)
    extent = tuple(n * s for n, s in zip(shape, spacing, strict=True))
    phantom = random_phantom(rng, extent_mm=extent, lesion_count=0, noise_range_hu=(12.0, 12.0))
    cy, cx = phantom.body_centre_yx
    lesion = Lesion(Ellipsoid((extent[0] / 2, cy - 10.0, cx + 5.0), (diameter_mm / 2,) * 3), delta_hu=80.0)
    phantom = dataclasses.replace(phantom, lesions=(lesion,), organs=())
    voxels, labels = render(phantom, shape=shape, spacing=spacing, rng=rng)
    return TinyVolume(voxels=voxels, spacing=spacing, labels=labels, lesion=lesion)


@dataclasses.dataclass
class ChestRadiograph:
    voxels: np.ndarray
    spacing: tuple[float, float, float]
    nodule: Nodule | None

    def npz_bytes(self, **geometry) -> bytes:
        return TinyVolume.npz_bytes(self, **geometry)

    def nodule_index(self) -> np.ndarray:
        """The nodule centre as a (y, x) pixel index: pixel j's centre is at (j + 0.5) * spacing on the detector."""
        return np.asarray(self.nodule.centre_mm) / np.asarray(self.spacing[1:]) - 0.5


def chest_radiograph(*, nodule_diameter_mm: float | None = 20.0, seed: int = 11, pixel_mm: float = 0.2):
    """A whole PA chest at a native detector spacing; with a nodule in the mid right lung, or the same chest without."""
    rng = np.random.default_rng(seed)
    anatomy = random_chest(rng)
    exposure = random_exposure(rng, anatomy)
    nodule = None
    if nodule_diameter_mm is not None:
        # Mid-zone of the image-left lung, away from the heart, nudged until it sits in aerated lung.
        centre_y = anatomy.lung_apex_y + 0.5 * anatomy.lung_height
        candidates = anatomy.side_centre_x(-1) + np.arange(0.0, 40.0, 2.0)
        air = lung_air(anatomy, np.full((1, len(candidates)), centre_y), candidates[None])[0]
        centre_x = float(candidates[int(np.argmax(air >= 0.6))])
        nodule = Nodule(centre_mm=(centre_y, centre_x), diameter_mm=nodule_diameter_mm, density=1.4, edge_mm=1.0)
    voxels = render_radiograph(anatomy, exposure, (nodule,) if nodule else (), pixel_mm=pixel_mm, rng=rng)
    spacing = (1.0, anatomy.extent_mm[0] / voxels.shape[1], anatomy.extent_mm[1] / voxels.shape[2])
    return ChestRadiograph(voxels=voxels, spacing=spacing, nodule=nodule)


@pytest.fixture(scope="session")
def dx_pipeline():
    from inference_workers.pipelines.dx_chest_triage import DxChestTriagePipeline

    return DxChestTriagePipeline()


@pytest.fixture(scope="session")
def ct_pipeline():
    from inference_workers.pipelines.ct_focal_lesion import CtFocalLesionPipeline

    return CtFocalLesionPipeline()


@pytest.fixture
def s3():
    """A boto3 client on the local S3 server and a bucket for this test run's objects."""
    import boto3
    from botocore.config import Config

    env = local_env()
    if "AWS_ENDPOINT_URL_S3" not in env:
        pytest.skip("the local stack is not up (var/local.env missing): run `make up`")
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    bucket = "rrtest-inference"
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            raise
    return client, bucket


@pytest.fixture
def inference_broker_url():
    """The workers' broker for tests: a Redis database nobody else uses (INFERENCE_TEST_REDIS_DB, default 9)."""
    env = local_env()
    redis_url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    return urlsplit(redis_url)._replace(path="/" + os.environ.get("INFERENCE_TEST_REDIS_DB", "9")).geturl()


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"
