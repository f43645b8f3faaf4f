"""The gateway's durable memory: which SOP instances the platform acknowledged, and the forwarder's last state."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LEDGER_NAME = "ledger.sqlite3"

# Keys of the state table that `status` shows; written by the forwarder, read by any process.
STATE_KEYS = ("forwarding", "last_error", "last_error_at", "last_success_at", "next_attempt_at")

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    sop_instance_uid TEXT PRIMARY KEY,
    delivered_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT
) WITHOUT ROWID;
"""
UPSERT_STATE = "INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


class Ledger:
    """SQLite in the spool directory; one connection shared by the SCP and forwarder threads under a lock."""

    def __init__(self, path: Path):
        self.path = path
        # Autocommit mode: every statement below is its own transaction unless wrapped explicitly.
        self._connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            # WAL lets `status` read from another process while `serve` writes; synchronous=FULL makes
            # a committed delivery survive a power cut, which the at-most-once promise rests on.
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.executescript(SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def is_delivered(self, sop_instance_uid: str) -> bool:
        with self._lock:
            row = self._connection.execute(
                "SELECT 1 FROM delivered WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return row is not None

    def delivered_among(self, sop_instance_uids: Iterable[str]) -> set[str]:
        uids = list(sop_instance_uids)
        found: set[str] = set()
        with self._lock:
            # SQLite caps bound parameters; 500 per query stays far below every build's limit.
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                placeholders = ",".join("?" * len(chunk))
                rows = self._connection.execute(
                    f"SELECT sop_instance_uid FROM delivered WHERE sop_instance_uid IN ({placeholders})",  # noqa: S608
                    chunk,
                )
                found.update(row[0] for row in rows)
        return found

    def record_delivered(self, sop_instance_uids: Iterable[str], *, at: float | None = None) -> None:
        at = time.time() if at is None else at
        rows = [(uid, at) for uid in sop_instance_uids]
        if not rows:
            return
        with self._transaction() as connection:
            connection.executemany(
                "INSERT OR IGNORE INTO delivered (sop_instance_uid, delivered_at) VALUES (?, ?)", rows
            )
            connection.execute(UPSERT_STATE, ("last_success_at", json.dumps(at)))

    def delivered_count(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT count(*) FROM delivered").fetchone()[0]

    def set_state(self, **values: Any) -> None:
        unknown = set(values) - set(STATE_KEYS)
        if unknown:
            raise ValueError(f"unknown state keys: {sorted(unknown)}")
        # One transaction, so `status` never shows an error with the time of the one before.
        with self._transaction() as connection:
            connection.executemany(UPSERT_STATE, [(key, json.dumps(value)) for key, value in values.items()])

    def state(self) -> dict[str, Any]:
        with self._lock:
            rows = self._connection.execute("SELECT key, value FROM state").fetchall()
        stored = {key: json.loads(value) for key, value in rows}
        return {key: stored.get(key) for key in STATE_KEYS}
