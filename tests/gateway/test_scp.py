"""The gateway's DICOM side, as a real `serve` process: what it acknowledges is in the spool, and only that."""

import resource
import signal

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage, Verification

from saas.gateway import __main__ as gateway_main
from saas.gateway.config import load_config
from saas.gateway.scp import _identity_mismatch
from saas.gateway.spool import Spool
from saas.studies.synthetic import ct_series, dataset_bytes
from tests.gateway.conftest import AE_TITLE, PATIENT_NAME, storescu, write_series


def _scu_store(port: int, dataset) -> int:
    ae = AE(ae_title="TEST_SCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return assoc.send_c_store(dataset).Status
    finally:
        assoc.release()


def _dataset(**kwargs):
    return ct_series(patient_id="GW-2", patient_name=PATIENT_NAME, accession_number="ACC-GW2", slices=1, **kwargs)[0]


def test_storescu_instances_are_spooled_byte_for_byte_before_success(gateway_env, make_gateway, tmp_path):
    # given a running gateway whose platform is unreachable, and a five-slice CT
    gateway = make_gateway(gateway_env).start()
    paths = write_series(tmp_path / "study", slices=5)
    # when dcmtk's storescu sends it
    result = storescu(gateway.port, paths)
    # then every C-STORE succeeded and each instance lies in the spool under its UID, no .tmp left
    assert result.returncode == 0, result.stderr
    spooled = {path.name: path for path in gateway.incoming()}
    assert sorted(spooled) == sorted(path.name for path in paths)
    for path in paths:
        original, received = pydicom.dcmread(path), pydicom.dcmread(spooled[path.name])
        assert received.SOPInstanceUID == original.SOPInstanceUID and received.PixelData == original.PixelData
        assert received.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    # and the log names UIDs, never the patient, never the token
    log = gateway.log()
    assert paths[0].stem in log
    assert PATIENT_NAME.split("^")[0] not in log and gateway_env["READROOM_GATEWAY_API_TOKEN"] not in log


def test_a_pynetdicom_scu_gets_success_and_echo_is_answered(gateway_env, make_gateway):
    gateway = make_gateway(gateway_env).start()
    dataset = _dataset()
    assert _scu_store(gateway.port, dataset) == 0x0000
    assert [path.name for path in gateway.incoming()] == [f"{dataset.SOPInstanceUID}.dcm"]
    ae = AE(ae_title="TEST_SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=AE_TITLE)
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_a_device_calling_another_ae_title_is_rejected_at_association(gateway_env, make_gateway, tmp_path):
    gateway = make_gateway(gateway_env).start()
    result = storescu(gateway.port, write_series(tmp_path / "study", slices=1), called_ae="WRONG_AE")
    assert result.returncode != 0 and gateway.incoming() == []


def test_an_instance_already_delivered_is_acknowledged_but_not_spooled_again(gateway_env, make_gateway):
    # given a spool whose ledger says this instance reached the platform
    dataset = _dataset()
    spool = Spool(gateway_env["READROOM_GATEWAY_SPOOL_DIR"] and make_gateway(gateway_env).spool_dir)
    spool.ledger.record_delivered([dataset.SOPInstanceUID])
    spool.close()
    gateway = make_gateway(gateway_env).start()
    # when the modality sends it again, then it gets success and nothing is queued to be sent twice
    assert _scu_store(gateway.port, dataset) == 0x0000
    assert gateway.incoming() == []
    assert gateway.status()["queued_count"] == 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_sop_instance_uid_with_path_characters_is_refused(gateway_env, make_gateway):
    gateway = make_gateway(gateway_env).start()
    dataset = _dataset()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = "1.2.3/../../../escape"
    assert _scu_store(gateway.port, dataset) == 0xC000
    assert gateway.incoming() == [] and not (gateway.spool_dir.parent / "escape.dcm").exists()


def test_a_dataset_that_contradicts_its_request_is_refused():
    # the platform answers by the dataset's UIDs, the spool files by the request's: they must agree
    dataset = _dataset()
    data = dataset_bytes(dataset)
    request = C_STORE()
    request.AffectedSOPClassUID = dataset.SOPClassUID
    request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
    assert _identity_mismatch(data, request) is None
    request.AffectedSOPInstanceUID = generate_uid()
    assert _identity_mismatch(data, request) == (0xC000, "the dataset's SOP Instance UID differs from the request's")
    request.AffectedSOPInstanceUID = dataset.SOPInstanceUID
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    assert _identity_mismatch(data, request)[0] == 0xA900
    assert _identity_mismatch(b"not dicom", request)[0] == 0xC000


def _limit_file_size():
    # Like a full disk: writing past 1 MiB fails (EFBIG; Python ignores SIGXFSZ). The ledger stays far below.
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))


def test_a_write_error_is_answered_out_of_resources_and_leaves_nothing_behind(gateway_env, make_gateway):
    # given a gateway that cannot write files bigger than 1 MiB, and a 2 MiB slice
    gateway = make_gateway(gateway_env).start(preexec_fn=_limit_file_size)
    big, small = _dataset(rows=1024, columns=1024), _dataset()
    # when both are sent, then the big one is refused 0xA700 so the modality keeps it, and the small one is spooled
    assert _scu_store(gateway.port, big) == 0xA700
    assert _scu_store(gateway.port, small) == 0x0000
    # and the failed write left no partial file behind
    assert [path.name for path in gateway.incoming()] == [f"{small.SOPInstanceUID}.dcm"]
    assert "cannot spool" in gateway.log()


def test_sigterm_stops_serve_cleanly_and_a_restart_removes_incomplete_receptions(gateway_env, make_gateway, tmp_path):
    # given a gateway that spooled one instance
    gateway = make_gateway(gateway_env).start()
    paths = write_series(tmp_path / "study", slices=1)
    assert storescu(gateway.port, paths).returncode == 0
    # when it gets SIGTERM, then it exits 0 and status says it stopped
    assert gateway.stop() == 0
    assert gateway.status()["forwarding"] == "stopped"
    # given a reception cut short by a crash, whose C-STORE was never answered
    partial = gateway.spool_dir / "incoming" / "1.2.3.4.dcm.tmp"
    partial.write_bytes(b"half")
    # when serve starts again, then the partial file is gone and the acknowledged instance still queued
    restarted = make_gateway(gateway_env).start()
    assert not partial.exists()
    assert [path.name for path in restarted.incoming()] == [paths[0].name]
    assert "removed 1 incomplete reception(s)" in restarted.log()
    restarted.process.send_signal(signal.SIGINT)
    assert restarted.process.wait(timeout=60) == 0


def test_a_second_serve_on_the_same_spool_is_refused(gateway_env, make_gateway):
    make_gateway(gateway_env).start()
    second = make_gateway({**gateway_env, "READROOM_GATEWAY_LISTEN_PORT": "1"})
    with pytest.raises(AssertionError, match="serve exited with 2"):
        second.start()
    assert "is already served by pid" in second.log()


def test_only_the_devices_named_in_calling_ae_titles_may_send(gateway_env, make_gateway):
    # given a gateway that accepts two devices
    gateway = make_gateway({**gateway_env, "READROOM_GATEWAY_CALLING_AE_TITLES": "CT_ROOM1,MR_ROOM2"}).start()
    dataset = _dataset()
    # when another device calls its AE title, then the association is rejected and nothing is spooled
    stranger = AE(ae_title="TEST_SCU")
    stranger.add_requested_context(CTImageStorage)
    assoc = stranger.associate("127.0.0.1", gateway.port, ae_title=AE_TITLE)
    assert assoc.is_rejected and gateway.incoming() == []
    # and a named device stores as usual
    known = AE(ae_title="MR_ROOM2")
    known.add_requested_context(CTImageStorage)
    assoc = known.associate("127.0.0.1", gateway.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(dataset).Status == 0x0000
    finally:
        assoc.release()
    assert [path.name for path in gateway.incoming()] == [f"{dataset.SOPInstanceUID}.dcm"]


def test_serve_exits_1_if_its_forwarder_stops(gateway_env, monkeypatch, caplog):
    # given a forwarder that ends (a bug, or what overflowed its backoff before): receiving on would fill the
    # spool with nothing leaving it, unseen
    config = load_config(config_path=None, environ=gateway_env)
    monkeypatch.setattr(gateway_main.Forwarder, "run", lambda self: None)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        # when serve runs, then it stops by itself with status 1 for the service manager to restart it
        assert gateway_main.serve(config) == 1
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert "the forwarder stopped unexpectedly" in caplog.text
