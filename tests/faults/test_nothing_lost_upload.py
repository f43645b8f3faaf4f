"""Nothing lost on the upload page's path: kill -9 the web process mid-upload, resume, finish, every file accounted for.

The sender speaks the page's protocol (`UploadSender`): 500 instances as one .zip per study, sent in
chunks; after the web process comes back it resumes each broken file from the offset the server
reports, finishes the batch and reads the summary, which must account for every instance; then
Orthanc, the index and the S3 archive are checked against it (`assert_nothing_lost`).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import FAULT_AT, RESTART_AFTER_SECONDS, UploadSender, assert_nothing_lost

pytestmark = [pytest.mark.faults, pytest.mark.orthanc, pytest.mark.timeout(480)]


def test_kill_9_of_the_web_process_mid_upload_resumes_and_loses_nothing(platform, instances, start_sender):
    # given a clinic uploading 500 instances, one .zip per study, in chunks
    tenant, token = platform.tenant_with_token()
    sender = start_sender(UploadSender(url=platform.url, token=token, instances=instances))
    # when gunicorn (master and workers) is killed while a chunk past a file's first is on the wire,
    # and comes back two seconds later
    sender.wait_for_progress(FAULT_AT)
    sender.wait_mid_request(into=0.005)
    platform.web.kill()
    time.sleep(RESTART_AFTER_SECONDS)
    platform.web.start()
    sender.finish()
    # then the page's requests broke, and it went on from the offset the server reported, mid-file
    assert sender.request_errors["aborted"] + sender.request_errors["refused"] > 0, sender.summary()
    assert [(name, offset) for name, offset, size in sender.resumed_at if 0 < offset < size], sender.resumed_at
    # and the summary accounts for every file: all 500 instances stored, nothing refused, skipped or failed
    summary = sender.upload_summary
    assert (summary["refused"], summary["skipped"], summary["failed"]) == ([], [], []), summary
    assert sum(study["instances_accepted"] for study in summary["studies"]) == len(instances)
    assert len(sender.acknowledged) == len(instances), sender.summary()
    # and Orthanc, the index and S3 hold each instance exactly once, byte for byte as sent
    assert_nothing_lost(tenant, sender)
