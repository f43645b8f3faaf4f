"""The autoscaling signal: depth and oldest-job age per pool, read from the workers' broker."""

from __future__ import annotations

import time

import redis

from inference_workers.backlog import backlog
from inference_workers.messages import InferenceJob
from tests.inference_workers.conftest import new_job_id


def test_backlog_counts_waiting_jobs_and_ages_the_oldest(inference_broker_url):
    from inference_workers import app as worker_app

    worker_app.app.conf.broker_url = inference_broker_url
    connection = redis.Redis.from_url(inference_broker_url)
    connection.delete("inference.gpu")  # no GPU worker runs in tests; start from an empty pool queue
    job = InferenceJob(
        job_id=new_job_id(),
        study_version_key="s-v1",
        model_name="ct_focal_lesion",
        model_version="1.0.0",
        input_url="http://127.0.0.1:9000/b/in.npz",
        output_urls={"mask": "http://127.0.0.1:9000/b/m", "findings": "http://127.0.0.1:9000/b/f"},
        dispatched_at=time.time() - 42.0,
    )
    try:
        worker_app.app.send_task("inference.run", args=[job.to_dict()], queue="inference.gpu")

        pools = backlog(connection)
    finally:
        connection.delete("inference.gpu")

    assert pools["inference.gpu"]["depth"] == 1
    assert 41.0 <= pools["inference.gpu"]["oldest_age_seconds"] <= 60.0
