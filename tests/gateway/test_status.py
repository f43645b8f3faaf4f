"""`status`: the queue, what was set aside and the last error, readable from another process, exit 0."""

import os
import time

from saas.gateway.spool import Spool
from tests.gateway.conftest import clean_environment, gateway_status, run_gateway, storescu, wait_for, write_series


def test_status_json_reports_queue_failures_delivered_count_and_last_error(tmp_path):
    # given a spool with two queued instances (the oldest received 200 s ago), one set aside, one delivered
    spool = Spool(tmp_path / "spool")
    oldest = spool.store("1.2.3.1", b"a" * 100)
    spool.store("1.2.3.2", b"b" * 50)
    os.utime(oldest, (time.time() - 200, time.time() - 200))
    spool.store("1.2.3.3", b"c")
    spool.settle_failed("1.2.3.3", "FailureReason 0xC000 (cannot understand): not DICOM")
    spool.store("1.2.3.4", b"d")
    spool.settle_delivered(["1.2.3.4"])
    spool.ledger.set_state(
        forwarding="retrying", last_error="cannot reach the platform", last_error_at=time.time(), next_attempt_at=None
    )
    spool.close()
    env = {**clean_environment(), "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path / "spool")}
    # when status is asked for JSON
    report = gateway_status(env)
    # then it reports the queue, its age, the set-aside instance with its reason, and the last error with a time
    assert (report["queued_count"], report["queued_bytes"], report["delivered_count"]) == (2, 150, 1)
    assert 199 <= report["oldest_age_seconds"] < 260
    assert report["failed_count"] == 1
    assert report["failed"][0]["sop_instance_uid"] == "1.2.3.3"
    assert report["failed"][0]["reason"] == "FailureReason 0xC000 (cannot understand): not DICOM"
    assert (report["forwarding"], report["last_error"]) == ("retrying", "cannot reach the platform")
    assert report["last_error_at"].endswith("Z") and report["last_success_at"].endswith("Z")
    # and the human form says the same in words
    text = run_gateway("status", env=env)
    assert text.returncode == 0
    assert "queued:          2 instance(s), 150 bytes, oldest 3m" in text.stdout
    assert "last error:      cannot reach the platform at " in text.stdout
    assert "1.2.3.3" in text.stdout and "set aside:       1 in failed/" in text.stdout


def test_status_of_a_spool_that_never_ran_creates_nothing(tmp_path):
    env = {**clean_environment(), "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path / "typo")}
    report = gateway_status(env)
    assert (report["queued_count"], report["forwarding"], report["last_error"]) == (0, "never started", None)
    assert not (tmp_path / "typo").exists()


def test_status_reads_the_spool_while_serve_runs_and_the_platform_is_down(gateway_env, make_gateway, tmp_path):
    # given a running gateway whose platform port is closed
    gateway = make_gateway(gateway_env).start()
    # when a study arrives
    assert storescu(gateway.port, write_series(tmp_path / "study", slices=3)).returncode == 0
    # then status, from another process, shows it queued and why it is not leaving
    report = wait_for(lambda: (r := gateway.status())["last_error"] and r, what="the forwarder's first error")
    assert report["queued_count"] == 3 and report["queued_bytes"] > 0 and report["oldest_age_seconds"] >= 0
    assert report["last_error"].startswith(
        f"cannot reach the platform at {gateway_env['READROOM_GATEWAY_PLATFORM_URL']}"
    )
    assert report["forwarding"] == "retrying" and report["delivered_count"] == 0


def test_status_of_a_spool_it_cannot_read_says_so_without_a_traceback(tmp_path):
    # given a spool whose ledger is damaged (or belongs to a user this one cannot read as)
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "ledger.sqlite3").write_bytes(b"this is not a database" * 100)
    env = {**clean_environment(), "READROOM_GATEWAY_SPOOL_DIR": str(tmp_path / "spool")}
    # when status is asked for
    result = run_gateway("status", env=env)
    # then it exits 2 naming the spool and the reason
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"spool_dir: cannot read {tmp_path / 'spool'}: file is not a database" in result.stderr
