"""The forwarder: drains the spool oldest first to the platform over STOW-RS, backing off when it cannot."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

import requests
from requests.auth import AuthBase

from saas.gateway.config import GatewayConfig
from saas.gateway.spool import Spool, SpooledInstance
from saas.gateway.stow import InstanceFailure, MultipartBody, StowResult, UnreadableResponse, parse_stow_response

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# With nothing queued the forwarder sleeps until the SCP wakes it, but looks again this often
# in case a file arrived some other way (a restart, an operator moving files back from failed/).
IDLE_POLL_S = 5.0
# After a wake-up, wait this long so that a study arriving slice by slice fills a batch.
LINGER_S = 0.3
# An instance whose batch failed this many times in a row (HTTP 5xx, a timeout) is sent on its own from
# then on: one instance the platform chokes on must not hold back every instance spooled after it.
ALONE_AFTER_TRIES = 3
# Doubling stops here; 2**1024 would not even fit in a float, and the cap applies long before.
_MAX_BACKOFF_EXPONENT = 60
DETAIL_LIMIT = 300


class BearerAuth(AuthBase):
    """Sets the token as requests auth, so a ~/.netrc on the clinic machine can never replace it."""

    def __init__(self, token: str):
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def http_session(config: GatewayConfig) -> requests.Session:
    session = requests.Session()
    session.verify = config.requests_verify
    session.headers["User-Agent"] = "readroom-gateway"
    return session


def backoff_delay(attempt: int, *, base: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1), capped at maximum.

    The jitter keeps many clinic gateways from hammering the platform in step after an outage.
    """
    ceiling = min(maximum, base * 2 ** min(max(0, attempt - 1), _MAX_BACKOFF_EXPONENT))
    return rng.uniform(ceiling / 2, ceiling)


def response_detail(response: requests.Response) -> str:
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("detail"), str):
        text = document["detail"]
    else:
        text = response.text.strip()
    return " ".join(text.split())[:DETAIL_LIMIT] or response.reason or ""


@dataclass
class Attempt:
    """What one POST (or one split of it) achieved."""

    delivered: int = 0
    set_aside: int = 0
    kept: int = 0
    blocked: bool = False
    request_failed: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def progressed(self) -> bool:
        return bool(self.delivered or self.set_aside)

    def merge(self, other: Attempt) -> None:
        self.delivered += other.delivered
        self.set_aside += other.set_aside
        self.kept += other.kept
        self.blocked = self.blocked or other.blocked
        self.request_failed = self.request_failed or other.request_failed
        self.errors.extend(other.errors)


class Forwarder:
    def __init__(
        self,
        config: GatewayConfig,
        spool: Spool,
        *,
        stop: threading.Event,
        wake: threading.Event,
        rng: random.Random | None = None,
    ):
        self.config = config
        self.spool = spool
        self.stop = stop
        self.wake = wake
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.session = http_session(config)
        self._consecutive_failures = 0
        # Instances the platform could not take for now (0xA700, 0x0110): uid -> (tries, not before).
        self._retry_at: dict[str, tuple[int, float]] = {}
        self._forwarding: str | None = None

    # --- the loop

    def run(self) -> None:
        logger.info("forwarding to %s", self.config.stow_url)
        while not self.stop.is_set():
            try:
                delay = self.step()
            except Exception as error:
                # A bug or a broken spool must not end forwarding silently; it shows in status and is retried.
                logger.exception("forwarder step failed")
                self._consecutive_failures += 1
                delay = self._backoff()
                try:
                    self._record_error(f"gateway error: {type(error).__name__}: {error}", "retrying", delay)
                except Exception:
                    logger.exception("cannot record the error in the ledger either")
            if delay is None:
                if self.wake.wait(IDLE_POLL_S):
                    self.wake.clear()
                    self.stop.wait(LINGER_S)
            elif delay > 0:
                self.stop.wait(delay)
        self.session.close()

    def step(self) -> float | None:
        """Send one batch; the seconds to wait before the next, or None when there is nothing to send."""
        batch, retry_in = self.next_batch()
        if not batch:
            if retry_in is None:
                self._set_forwarding("idle")
                return None
            return min(retry_in, IDLE_POLL_S)
        attempt = self.deliver(batch)
        if attempt.blocked:
            delay = self.config.retry_backoff_max
            self._record_error(attempt.errors[-1], "blocked", delay)
            return delay
        if attempt.progressed:
            self._consecutive_failures = 0
        if attempt.errors:
            if not attempt.progressed:
                self._consecutive_failures += 1
                delay = self._backoff()
                self._record_error(attempt.errors[-1], "retrying", delay)
                return delay
            self._record_error(attempt.errors[-1], "ok", None)
            return 0.0
        self._set_forwarding("ok")
        return 0.0

    def next_batch(self) -> tuple[list[SpooledInstance], float | None]:
        """The oldest instances due now, within the batch limits; else the seconds until one is due."""
        now = time.monotonic()
        pending = self.spool.pending()
        # A C-STORE racing a delivery can leave a file for an instance the ledger already holds.
        already = self.spool.ledger.delivered_among(instance.sop_instance_uid for instance in pending)
        for instance in pending:
            if instance.sop_instance_uid in already:
                instance.path.unlink(missing_ok=True)
        pending = [instance for instance in pending if instance.sop_instance_uid not in already]
        live = {instance.sop_instance_uid for instance in pending}
        self._retry_at = {uid: due for uid, due in self._retry_at.items() if uid in live}

        batch: list[SpooledInstance] = []
        batch_bytes = 0
        earliest_retry: float | None = None
        for instance in pending:
            retry = self._retry_at.get(instance.sop_instance_uid)
            if retry is not None and retry[1] > now:
                earliest_retry = retry[1] if earliest_retry is None else min(earliest_retry, retry[1])
                continue
            if retry is not None and retry[0] >= ALONE_AFTER_TRIES:
                if batch:
                    continue
                batch.append(instance)
                break
            if batch and (
                len(batch) >= self.config.max_batch_instances
                or batch_bytes + instance.size > self.config.max_batch_bytes
            ):
                break
            # An instance larger than max_batch_bytes still goes, alone.
            batch.append(instance)
            batch_bytes += instance.size
        return batch, (None if earliest_retry is None else max(0.0, earliest_retry - now))

    # --- one request

    def deliver(self, batch: list[SpooledInstance]) -> Attempt:
        try:
            response, sent = self._post(batch)
        except requests.ConnectionError as error:
            # Nothing reached the platform (refused, no route, DNS): the batch is not at fault.
            return Attempt(
                kept=len(batch),
                request_failed=True,
                errors=[f"cannot reach the platform at {self.config.platform_url}: {type(error).__name__}"],
            )
        except requests.RequestException as error:
            # A timeout or a broken answer: perhaps this batch (too large for the link, one instance the
            # platform chokes on), so its instances are retried on their own schedule, alone after a while.
            return self._failed_for_now(
                batch, f"no answer from the platform at {self.config.platform_url}: {type(error).__name__}"
            )
        if response is None:
            return Attempt()
        status = response.status_code
        if status in (200, 202, 409):
            try:
                result = parse_stow_response(response.content)
            except UnreadableResponse as error:
                return Attempt(kept=len(sent), request_failed=True, errors=[f"HTTP {status} but {error}"])
            return self.settle(sent, result, status=status)
        detail = response_detail(response)
        if status == 400 or (status == 413 and len(sent) > 1):
            return self._isolate(sent, status=status, detail=detail)
        if status == 413:
            # The platform answers an oversize instance with a per-instance failure, never 413: this comes
            # from a proxy in front of it. The instance is fine; it waits, without holding back the others.
            return self._failed_for_now(
                sent,
                f"HTTP 413 from a proxy in front of the platform for {sent[0].sop_instance_uid} "
                f"({sent[0].size} bytes): raise its request size limit (nginx: client_max_body_size)",
            )
        if status in (401, 403):
            return Attempt(
                kept=len(sent),
                blocked=True,
                errors=[f"the platform refused the API token (HTTP {status}: {detail}); forwarding stopped"],
            )
        if 300 <= status < 400:
            # Following it would turn the POST into a GET and drop the token at another host.
            return Attempt(
                kept=len(sent),
                blocked=True,
                errors=[
                    f"the platform redirects (HTTP {status}) to {response.headers.get('Location', '?')}; "
                    "set platform_url to the final address"
                ],
            )
        if status == 404:
            return Attempt(
                kept=len(sent),
                blocked=True,
                errors=[
                    f"the platform has no clinic {self.config.tenant_slug!r} for this token "
                    f"(HTTP 404 from {self.config.stow_url}); check tenant_slug"
                ],
            )
        return self._failed_for_now(sent, f"HTTP {status} from the platform: {detail}")

    def _failed_for_now(self, sent: list[SpooledInstance], error: str) -> Attempt:
        for instance in sent:
            self._schedule_retry(instance.sop_instance_uid)
        return Attempt(kept=len(sent), request_failed=True, errors=[error])

    def _post(self, batch: list[SpooledInstance]) -> tuple[requests.Response | None, list[SpooledInstance]]:
        files, sent = [], []
        try:
            for instance in batch:
                try:
                    files.append(instance.path.open("rb"))
                except FileNotFoundError:
                    continue
                sent.append(instance)
            if not sent:
                return None, sent
            body = MultipartBody(files)
            response = self.session.post(
                self.config.stow_url,
                data=body,
                auth=BearerAuth(self.config.current_token()),
                headers={"Content-Type": body.content_type, "Accept": "application/dicom+json"},
                timeout=(CONNECT_TIMEOUT_S, self.config.request_timeout),
                allow_redirects=False,
            )
        finally:
            for file in files:
                file.close()
        logger.info(
            "sent %d instance(s), %d bytes: HTTP %d", len(sent), sum(i.size for i in sent), response.status_code
        )
        return response, sent

    def _isolate(self, sent: list[SpooledInstance], *, status: int, detail: str) -> Attempt:
        """A 400/413 for a whole batch: one instance may be at fault, so each is sent on its own."""
        if len(sent) == 1:
            uid = sent[0].sop_instance_uid
            reason = f"HTTP {status} from the platform for this instance alone: {detail}"
            self.spool.settle_failed(uid, reason)
            logger.warning("set aside sop_instance_uid=%s: %s", uid, reason)
            return Attempt(set_aside=1, errors=[f"instance {uid} set aside in failed/: {reason}"])
        logger.warning("HTTP %d for a batch of %d; sending them one by one", status, len(sent))
        attempt = Attempt()
        for instance in sent:
            single = self.deliver([instance])
            attempt.merge(single)
            if single.blocked or single.request_failed or self.stop.is_set():
                # The platform itself is in trouble now: the rest waits for the next round.
                break
        return attempt

    def settle(self, sent: list[SpooledInstance], result: StowResult, *, status: int) -> Attempt:
        sent_uids = {instance.sop_instance_uid for instance in sent}
        stored = [uid for uid in dict.fromkeys(result.stored) if uid in sent_uids]
        self.spool.settle_delivered(stored)
        for uid in stored:
            self._retry_at.pop(uid, None)
        attempt = Attempt(delivered=len(stored))

        answered = set(stored)
        # A part the platform could not even parse comes back without its UID.
        unattributed = [failure for failure in result.failed if failure.sop_instance_uid not in sent_uids]
        for failure in result.failed:
            if failure.sop_instance_uid in sent_uids and failure.sop_instance_uid not in answered:
                answered.add(failure.sop_instance_uid)
                attempt.merge(self._settle_failure(failure.sop_instance_uid, failure))
        unanswered = [instance for instance in sent if instance.sop_instance_uid not in answered]
        if not unanswered:
            return attempt
        if len(unanswered) == 1 and len(unattributed) == 1:
            # Every other instance is accounted for, so the one failure without a UID is this one's.
            attempt.merge(self._settle_failure(unanswered[0].sop_instance_uid, unattributed[0]))
        elif unattributed and len(unanswered) > 1:
            # Which of them failed is unknown: sent one by one, each answer names its own instance.
            logger.warning(
                "%d failure(s) without a UID for %d instance(s); sending them one by one",
                len(unattributed),
                len(unanswered),
            )
            for instance in unanswered:
                single = self.deliver([instance])
                attempt.merge(single)
                if single.blocked or single.request_failed or self.stop.is_set():
                    break
        else:
            for instance in unanswered:
                self._schedule_retry(instance.sop_instance_uid)
            attempt.kept += len(unanswered)
            attempt.errors.append(f"HTTP {status} did not account for {len(unanswered)} instance(s); they stay spooled")
        return attempt

    def _settle_failure(self, uid: str, failure: InstanceFailure) -> Attempt:
        if failure.permanent:
            self.spool.settle_failed(uid, failure.describe())
            self._retry_at.pop(uid, None)
            logger.warning("set aside sop_instance_uid=%s: %s", uid, failure.describe())
            return Attempt(set_aside=1, errors=[f"instance {uid} set aside in failed/: {failure.describe()}"])
        self._schedule_retry(uid)
        return Attempt(kept=1, errors=[f"the platform could not store {uid} for now: {failure.describe()}"])

    # --- bookkeeping

    def _schedule_retry(self, uid: str) -> None:
        tries = self._retry_at.get(uid, (0, 0.0))[0] + 1
        delay = backoff_delay(
            tries, base=self.config.retry_backoff_base, maximum=self.config.retry_backoff_max, rng=self.rng
        )
        self._retry_at[uid] = (tries, time.monotonic() + delay)

    def _backoff(self) -> float:
        return backoff_delay(
            self._consecutive_failures,
            base=self.config.retry_backoff_base,
            maximum=self.config.retry_backoff_max,
            rng=self.rng,
        )

    def _record_error(self, message: str, forwarding: str, delay: float | None) -> None:
        logger.warning("%s", message)
        now = time.time()
        self.spool.ledger.set_state(
            last_error=message,
            last_error_at=now,
            forwarding=forwarding,
            next_attempt_at=None if delay is None else now + delay,
        )
        self._forwarding = forwarding

    def _set_forwarding(self, forwarding: str) -> None:
        if forwarding != self._forwarding:
            self.spool.ledger.set_state(forwarding=forwarding, next_attempt_at=None)
            self._forwarding = forwarding
