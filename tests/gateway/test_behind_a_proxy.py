"""The forwarder behind a real nginx in front of the real platform: what a proxy refuses or breaks for one instance
never holds back the others, and the instance itself waits in the queue instead of being set aside for good.

nginx's own directives make the trouble: `client_max_body_size` (413), and for request bodies of 100 kB or more a
`return 500` or an upstream that is not listening (502). Everything else reaches gunicorn and the clinic's Orthanc.
"""

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from saas.gateway.config import GatewayConfig
from saas.gateway.forwarder import ALONE_AFTER_TRIES, Forwarder
from saas.gateway.spool import Spool
from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.orthanc import orthanc_endpoint
from tests.conftest import running_nginx

pytestmark = [pytest.mark.orthanc]

# Request bodies this long or longer meet the proxy's trouble; one small slice is about 10 kB, one large 520 kB.
LARGE_BODY_DIGITS = 6
LARGE_BODY = f"~^[0-9]{{{LARGE_BODY_DIGITS},}}$"


def _proxy_locations(trouble: str) -> str:
    limit = "" if "client_max_body_size" in trouble else "client_max_body_size 4g;"
    return (
        "        location / {\n"
        f"            {limit}\n"
        f"            {trouble}\n"
        "            proxy_set_header Host $http_host;\n"
        "            proxy_pass http://$readroom_upstream;\n"
        "        }\n"
    )


def _proxy_http(closed_port: int) -> str:
    return (
        f'    map $content_length $readroom_upstream {{ default readroom_web; "{LARGE_BODY}" readroom_gone; }}\n'
        f"    upstream readroom_gone {{ server 127.0.0.1:{closed_port}; }}\n"
    )


TROUBLE = {
    # nginx's own limit, below one large instance
    413: "client_max_body_size 100k;",
    500: "if ($readroom_upstream = readroom_gone) { return 500; }",
    # readroom_gone: nothing listens there
    502: "",
}


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port that refuses connections and that nothing else can take while it is held."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture
def spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    yield spool
    spool.close()


def _received(spool, dataset, order: int) -> None:
    """Spool an instance as received `order` seconds after the first (reception order is the spool's order)."""
    path = spool.store(dataset.SOPInstanceUID, dataset_bytes(dataset))
    os.utime(path, (1_000_000 + order, 1_000_000 + order))


def _forwarder(spool, *, url: str, slug: str, token: str, **settings) -> Forwarder:
    config = GatewayConfig(
        platform_url=url,
        tenant_slug=slug,
        spool_dir=spool.root,
        api_token=token,
        retry_backoff_base=0.001,
        retry_backoff_max=0.005,
        **settings,
    )
    return Forwarder(config, spool, stop=threading.Event(), wake=threading.Event(), rng=random.Random(3))


def _drain(forwarder, *, rounds: int = 30) -> None:
    """Run the forwarder's loop by hand, waiting what it asks for (milliseconds with these settings)."""
    for _ in range(rounds):
        delay = forwarder.step()
        if delay is None:
            return
        time.sleep(delay)


def _orthanc_sop_instance_uids(tenant) -> set[str]:
    endpoint = orthanc_endpoint(tenant)
    response = requests.get(f"{endpoint.http_url}/instances", params={"expand": ""}, auth=endpoint.auth, timeout=30)
    response.raise_for_status()
    return {instance["MainDicomTags"]["SOPInstanceUID"] for instance in response.json()}


def _logged(access_log: Path) -> list[tuple[int, int]]:
    """(status, body length) of each STOW-RS request nginx logged."""
    requests_ = []
    for line in access_log.read_text().splitlines():
        if "/studies " in line:
            status, length = line.rpartition(" | ")[2].split()
            requests_.append((int(status), int(length) if length.isdigit() else 0))
    return requests_


def _slices(*, count: int, pixels: int, accession: str):
    return ct_series(
        patient_id="GW-PROXY",
        patient_name="Synthetic^Proxy",
        accession_number=accession,
        slices=count,
        rows=pixels,
        columns=pixels,
    )


@pytest.mark.parametrize("status", [500, 502])
def test_a_batch_that_keeps_failing_with_5xx_does_not_hold_back_the_queue(live_platform, spool, status):
    # given a proxy that fails every request carrying the large slice, and six spooled slices, the large one oldest
    tenant, token = live_platform.tenant_with_token(prefix="gw-5xx", scopes=("studies:write",))
    [large] = _slices(count=1, pixels=512, accession="GW-5XX-L")
    small = _slices(count=5, pixels=64, accession="GW-5XX-S")
    for order, dataset in enumerate([large, *small]):
        _received(spool, dataset, order)
    upstream = live_platform.url.removeprefix("http://")
    with (
        _closed_port() as closed,
        running_nginx(_proxy_locations(TROUBLE[status]), upstream=upstream, http=_proxy_http(closed)) as nginx,
    ):
        forwarder = _forwarder(spool, url=nginx.url, slug=tenant.slug, token=token, max_batch_instances=3)

        # when the forwarder runs for a while
        _drain(forwarder)

        logged = _logged(nginx.access_log)
    # then the five small slices reached the clinic's Orthanc, and the large one is still spooled (a 5xx may pass)
    assert _orthanc_sop_instance_uids(tenant) == {dataset.SOPInstanceUID for dataset in small}
    assert all(spool.ledger.is_delivered(dataset.SOPInstanceUID) for dataset in small)
    assert [instance.sop_instance_uid for instance in spool.pending()] == [large.SOPInstanceUID]
    assert spool.failed() == []
    # after its batch failed ALONE_AFTER_TRIES times it went alone, and alone it keeps failing visibly
    alone = len(dataset_bytes(large)) + 1000
    assert len([length for answer, length in logged if answer == status and length > alone]) == ALONE_AFTER_TRIES
    assert [length for answer, length in logged if answer == status and length <= alone]
    assert spool.ledger.state()["last_error"].startswith(f"HTTP {status} from the platform: ")


def test_a_proxys_413_for_one_instance_keeps_it_spooled_and_the_rest_flows(live_platform, spool):
    # given a proxy whose request size limit is below one large slice, between two small ones in the queue
    tenant, token = live_platform.tenant_with_token(prefix="gw-413", scopes=("studies:write",))
    [large] = _slices(count=1, pixels=512, accession="GW-413-L")
    first, last = _slices(count=2, pixels=64, accession="GW-413-S")
    for order, dataset in enumerate([first, large, last]):
        _received(spool, dataset, order)
    upstream = live_platform.url.removeprefix("http://")
    with (
        _closed_port() as closed,
        running_nginx(_proxy_locations(TROUBLE[413]), upstream=upstream, http=_proxy_http(closed)) as nginx,
    ):
        forwarder = _forwarder(spool, url=nginx.url, slug=tenant.slug, token=token)

        _drain(forwarder)

        logged = _logged(nginx.access_log)
    # then the batch of three met the 413, each went alone, the small ones are stored and the large one waits
    assert logged[0][0] == 413 and [answer for answer, _ in logged].count(200) == 2
    assert _orthanc_sop_instance_uids(tenant) == {first.SOPInstanceUID, last.SOPInstanceUID}
    assert [instance.sop_instance_uid for instance in spool.pending()] == [large.SOPInstanceUID]
    assert spool.failed() == []
    assert "client_max_body_size" in spool.ledger.state()["last_error"]
