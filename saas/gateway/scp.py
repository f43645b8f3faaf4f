"""The DICOM side: a C-ECHO and C-STORE SCP that acknowledges an instance only once it is durably spooled."""

from __future__ import annotations

import io
import logging
import socketserver
import time
from collections.abc import Callable

import pydicom
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from saas.gateway.config import GatewayConfig
from saas.gateway.spool import Spool, is_valid_uid

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_DOES_NOT_MATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018

# How long a shutdown waits for associations in flight before aborting them; an aborted
# C-STORE was never acknowledged, so the modality keeps and resends it.
SHUTDOWN_GRACE_S = 10.0


def handle_echo(event: Event) -> int:
    return STATUS_SUCCESS


def handle_store(event: Event, spool: Spool, on_spooled: Callable[[], None]) -> int:
    request = event.request
    sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
    calling_ae = event.assoc.requestor.ae_title
    if not is_valid_uid(sop_instance_uid):
        # The UID becomes a file name; only its length is logged, the value may be hostile.
        logger.warning(
            "refused C-STORE from %s: SOP Instance UID is not a UID (%d characters)", calling_ae, len(sop_instance_uid)
        )
        return STATUS_CANNOT_UNDERSTAND
    try:
        if spool.ledger.is_delivered(sop_instance_uid):
            # The platform already holds it: a resend is acknowledged, not forwarded a second time.
            logger.info(
                "C-STORE of already delivered sop_instance_uid=%s from %s acknowledged", sop_instance_uid, calling_ae
            )
            return STATUS_SUCCESS
        # encoded_dataset() hands over the bytes as received, with file meta, without decoding them.
        data = event.encoded_dataset()
        mismatch = _identity_mismatch(data, request)
        if mismatch is not None:
            status, why = mismatch
            logger.warning("refused C-STORE of sop_instance_uid=%s from %s: %s", sop_instance_uid, calling_ae, why)
            return status
        spool.store(sop_instance_uid, data)
    except OSError as error:
        logger.error("cannot spool sop_instance_uid=%s: %s", sop_instance_uid, error.strerror or error)
        return STATUS_OUT_OF_RESOURCES
    except Exception:
        logger.exception("cannot spool sop_instance_uid=%s", sop_instance_uid)
        return STATUS_OUT_OF_RESOURCES
    logger.info(
        "spooled sop_instance_uid=%s sop_class_uid=%s bytes=%d from %s",
        sop_instance_uid,
        request.AffectedSOPClassUID,
        len(data),
        calling_ae,
    )
    on_spooled()
    return STATUS_SUCCESS


def _identity_mismatch(data: bytes, request: C_STORE) -> tuple[int, str] | None:
    """Whether the dataset names the instance and class the C-STORE request announced.

    The platform answers with the UIDs inside the dataset and the spool files instances under the
    request's UID; if the two differed, a delivered instance would never be recognised and would be
    sent again and again. Only the two UIDs are read, never the patient module or pixels.
    """
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(data), stop_before_pixels=True, defer_size=256, specific_tags=[SOP_CLASS_UID, SOP_INSTANCE_UID]
        )
    except Exception as error:
        return STATUS_CANNOT_UNDERSTAND, f"dataset cannot be read: {type(error).__name__}"
    if str(dataset.get("SOPInstanceUID", "")) != str(request.AffectedSOPInstanceUID):
        return STATUS_CANNOT_UNDERSTAND, "the dataset's SOP Instance UID differs from the request's"
    if str(dataset.get("SOPClassUID", "")) != str(request.AffectedSOPClassUID):
        return STATUS_DATASET_DOES_NOT_MATCH, "the dataset's SOP Class UID differs from the request's"
    return None


def build_ae(config: GatewayConfig) -> AE:
    ae = AE(ae_title=config.ae_title)
    ae.add_supported_context(Verification)
    # Every transfer syntax pynetdicom knows: the gateway stores the bytes as sent and never
    # decodes pixels, so a JPEG or JPEG 2000 stream from a modality is as easy to relay as a raw one.
    for context in StoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    # Modalities are configured with this AE title; refusing others surfaces a misrouted device
    # at association time instead of filing its images under the wrong clinic.
    ae.require_called_aet = True
    if config.calling_ae_titles:
        # Only the clinic's own devices may send: any other caller is rejected at association.
        ae.require_calling_aet = list(config.calling_ae_titles)
    return ae


def start_scp(config: GatewayConfig, spool: Spool, *, on_spooled: Callable[[], None]) -> ThreadedAssociationServer:
    ae = build_ae(config)
    handlers = [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [spool, on_spooled]),
    ]
    server = ae.start_server((config.listen_host, config.listen_port), block=False, evt_handlers=handlers)
    assert server is not None
    return server


def stop_scp(server: ThreadedAssociationServer, *, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Stop accepting, let associations in flight finish for a while, then abort the rest."""
    ae = server.ae
    # The plain socketserver shutdown ends the accept loop without joining association threads;
    # closing the listening socket then refuses new connections at once instead of letting them hang.
    socketserver.BaseServer.shutdown(server)
    server.socket.close()
    deadline = time.monotonic() + grace_s
    # Only established associations can be carrying a C-STORE; a connection that never sent an
    # A-ASSOCIATE-RQ (a port probe, a load balancer check) holds nothing worth waiting for.
    while any(assoc.is_established for assoc in server.active_associations) and time.monotonic() < deadline:
        time.sleep(0.1)
    ae.shutdown()
