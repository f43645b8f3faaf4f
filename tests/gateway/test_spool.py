"""The spool: a reception is on disk, file and directory entry, before it is acknowledged; a crash leaves no harm."""

import os
from pathlib import Path

import pytest

from saas.gateway.spool import InvalidUid, Spool
from saas.studies.synthetic import ct_series, dataset_bytes

UID = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    yield spool
    spool.close()


def _name(descriptor: int) -> str:
    return os.readlink(f"/proc/self/fd/{descriptor}")


def test_a_stored_instance_is_synced_then_renamed_then_its_directory_synced(spool, monkeypatch):
    # given a record of the file system calls that make a reception durable
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", _name(fd))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("rename", f"{a} -> {b}")), real_replace(a, b))[1])
    # when an instance is stored
    path = spool.store(UID, b"DICOM bytes")
    # then the data is synced under the .tmp name, renamed to .dcm, and then the directory entry is synced
    incoming = spool.incoming_dir
    assert calls == [
        ("fsync", f"{incoming}/{UID}.dcm.tmp"),
        ("rename", f"{incoming}/{UID}.dcm.tmp -> {incoming}/{UID}.dcm"),
        ("fsync", str(incoming)),
    ]
    assert path.read_bytes() == b"DICOM bytes" and not list(incoming.glob("*.tmp"))


def test_recovery_removes_incomplete_receptions_and_files_already_delivered(spool):
    # given a crash mid-reception (.tmp), one mid-delivery (ledger written, file not yet removed) and one queued
    (spool.incoming_dir / f"{UID}.9.dcm.tmp").write_bytes(b"half an instance")
    spool.store(f"{UID}.2", b"delivered")
    spool.ledger.record_delivered([f"{UID}.2"])
    spool.store(f"{UID}.3", b"queued")
    # when the spool is recovered
    recovery = spool.recover()
    # then only the queued instance remains
    assert (recovery.removed_partial, recovery.removed_delivered) == (1, 1)
    assert [instance.sop_instance_uid for instance in spool.pending()] == [f"{UID}.3"]


def test_recovery_clears_what_a_crash_left_while_setting_an_instance_aside(spool):
    # given a crash while writing a reason (.tmp), and one after the reason but before the instance moved
    (spool.failed_dir / f"{UID}.4.reason.tmp").write_bytes(b"half a reason")
    spool.store(f"{UID}.5", b"still queued")
    (spool.failed_dir / f"{UID}.5.reason").write_text("refused\n")
    # when the spool is recovered
    spool.recover()
    # then nothing half-written remains, and the still queued instance is not reported as set aside
    assert sorted(path.name for path in spool.failed_dir.iterdir()) == []
    assert spool.failed() == [] and [instance.sop_instance_uid for instance in spool.pending()] == [f"{UID}.5"]


def test_delivery_is_recorded_in_the_ledger_and_survives_a_new_process(tmp_path):
    # given two instances, one delivered
    spool = Spool(tmp_path / "spool")
    spool.store(f"{UID}.1", b"a")
    spool.store(f"{UID}.2", b"b")
    spool.settle_delivered([f"{UID}.1"])
    spool.close()
    # when the spool is opened again (another process, after a restart)
    again = Spool(tmp_path / "spool")
    # then the ledger remembers the delivery and the file is gone
    assert again.ledger.is_delivered(f"{UID}.1") and not again.ledger.is_delivered(f"{UID}.2")
    assert [instance.sop_instance_uid for instance in again.pending()] == [f"{UID}.2"]
    assert again.ledger.delivered_count() == 1 and again.ledger.state()["last_success_at"] is not None
    journal = again.ledger._connection.execute("PRAGMA journal_mode").fetchone()[0]
    again.close()
    assert journal == "wal"


def test_pending_is_oldest_reception_first(spool):
    for index, uid in enumerate([f"{UID}.30", f"{UID}.10", f"{UID}.20"]):
        path = spool.store(uid, b"x" * (index + 1))
        os.utime(path, ns=(1_000_000_000 * (index + 1),) * 2)
    assert [instance.sop_instance_uid for instance in spool.pending()] == [f"{UID}.30", f"{UID}.10", f"{UID}.20"]
    assert [instance.size for instance in spool.pending()] == [1, 2, 3]
    # and files that are not named by a UID are no instances to send
    (spool.incoming_dir / "notes.dcm").write_bytes(b"x")
    (spool.incoming_dir / f"{UID}.40.dcm~").write_bytes(b"x")
    assert len(spool.pending()) == 3


@pytest.mark.parametrize("uid", ["../../etc/passwd", "1.2.3/4", "1.2.3.dcm", "", "1." + "2" * 70, "1.2 .3"])
def test_a_uid_that_is_not_a_uid_never_becomes_a_file_name(spool, uid):
    with pytest.raises(InvalidUid):
        spool.store(uid, b"hostile")
    assert list(spool.incoming_dir.iterdir()) == []
    assert not (Path(spool.root).parent / "etc").exists()


def test_a_permanent_failure_is_set_aside_with_its_reason_and_cleared_by_a_later_delivery(spool):
    # given a spooled instance the platform refused for good
    spool.store(UID, dataset_bytes(ct_series(patient_id="S", patient_name="S^S", accession_number="A", slices=1)[0]))
    spool.settle_failed(UID, "FailureReason 0xC000 (cannot understand): not DICOM")
    # then it left the queue for failed/, with its reason beside it
    assert spool.pending() == []
    assert (spool.failed_dir / f"{UID}.dcm").exists()
    [failure] = spool.failed()
    assert (failure.sop_instance_uid, failure.reason) == (UID, "FailureReason 0xC000 (cannot understand): not DICOM")
    # when the modality resends a corrected instance and it is delivered, then the old refusal is gone
    spool.store(UID, b"corrected")
    spool.settle_delivered([UID])
    assert spool.failed() == [] and list(spool.failed_dir.iterdir()) == []
