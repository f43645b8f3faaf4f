"""What `status` reports: the queue, the set-aside instances and the forwarder's last outcome, read from the spool."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saas.gateway.ledger import LEDGER_NAME, STATE_KEYS
from saas.gateway.spool import Spool, oldest_age_seconds

# Enough for a person to act on; the full list is the failed/ folder itself.
FAILED_LISTED = 50


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def status_report(spool_dir: Path, *, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    if not (spool_dir / LEDGER_NAME).exists():
        # Do not create a spool (perhaps at a mistyped path) just to report that it is empty.
        pending, failed, delivered_count = [], [], 0
        state = dict.fromkeys(STATE_KEYS)
    else:
        spool = Spool(spool_dir)
        try:
            pending, failed = spool.pending(), spool.failed()
            state, delivered_count = spool.ledger.state(), spool.ledger.delivered_count()
        finally:
            spool.close()
    oldest = oldest_age_seconds(pending, now=now)
    return {
        "spool_dir": str(spool_dir),
        "queued_count": len(pending),
        "queued_bytes": sum(instance.size for instance in pending),
        "oldest_age_seconds": None if oldest is None else round(oldest, 1),
        "delivered_count": delivered_count,
        "failed_count": len(failed),
        "failed": [
            {
                "sop_instance_uid": failure.sop_instance_uid,
                "reason": failure.reason,
                "failed_at": _iso(failure.failed_at),
            }
            for failure in failed[-FAILED_LISTED:]
        ],
        "forwarding": state["forwarding"] or "never started",
        "last_error": state["last_error"],
        "last_error_at": _iso(state["last_error_at"]),
        "last_success_at": _iso(state["last_success_at"]),
        "next_attempt_at": _iso(state["next_attempt_at"]),
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"spool:           {report['spool_dir']}",
        f"queued:          {report['queued_count']} instance(s), {report['queued_bytes']} bytes, "
        f"oldest {_age(report['oldest_age_seconds'])}",
        f"delivered:       {report['delivered_count']}",
        f"forwarding:      {report['forwarding']}"
        + (f" (next attempt {report['next_attempt_at']})" if report["next_attempt_at"] else ""),
        f"last success:    {report['last_success_at'] or '-'}",
        f"last error:      {report['last_error'] or '-'}"
        + (f" at {report['last_error_at']}" if report["last_error"] else ""),
        f"set aside:       {report['failed_count']} in failed/ (never resent)",
    ]
    lines += [f"  {item['sop_instance_uid']}  {item['failed_at']}  {item['reason']}" for item in report["failed"]]
    return "\n".join(lines)
