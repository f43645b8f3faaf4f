"""The forwarder's decisions on the platform's answers, on a real spool: delivered, kept for later, or set aside."""

import json
import random
import threading

import pytest

from saas.gateway.config import GatewayConfig
from saas.gateway.forwarder import Forwarder, backoff_delay
from saas.gateway.spool import Spool
from saas.gateway.stow import parse_stow_response
from tests.gateway.conftest import free_port

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    yield spool
    spool.close()


def _forwarder(spool, **settings) -> Forwarder:
    config = GatewayConfig(
        platform_url=f"http://127.0.0.1:{free_port()}",  # nothing listens: any request fails to connect
        tenant_slug="clinic",
        spool_dir=spool.root,
        api_token="rr_test",
        **settings,
    )
    return Forwarder(config, spool, stop=threading.Event(), wake=threading.Event(), rng=random.Random(7))


def _answer(stored=(), failed=()):
    body = {}
    if stored:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {"00081150": {"vr": "UI", "Value": [CT]}, "00081155": {"vr": "UI", "Value": [uid]}} for uid in stored
            ],
        }
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081155": {"vr": "UI", "Value": [uid]} if uid else {"vr": "UI"},
                    "00081197": {"vr": "US", "Value": [code]},
                    "00000902": {"vr": "LO", "Value": [comment]},
                }
                for uid, code, comment in failed
            ],
        }
    return parse_stow_response(json.dumps(body).encode())


def _spooled(spool, *uids):
    for uid in uids:
        spool.store(uid, b"instance " + uid.encode())
    return [instance for instance in spool.pending() if instance.sop_instance_uid in uids]


def test_a_partial_success_delivers_keeps_and_sets_aside_by_failure_reason(spool):
    # given three instances sent in one batch
    forwarder = _forwarder(spool)
    sent = _spooled(spool, "1.1", "1.2", "1.3")
    # when the platform answers 202: one stored, one out of resources, one SOP class it refuses
    attempt = forwarder.settle(
        sent, _answer(stored=["1.1"], failed=[("1.2", 0xA700, "disk full"), ("1.3", 0x0122, "RT Plan")]), status=202
    )
    # then the stored one is in the ledger and gone, the transient one waits, the permanent one is set aside
    assert (attempt.delivered, attempt.kept, attempt.set_aside) == (1, 1, 1)
    assert spool.ledger.is_delivered("1.1") and not spool.ledger.is_delivered("1.2")
    assert [instance.sop_instance_uid for instance in spool.pending()] == ["1.2"]
    assert [(f.sop_instance_uid, f.reason) for f in spool.failed()] == [
        ("1.3", "FailureReason 0x0122 (SOP class not supported): RT Plan")
    ]
    # and the kept one is not due again at once (its own backoff), so the next batch is empty for now
    batch, retry_in = forwarder.next_batch()
    assert batch == [] and 0 < retry_in <= forwarder.config.retry_backoff_base


def test_a_failure_without_a_uid_is_attributed_to_the_only_instance_it_can_be(spool):
    # given two instances, one stored and one the platform could not even parse (no UID in its failure item)
    forwarder = _forwarder(spool)
    sent = _spooled(spool, "2.1", "2.2")
    attempt = forwarder.settle(sent, _answer(stored=["2.1"], failed=[("", 0xC000, "part 2: not DICOM")]), status=202)
    # then that failure belongs to the one instance not accounted for
    assert (attempt.delivered, attempt.set_aside) == (1, 1)
    assert [f.sop_instance_uid for f in spool.failed()] == ["2.2"] and spool.pending() == []


def test_an_instance_the_answer_does_not_mention_stays_spooled(spool):
    forwarder = _forwarder(spool)
    sent = _spooled(spool, "3.1", "3.2")
    attempt = forwarder.settle(sent, _answer(stored=["3.1", "9.9.9"]), status=200)
    # an unknown UID in the answer is ignored; the unmentioned instance is kept and the reason recorded
    assert (attempt.delivered, attempt.kept) == (1, 1) and not spool.ledger.is_delivered("9.9.9")
    assert [instance.sop_instance_uid for instance in spool.pending()] == ["3.2"]
    assert "did not account for 1 instance(s)" in attempt.errors[-1]


def test_failures_without_uids_in_a_batch_are_resolved_one_by_one(spool):
    # given a batch of three where two parts failed unreadably: the forwarder must send them singly to know which
    forwarder = _forwarder(spool)
    sent = _spooled(spool, "4.1", "4.2", "4.3")
    attempt = forwarder.settle(
        sent, _answer(stored=["4.1"], failed=[("", 0xC000, "bad"), ("", 0xC000, "bad")]), status=202
    )
    # then it tried the first one alone; the platform is unreachable now, so nothing is set aside blindly
    assert attempt.delivered == 1 and attempt.set_aside == 0 and attempt.request_failed
    assert {instance.sop_instance_uid for instance in spool.pending()} == {"4.2", "4.3"}
    assert spool.failed() == []


def test_batches_respect_the_instance_and_byte_limits_and_an_oversize_instance_goes_alone(spool):
    forwarder = _forwarder(spool, max_batch_instances=2, max_batch_bytes=2048)
    spool.store("5.1", b"a" * 5000)
    spool.store("5.2", b"b" * 100)
    spool.store("5.3", b"c" * 100)
    spool.store("5.4", b"d" * 100)
    first, _ = forwarder.next_batch()
    assert [instance.sop_instance_uid for instance in first] == ["5.1"]
    spool.settle_delivered(["5.1"])
    second, _ = forwarder.next_batch()
    assert [instance.sop_instance_uid for instance in second] == ["5.2", "5.3"]


def test_a_file_for_an_already_delivered_instance_is_dropped_not_sent(spool):
    # given a C-STORE that raced a delivery of the same instance and left a file behind
    forwarder = _forwarder(spool)
    spool.ledger.record_delivered(["6.1"])
    spool.store("6.1", b"late copy")
    batch, _ = forwarder.next_batch()
    assert batch == [] and spool.pending() == []


def test_backoff_grows_exponentially_with_jitter_up_to_the_maximum():
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (30, 60.0)]:
        delays = [backoff_delay(attempt, base=1.0, maximum=60.0, rng=rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not in lock step


def test_backoff_stays_at_the_maximum_however_long_the_outage():
    # 1,025 failures in a row (13 hours at the 60 s maximum) once overflowed 2**(n-1) and ended the forwarder
    rng = random.Random(2)
    for attempt in (1024, 1025, 5000, 10**6):
        assert 30.0 <= backoff_delay(attempt, base=1.0, maximum=60.0, rng=rng) <= 60.0
