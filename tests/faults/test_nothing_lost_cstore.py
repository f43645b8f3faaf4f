"""Nothing lost on the C-STORE path: kill -9 a Celery worker or the tenant's Orthanc, or stop S3 for 30 s, mid-send.

A registered modality sends 500 instances (10 CT studies of 50 slices) straight to the clinic's AE
title, one association per 10 instances, and resends what the SCP did not acknowledge. After the
platform recovers, what the modality was told is checked against Orthanc, the index and the S3
archive (`assert_nothing_lost`). The web process is not on this path: killing it changes nothing.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import (
    FAULT_AT,
    RESTART_AFTER_SECONDS,
    S3_OUTAGE_SECONDS,
    CStoreSender,
    StowSender,
    archived_count,
    assert_nothing_lost,
    kill_9_tenant_orthanc,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.orthanc, pytest.mark.timeout(480)]

MODALITY_AE_TITLE = "FAULTS_CT"


@pytest.fixture
def send(platform, start_sender):
    """Start the clinic's registered modality sending by C-STORE."""

    def start(tenant, instances: dict[str, bytes]) -> CStoreSender:
        return start_sender(
            CStoreSender(
                host="127.0.0.1",
                port=tenant.dicom_port,
                called_ae_title=tenant.dicom_ae_title,
                calling_ae_title=MODALITY_AE_TITLE,
                instances=instances,
            )
        )

    return start


def test_kill_9_of_the_celery_worker_mid_c_store_send_loses_nothing(platform, instances, send):
    # given a modality sending 500 instances, with the worker indexing and archiving them as they arrive
    tenant, _ = platform.tenant_with_modality(ae_title=MODALITY_AE_TITLE)
    sender = send(tenant, instances)
    sender.wait_for_progress(FAULT_AT)
    wait_for(lambda: archived_count(tenant) > 0, timeout=60, interval=0.2, what="the archive to start")
    # when the worker (and its pool) is killed mid-send and comes back two seconds later
    platform.worker.kill()
    time.sleep(RESTART_AFTER_SECONDS)
    platform.worker.start()
    sender.finish()
    # then the modality never noticed: every C-STORE was answered with success
    assert len(sender.acknowledged) == len(instances), sender.summary()
    assert set(sender.statuses) == {"0x0000"} and not sender.request_errors, sender.summary()
    # and what the dead worker held (a sync, archive batches) is made good by beat's sync and the sweeper
    assert_nothing_lost(tenant, sender)


def test_kill_9_of_the_tenant_orthanc_mid_c_store_send_loses_nothing(platform, instances, send):
    # given a modality sending 500 instances
    tenant, _ = platform.tenant_with_modality(ae_title=MODALITY_AE_TITLE)
    sender = send(tenant, instances)
    # when the clinic's Orthanc (the SCP itself) is killed mid-association and started again two seconds later
    sender.wait_for_progress(FAULT_AT)
    sender.wait_mid_request()
    kill_9_tenant_orthanc(tenant, down_for=RESTART_AFTER_SECONDS)
    sender.finish()
    # then the modality's association broke (pynetdicom reports an abort, or a request left without any
    # response, depending on when the process died), so it was never told those instances were stored
    assert sender.request_errors["aborted"] + sender.request_errors["no response"] > 0, sender.summary()
    unanswered = {uid for uid, reasons in sender.failures.items() if any("aborted" in reason for reason in reasons)}
    assert unanswered, sender.summary()
    # and its resends were all taken; every acknowledged instance is in Orthanc, the index and S3 once
    assert len(sender.acknowledged) == len(instances), sender.summary()
    assert_nothing_lost(tenant, sender)


def test_s3_stopped_for_30_seconds_mid_c_store_send_loses_nothing(platform, instances, send):
    # given a modality sending 500 instances, with the archive under way
    tenant, _ = platform.tenant_with_modality(ae_title=MODALITY_AE_TITLE)
    sender = send(tenant, instances)
    sender.wait_for_progress(FAULT_AT)
    wait_for(lambda: archived_count(tenant) > 0, timeout=60, interval=0.2, what="the archive to start")
    # when the S3 server is gone for 30 seconds mid-send (hung, then dead, then back)
    platform.stop_s3_for(S3_OUTAGE_SECONDS)
    sender.finish()
    # then C-STORE never depended on S3
    assert len(sender.acknowledged) == len(instances), sender.summary()
    assert set(sender.statuses) == {"0x0000"} and not sender.request_errors, sender.summary()
    # and the archive caught up once S3 answered again
    assert_nothing_lost(tenant, sender)


def test_kill_9_of_the_web_process_mid_c_store_send_changes_nothing(platform, instances, send):
    # given a modality sending 500 instances
    tenant, _ = platform.tenant_with_modality(ae_title=MODALITY_AE_TITLE)
    sender = send(tenant, instances)
    sender.wait_for_progress(FAULT_AT)
    # when gunicorn (master and workers) is killed mid-send
    platform.web.kill()
    # then the modality goes on being answered while no web process runs at all
    sender.wait_for_progress(sender.progress + 50)
    assert not platform.web.alive()
    platform.web.start()
    sender.finish()
    # and it never saw a failure, and everything it sent is in Orthanc, the index and S3 exactly once
    assert len(sender.acknowledged) == len(instances), sender.summary()
    assert set(sender.statuses) == {"0x0000"} and not sender.request_errors, sender.summary()
    assert_nothing_lost(tenant, sender)


def test_the_same_instances_sent_twice_by_c_store_and_again_by_stow_are_stored_once(
    platform, instances, send, start_sender
):
    # given 20 instances a modality has sent by C-STORE and the clinic's Orthanc acknowledged
    tenant, token = platform.tenant_with_modality(ae_title=MODALITY_AE_TITLE)
    twenty = dict(list(instances.items())[:20])
    first = send(tenant, twenty)
    first.finish()
    # when the modality sends the same 20 again, and the clinic's gateway sends them once more by STOW-RS
    again = send(tenant, twenty)
    again.finish()
    stow = start_sender(StowSender(url=platform.url, slug=tenant.slug, token=token, instances=twenty))
    stow.finish()
    # then every send was acknowledged in full
    assert first.acknowledged == again.acknowledged == stow.acknowledged == set(twenty)
    # and Orthanc, the index and S3 each hold the 20 once
    held = assert_nothing_lost(tenant, again)
    assert len(held.orthanc_uids) == held.index_rows == 20
    assert sum(rows for _, rows in held.study_counts.values()) == 20
