"""Print each pool's backlog (queue depth, oldest job age) as JSON: the signal the cloud autoscaler scales on.

INFERENCE_BROKER_URL=redis://... python -m inference_workers.backlog [--prometheus]
"""

from __future__ import annotations

import argparse
import base64
import json
import time

import redis

from inference_workers.app import BROKER_URL, QUEUES


def _dispatched_at(raw: bytes) -> float | None:
    try:
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        return float(args[0].get("dispatched_at") or 0.0) or None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def backlog(connection: redis.Redis, *, now: float | None = None) -> dict[str, dict[str, float]]:
    """Depth and oldest-job age per pool queue; kombu pushes on the left, so the oldest job is the last item."""
    now = time.time() if now is None else now
    pools = {}
    for queue in QUEUES:
        depth = connection.llen(queue)
        oldest = _dispatched_at(connection.lindex(queue, -1)) if depth else None
        pools[queue] = {"depth": depth, "oldest_age_seconds": round(max(0.0, now - oldest), 1) if oldest else 0.0}
    return pools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", action="store_true", help="Prometheus text format instead of JSON")
    args = parser.parse_args()
    pools = backlog(redis.Redis.from_url(BROKER_URL))
    if not args.prometheus:
        print(json.dumps(pools))
        return
    print("# TYPE readroom_inference_queue_depth gauge")
    for queue, values in pools.items():
        print(f'readroom_inference_queue_depth{{queue="{queue}"}} {values["depth"]}')
    print("# TYPE readroom_inference_oldest_job_age_seconds gauge")
    for queue, values in pools.items():
        print(f'readroom_inference_oldest_job_age_seconds{{queue="{queue}"}} {values["oldest_age_seconds"]}')


if __name__ == "__main__":
    main()
