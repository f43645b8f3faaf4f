"""The durable spool: received instances as Part 10 files, waiting in incoming/ or set aside in failed/."""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from saas.gateway.ledger import LEDGER_NAME, Ledger

INCOMING = "incoming"
FAILED = "failed"
SUFFIX = ".dcm"
PARTIAL_SUFFIX = ".dcm.tmp"
REASON_SUFFIX = ".reason"

# A UID is digits and dots, at most 64 characters. Anything else could climb out of the spool
# as a file name ("../", "/"), so it is refused rather than sanitised into a different name.
UID_PATTERN = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_valid_uid(value: str) -> bool:
    return len(value) <= 64 and UID_PATTERN.fullmatch(value) is not None


class InvalidUid(ValueError):
    pass


@dataclass(frozen=True)
class SpooledInstance:
    sop_instance_uid: str
    path: Path
    size: int
    received_at: float


@dataclass(frozen=True)
class FailedInstance:
    sop_instance_uid: str
    reason: str
    failed_at: float


@dataclass(frozen=True)
class Recovery:
    removed_partial: int
    removed_delivered: int


def _fsync_directory(directory: Path) -> None:
    # A rename is durable only once the directory entry itself reaches the disk.
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_durably(path: Path, partial: Path, data: bytes) -> None:
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        os.fsync(descriptor)
    except BaseException:
        os.close(descriptor)
        partial.unlink(missing_ok=True)
        raise
    os.close(descriptor)
    os.replace(partial, path)
    _fsync_directory(path.parent)


class Spool:
    def __init__(self, root: Path):
        self.root = root
        self.incoming_dir = root / INCOMING
        self.failed_dir = root / FAILED
        for directory in (root, self.incoming_dir, self.failed_dir):
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                # Its entry in the parent must outlive a power cut like the first instance written into it.
                _fsync_directory(directory.parent)
        self.ledger = Ledger(root / LEDGER_NAME)
        # Two associations may carry the same instance at once (a modality retrying after a timeout);
        # they must not write the same .tmp file together. Striped locks keep unrelated UIDs parallel.
        self._uid_locks = [threading.Lock() for _ in range(64)]

    def close(self) -> None:
        self.ledger.close()

    def incoming_path(self, sop_instance_uid: str) -> Path:
        if not is_valid_uid(sop_instance_uid):
            raise InvalidUid(f"not a DICOM UID: {sop_instance_uid!r}")
        return self.incoming_dir / f"{sop_instance_uid}{SUFFIX}"

    def recover(self) -> Recovery:
        """Clear what a crash left behind; run before the SCP accepts and before the forwarder sends."""
        removed_partial = 0
        for partial in self.incoming_dir.glob(f"*{PARTIAL_SUFFIX}"):
            # Never acknowledged to the modality (the answer comes after the rename), so it will be resent.
            partial.unlink(missing_ok=True)
            removed_partial += 1
        # A crash while setting an instance aside: a half-written reason, or a reason written while the
        # instance itself stayed queued (it is still sent, so it is not reported as set aside).
        for reason in self.failed_dir.glob("*.tmp"):
            reason.unlink(missing_ok=True)
        for reason in self.failed_dir.glob(f"*{REASON_SUFFIX}"):
            if not reason.with_suffix(SUFFIX).exists():
                reason.unlink(missing_ok=True)
        spooled = {instance.sop_instance_uid: instance for instance in self.pending()}
        already = self.ledger.delivered_among(spooled)
        for uid in already:
            # The crash fell between the ledger commit and the unlink: delivered, only the file remains.
            spooled[uid].path.unlink(missing_ok=True)
        if removed_partial or already:
            _fsync_directory(self.incoming_dir)
        return Recovery(removed_partial=removed_partial, removed_delivered=len(already))

    def store(self, sop_instance_uid: str, data: bytes) -> Path:
        """Write one received instance durably; only after this returns may the C-STORE be acknowledged."""
        path = self.incoming_path(sop_instance_uid)
        partial = self.incoming_dir / f"{sop_instance_uid}{PARTIAL_SUFFIX}"
        with self._uid_locks[hash(sop_instance_uid) % len(self._uid_locks)]:
            _write_durably(path, partial, data)
        return path

    def pending(self) -> list[SpooledInstance]:
        """Spooled instances, oldest reception first."""
        instances = []
        with os.scandir(self.incoming_dir) as entries:
            for entry in entries:
                # A stray file (an editor's backup, a misnamed copy) is not an instance to send.
                if not entry.name.endswith(SUFFIX) or not is_valid_uid(entry.name[: -len(SUFFIX)]):
                    continue
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue
                instances.append(
                    SpooledInstance(
                        sop_instance_uid=entry.name[: -len(SUFFIX)],
                        path=Path(entry.path),
                        size=info.st_size,
                        received_at=info.st_mtime,
                    )
                )
        instances.sort(key=lambda instance: (instance.received_at, instance.sop_instance_uid))
        return instances

    def settle_delivered(self, sop_instance_uids: Iterable[str]) -> None:
        uids = list(sop_instance_uids)
        # Ledger first: a crash after the commit leaves a file recover() deletes; the other order
        # could lose the record and send the instance a second time.
        self.ledger.record_delivered(uids)
        for uid in uids:
            (self.incoming_dir / f"{uid}{SUFFIX}").unlink(missing_ok=True)
            # A resend that now went through supersedes an earlier permanent refusal.
            (self.failed_dir / f"{uid}{SUFFIX}").unlink(missing_ok=True)
            (self.failed_dir / f"{uid}{REASON_SUFFIX}").unlink(missing_ok=True)
        if uids:
            _fsync_directory(self.incoming_dir)

    def settle_failed(self, sop_instance_uid: str, reason: str) -> None:
        """Set aside an instance the platform will never accept; it is kept for a person, never resent."""
        source = self.incoming_path(sop_instance_uid)
        reason_path = self.failed_dir / f"{sop_instance_uid}{REASON_SUFFIX}"
        _write_durably(reason_path, self.failed_dir / f"{sop_instance_uid}.reason.tmp", reason.encode("utf-8") + b"\n")
        try:
            os.replace(source, self.failed_dir / f"{sop_instance_uid}{SUFFIX}")
        except FileNotFoundError:
            if not (self.failed_dir / f"{sop_instance_uid}{SUFFIX}").exists():
                reason_path.unlink(missing_ok=True)
            return
        _fsync_directory(self.failed_dir)
        _fsync_directory(self.incoming_dir)

    def failed(self) -> list[FailedInstance]:
        failures = []
        for reason_path in sorted(self.failed_dir.glob(f"*{REASON_SUFFIX}")):
            try:
                failures.append(
                    FailedInstance(
                        sop_instance_uid=reason_path.name[: -len(REASON_SUFFIX)],
                        reason=reason_path.read_text(encoding="utf-8").strip(),
                        failed_at=reason_path.stat().st_mtime,
                    )
                )
            except FileNotFoundError:
                continue
        failures.sort(key=lambda failure: failure.failed_at)
        return failures


def oldest_age_seconds(instances: list[SpooledInstance], *, now: float | None = None) -> float | None:
    if not instances:
        return None
    now = time.time() if now is None else now
    return max(0.0, now - instances[0].received_at)


class SpoolBusy(Exception):
    pass


def lock_for_serving(root: Path) -> TextIO:
    """Hold the spool for this process: two forwarders on one spool would send every instance twice."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    handle = open(root / "serve.lock", "a+")  # noqa: SIM115 - held open for the life of `serve`
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SpoolBusy(f"spool_dir: {root} is already served by pid {holder}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
