"""`inference.run` end to end: presigned URLs on the real local S3 server, results checked on the workers' broker."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import redis

from inference_workers.messages import InferenceJob, InferenceResult
from tests.inference_workers.conftest import ROOT, chest_radiograph, new_job_id, tiny_volume

FILENAMES = {"mask": "mask.npz", "findings": "findings.json", "heatmap": "heatmap.npz"}
PA_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def presigned_job(
    s3,
    job_id: str,
    input_bytes: bytes | None,
    *,
    heatmap: bool = True,
    model_name: str = "ct_focal_lesion",
    outputs: tuple[str, ...] | None = None,
) -> tuple[InferenceJob, dict]:
    client, bucket = s3
    input_key = f"ai-inputs/{job_id}.npz"
    if input_bytes is not None:
        client.put_object(Bucket=bucket, Key=input_key, Body=input_bytes)
    if outputs is None:
        outputs = ("mask", "findings", "heatmap") if heatmap else ("mask", "findings")
    output_keys = {name: f"ai-outputs/{job_id}/{FILENAMES[name]}" for name in outputs}
    job = InferenceJob(
        job_id=job_id,
        study_version_key=f"study-{job_id}-v1",
        model_name=model_name,
        model_version="1.0.0",
        input_url=client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": input_key}, ExpiresIn=300
        ),
        output_urls={
            name: client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
            for name, key in output_keys.items()
        },
    )
    return job, output_keys


def results_for(broker_url: str, job_id: str, *, timeout: float, expect: int = 1) -> list[dict]:
    """Take this job's `ai.record_result` messages off the `django` queue (other messages are left alone)."""
    connection = redis.Redis.from_url(broker_url)
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        for raw in connection.lrange("django", 0, -1):
            message = json.loads(raw)
            if message["headers"]["task"] != "ai.record_result":
                continue
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            if args[0]["job_id"] == job_id:
                connection.lrem("django", 1, raw)
                found.append(args[0])
        if len(found) >= expect:
            break
        time.sleep(0.2)
    return found


@pytest.fixture
def inference_app(inference_broker_url, monkeypatch):
    from inference_workers import app as worker_app

    monkeypatch.setenv("INFERENCE_STATE_URL", inference_broker_url)
    worker_app.app.conf.broker_url = inference_broker_url
    worker_app.state.cache_clear()
    yield worker_app
    worker_app.state.cache_clear()


def start_worker(broker_url: str) -> subprocess.Popen:
    env = {**os.environ, "INFERENCE_BROKER_URL": broker_url, "INFERENCE_TORCH_THREADS": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "inference_workers.app", "worker", "-Q", "inference.cpu",
         "--pool", "solo", "-n", f"ai-test-{os.getpid()}@%h", "--without-mingle", "--without-gossip", "-l", "info"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_worker_process_runs_a_job_from_the_queue(s3, inference_broker_url, inference_app):
    # Given a real worker on inference.cpu, and a de-identified volume with a 15 mm lesion behind a presigned URL
    worker = start_worker(inference_broker_url)
    try:
        volume = tiny_volume(diameter_mm=15.0)
        job_id = new_job_id()
        job, output_keys = presigned_job(s3, job_id, volume.npz_bytes(origin=(-80.0, -80.0, -40.0)))

        # When the Django side's message arrives on the pool's queue
        inference_app.app.send_task("inference.run", args=[job.to_dict()], queue="inference.cpu")

        # Then exactly one ok result comes back on the django queue, with a critical finding
        results = results_for(inference_broker_url, job_id, timeout=45)
        assert len(results) == 1, worker.stdout.read() if worker.poll() is not None else "worker still running"
        result = InferenceResult.from_dict(results[0])
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert result.status == "ok", result.error
    assert result.idempotency_key == job.idempotency_key
    assert result.outputs == ("mask", "findings", "heatmap")
    assert result.critical and len(result.findings) == 1
    assert result.device == "cpu"
    assert {"fetch", "preprocess", "forward", "postprocess", "write_back"} <= set(result.timings)
    # And the outputs are in S3: the mask as the box around the lesion within the input grid, the findings
    # document, the heatmap
    client, bucket = s3
    with np.load(io.BytesIO(client.get_object(Bucket=bucket, Key=output_keys["mask"])["Body"].read())) as mask:
        box, offset = mask["mask"], tuple(int(v) for v in mask["offset"])
        assert tuple(mask["shape"]) == volume.voxels.shape and tuple(mask["origin"]) == (-80.0, -80.0, -40.0)
        inside = zip(offset, box.shape, volume.voxels.shape, strict=True)
        assert all(0 <= start and start + size <= total for start, size, total in inside)
        assert box.size < volume.voxels.size / 8
        # cropped to its content: every face of the box touches the lesion
        for axis in range(3):
            assert np.take(box, 0, axis=axis).any() and np.take(box, -1, axis=axis).any()
    document = json.loads(client.get_object(Bucket=bucket, Key=output_keys["findings"])["Body"].read())
    assert document["critical"] is True and "not for clinical use" in document["disclaimer"]
    with np.load(io.BytesIO(client.get_object(Bucket=bucket, Key=output_keys["heatmap"])["Body"].read())) as heatmap:
        assert heatmap["heatmap"].max() > 0.5


def test_worker_process_runs_a_radiograph_job_from_the_queue(s3, inference_broker_url, inference_app):
    # Given a real worker, and a PA chest radiograph with a 20 mm nodule (one frame, 0.2 mm pixels)
    worker = start_worker(inference_broker_url)
    try:
        radiograph = chest_radiograph(nodule_diameter_mm=20.0)
        origin = (-200.0, 0.0, 150.0)
        job_id = new_job_id()
        job, output_keys = presigned_job(
            s3,
            job_id,
            radiograph.npz_bytes(orientation=PA_ORIENTATION, origin=origin),
            model_name="dx_chest_triage",
            outputs=("findings", "heatmap"),
        )

        # When the Django side's dx job (findings and heatmap URLs, no mask) arrives on the pool's queue
        inference_app.app.send_task("inference.run", args=[job.to_dict()], queue="inference.cpu")

        # Then one ok result comes back with the nodule finding and its probability as a score
        results = results_for(inference_broker_url, job_id, timeout=45)
        assert len(results) == 1, worker.stdout.read() if worker.poll() is not None else "worker still running"
        result = InferenceResult.from_dict(results[0])
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    assert result.status == "ok", result.error
    assert result.outputs == ("findings", "heatmap")
    (finding,) = result.findings
    assert finding.label == "nodule_opacity" and finding.volume_ml == 0.0
    assert result.scores == {"nodule_opacity": finding.confidence}
    assert {"fetch", "preprocess", "forward", "postprocess", "write_back"} <= set(result.timings)
    # The finding is at the nodule: in pixels, and in patient mm (rows along +x, columns along -z)
    nodule_index = radiograph.nodule_index()
    pixel_mm = np.asarray(radiograph.spacing[1:])
    assert np.linalg.norm((np.asarray(finding.centre_voxel[1:]) - nodule_index) * pixel_mm) < 15.0
    expected_mm = (origin[0] + nodule_index[1] * pixel_mm[1], 0.0, origin[2] - nodule_index[0] * pixel_mm[0])
    assert np.linalg.norm(np.asarray(finding.centre_mm) - expected_mm) < 15.0
    # And the heatmap in S3 covers the input on its own grid and peaks near the nodule
    client, bucket = s3
    with np.load(io.BytesIO(client.get_object(Bucket=bucket, Key=output_keys["heatmap"])["Body"].read())) as heatmap:
        values, spacing = heatmap["heatmap"], heatmap["spacing"]
        assert values.dtype == np.float16 and values.shape == (1, 256, 256)
        assert tuple(heatmap["orientation"]) == PA_ORIENTATION
        assert np.allclose(spacing[1:] * 256, pixel_mm * radiograph.voxels.shape[1:])
        # The heatmap grid's first pixel centre lies half a heatmap pixel inside the input's outer edge.
        first = (spacing[1:] / pixel_mm) * 0.5 - 0.5
        expected_origin = (origin[0] + first[1] * pixel_mm[1], 0.0, origin[2] - first[0] * pixel_mm[0])
        assert np.allclose(heatmap["origin"], expected_origin, atol=0.01)
        peak = np.array(np.unravel_index(int(np.argmax(values[0])), values.shape[1:]), dtype=float)
        assert np.linalg.norm((peak + 0.5) * spacing[1:] - np.asarray(radiograph.nodule.centre_mm)) < 20.0
    document = json.loads(client.get_object(Bucket=bucket, Key=output_keys["findings"])["Body"].read())
    assert document["scores"] == {"nodule_opacity": finding.confidence}
    assert "not for clinical use" in document["disclaimer"]


def test_a_radiograph_without_a_nodule_reports_its_score_and_no_finding(s3, inference_broker_url, inference_app):
    radiograph = chest_radiograph(nodule_diameter_mm=None)
    job, output_keys = presigned_job(
        s3, new_job_id(), radiograph.npz_bytes(), model_name="dx_chest_triage", outputs=("findings", "heatmap")
    )

    inference_app.run_inference.apply(args=[job.to_dict()])

    (data,) = results_for(inference_broker_url, job.job_id, timeout=5)
    result = InferenceResult.from_dict(data)
    assert result.status == "ok" and result.findings == () and not result.critical
    assert 0.0 <= result.scores["nodule_opacity"] < 0.5
    client, bucket = s3
    document = json.loads(client.get_object(Bucket=bucket, Key=output_keys["findings"])["Body"].read())
    assert document["findings"] == [] and document["critical"] is False


@pytest.mark.parametrize(
    ("model_name", "outputs", "error"),
    [
        ("dx_chest_triage", ("mask", "findings"), "output_urls.heatmap is required by model dx_chest_triage"),
        ("ct_focal_lesion", ("findings", "heatmap"), "output_urls.mask is required by model ct_focal_lesion"),
        ("dx_chest_triage", ("mask", "findings", "heatmap"), "output_urls.mask: model dx_chest_triage does not write"),
    ],
)
def test_a_job_without_the_urls_its_model_needs_is_refused(
    s3, inference_broker_url, inference_app, model_name, outputs, error
):
    # The message schema only requires findings; which other outputs a model needs is its bundle's to say.
    job, _ = presigned_job(s3, new_job_id(), tiny_volume().npz_bytes(), model_name=model_name, outputs=outputs)

    inference_app.run_inference.apply(args=[job.to_dict()])

    (result,) = results_for(inference_broker_url, job.job_id, timeout=5)
    assert result["status"] == "failed" and error in result["error"]
    client, bucket = s3
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"ai-outputs/{job.job_id}/")
    assert listed.get("KeyCount", 0) == 0


def test_a_multi_frame_input_is_refused_by_the_radiograph_model(s3, inference_broker_url, inference_app):
    volume = tiny_volume()
    job, _ = presigned_job(
        s3, new_job_id(), volume.npz_bytes(), model_name="dx_chest_triage", outputs=("findings", "heatmap")
    )

    inference_app.run_inference.apply(args=[job.to_dict()])

    (result,) = results_for(inference_broker_url, job.job_id, timeout=5)
    assert result["status"] == "failed" and "input refused by dx_chest_triage" in result["error"]
    assert "one frame" in result["error"]


def test_a_job_that_already_has_a_result_is_not_run_twice(s3, inference_broker_url, inference_app):
    volume = tiny_volume(diameter_mm=8.0, seed=3)
    job, _ = presigned_job(s3, new_job_id(), volume.npz_bytes(), heatmap=False)

    inference_app.run_inference.apply(args=[job.to_dict()])
    inference_app.run_inference.apply(args=[job.to_dict()])

    results = results_for(inference_broker_url, job.job_id, timeout=5, expect=2)
    assert len(results) == 1
    assert results[0]["status"] == "ok" and results[0]["outputs"] == ["mask", "findings"]


def test_an_expired_or_missing_input_ends_in_one_failed_result(s3, inference_broker_url, inference_app):
    # The input was never uploaded: S3 answers 404, which no retry can fix.
    job, output_keys = presigned_job(s3, new_job_id(), None)

    inference_app.run_inference.apply(args=[job.to_dict()])

    (result,) = results_for(inference_broker_url, job.job_id, timeout=5)
    assert result["status"] == "failed" and "GET answered 404" in result["error"]
    client, bucket = s3
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"ai-outputs/{job.job_id}/")
    assert listed.get("KeyCount", 0) == 0


def test_an_input_with_extra_arrays_is_refused(s3, inference_broker_url, inference_app):
    volume = tiny_volume()
    buffer = io.BytesIO()
    np.savez(buffer, voxels=volume.voxels, spacing=np.asarray(volume.spacing), orientation=np.zeros(6),
             origin=np.zeros(3), patient_name=np.asarray("Doe^Jane"))  # fmt: skip
    job, _ = presigned_job(s3, new_job_id(), buffer.getvalue())

    inference_app.run_inference.apply(args=[job.to_dict()])

    (result,) = results_for(inference_broker_url, job.job_id, timeout=5)
    assert result["status"] == "failed" and "patient_name" in result["error"]


def test_a_malformed_job_is_answered_with_a_failed_result(inference_broker_url, inference_app):
    job_id = new_job_id()

    inference_app.run_inference.apply(args=[{"schema_version": 1, "job_id": job_id, "model_name": "ct_focal_lesion"}])

    (result,) = results_for(inference_broker_url, job_id, timeout=5)
    assert result["status"] == "failed" and "invalid job" in result["error"]
