"""Nothing lost: kill -9 the web process, a Celery worker or the tenant's Orthanc, or stop S3 for 30 s, mid-send.

Each fault test sends 500 instances (10 CT studies of 50 slices) by STOW-RS while the fault
happens, lets the platform recover, then checks what the sender was told against Orthanc,
the index and the S3 archive (see `assert_nothing_lost`). The C-STORE path is in
test_nothing_lost_cstore.py.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import (
    FAULT_AT,
    PROCESSING_FAILURE,
    RESTART_AFTER_SECONDS,
    S3_OUTAGE_SECONDS,
    StowSender,
    archived_count,
    assert_nothing_lost,
    kill_9_tenant_orthanc,
    wait_for,
)

# Archiving 500 instances takes minutes on two busy cores; the default 300 s is too tight.
pytestmark = [pytest.mark.faults, pytest.mark.orthanc, pytest.mark.timeout(480)]


@pytest.fixture
def send(platform, start_sender):
    """Start a STOW-RS sender for a clinic."""

    def start(tenant, token, instances: dict[str, bytes]) -> StowSender:
        return start_sender(StowSender(url=platform.url, slug=tenant.slug, token=token, instances=instances))

    return start


def test_kill_9_of_the_web_process_mid_send_loses_nothing(platform, instances, send):
    # given a clinic receiving 500 instances
    tenant, token = platform.tenant_with_token()
    sender = send(tenant, token, instances)
    # when gunicorn (master and workers) is killed mid-send and comes back two seconds later
    sender.wait_for_progress(FAULT_AT)
    sender.wait_mid_request()
    platform.web.kill()
    time.sleep(RESTART_AFTER_SECONDS)
    platform.web.start()
    sender.finish()
    # then the sender saw the kill as a request broken mid-way (and refusals while the web was down),
    # resent them, and all were taken in the end
    assert sender.request_errors["aborted"] > 0, sender.summary()
    assert len(sender.acknowledged) == len(instances), sender.summary()
    # and everything acknowledged is in Orthanc, the index and S3 exactly once
    assert_nothing_lost(tenant, sender)


def test_kill_9_of_the_celery_worker_mid_send_loses_nothing(platform, instances, send):
    # given a clinic receiving 500 instances, with the worker indexing and archiving them as they arrive
    tenant, token = platform.tenant_with_token()
    sender = send(tenant, token, instances)
    sender.wait_for_progress(FAULT_AT)
    wait_for(lambda: archived_count(tenant) > 0, timeout=60, interval=0.2, what="the archive to start")
    # when the worker (and its pool) is killed mid-send and comes back two seconds later
    platform.worker.kill()
    time.sleep(RESTART_AFTER_SECONDS)
    platform.worker.start()
    sender.finish()
    # then the sender never noticed (ingest does not wait for the worker)
    assert len(sender.acknowledged) == len(instances), sender.summary()
    # and what the dead worker held is made good by beat's sync and the archive sweeper
    assert_nothing_lost(tenant, sender)


def test_kill_9_of_the_tenant_orthanc_mid_send_loses_nothing(platform, instances, send):
    # given a clinic receiving 500 instances
    tenant, token = platform.tenant_with_token()
    sender = send(tenant, token, instances)
    # when the clinic's Orthanc is killed mid-send and its supervisor starts it again two seconds later
    sender.wait_for_progress(FAULT_AT)
    sender.wait_mid_request()
    kill_9_tenant_orthanc(tenant, down_for=RESTART_AFTER_SECONDS)
    sender.finish()
    # then the platform told the sender which parts it could not store (0x0110), never a server error
    assert sender.failure_reasons[PROCESSING_FAILURE] > 0, sender.summary()
    assert not [status for status in sender.statuses if status >= 500], sender.summary()
    # and the sender's resends were all taken; nothing acknowledged is missing anywhere
    assert len(sender.acknowledged) == len(instances), sender.summary()
    assert_nothing_lost(tenant, sender)


def test_s3_stopped_for_30_seconds_mid_send_loses_nothing(platform, instances, send):
    # given a clinic receiving 500 instances
    tenant, token = platform.tenant_with_token()
    sender = send(tenant, token, instances)
    sender.wait_for_progress(FAULT_AT)
    wait_for(lambda: archived_count(tenant) > 0, timeout=60, interval=0.2, what="the archive to start")
    # when the S3 server is gone for 30 seconds mid-send (hung, then dead, then back)
    platform.stop_s3_for(S3_OUTAGE_SECONDS)
    sender.finish()
    # then ingest never depended on S3
    assert len(sender.acknowledged) == len(instances), sender.summary()
    # and the archive caught up once S3 answered again
    assert_nothing_lost(tenant, sender)


def test_the_same_instances_sent_twice_are_stored_once(platform, instances, send):
    # given 20 instances a clinic has sent and the platform acknowledged
    tenant, token = platform.tenant_with_token()
    twenty = dict(list(instances.items())[:20])
    first = send(tenant, token, twenty)
    first.finish()
    # when the clinic sends the same 20 again
    again = send(tenant, token, twenty)
    again.finish()
    # then both sends were acknowledged in full
    assert first.acknowledged == again.acknowledged == set(twenty)
    # and Orthanc, the index and S3 each hold the 20 once
    held = assert_nothing_lost(tenant, again)
    assert len(held.orthanc_uids) == held.index_rows == 20
    assert sum(rows for _, rows in held.study_counts.values()) == 20
