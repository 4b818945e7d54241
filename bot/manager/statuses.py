"""Delivery statuses of manager messages (spec §5.4): what a delivery reports, and the job that
reports it to amojo."""

from __future__ import annotations

import logging
import time

from bot.amocrm.amojo import AmojoClient
from bot.amocrm.channel import Channel
from bot.common.limits import (
    AMOJO_DELIVERY_ERROR_MAX_CHARS,
)
from bot.common.texts import Phrase, phrase
from bot.jobs.queues import AMOJO_QUEUE
from bot.jobs.worker import Done, JobKind
from storage import Job, NewJob

logger = logging.getLogger(__name__)


KIND_AMO_STATUS = "amo.status"


DELIVERED = 1


FAILED = -1


ERROR_BLOCKED = 901


ERROR_NO_RIGHTS = 902


ERROR_NO_CONVERSATION = 904


ERROR_OTHER = 905


def refusal_key(amo_id: str) -> str:
    """Where a delivery remembers that its media was refused (reported with its status)."""
    return f"media.refused:{amo_id}"


def status_job(amo_id: str, status: int, error_code: int | None = None, error: str = "") -> NewJob:
    """A job reporting a manager message's delivery status to amojo (spec §5.4)."""
    if len(error) > AMOJO_DELIVERY_ERROR_MAX_CHARS:
        error = error[: AMOJO_DELIVERY_ERROR_MAX_CHARS - 1] + "…"
    return NewJob(
        queue=AMOJO_QUEUE,
        kind=KIND_AMO_STATUS,
        lane=f"status:{amo_id}",
        # The status is part of the key: a dead-lettered message reports -1, and when an operator
        # re-drives it and it gets through, the later 1 must still be reported.
        dedup_key=f"status:{amo_id}:{status}",
        payload={"amo_id": amo_id, "status": status, "error_code": error_code, "error": error},
    )


def _duration(seconds: float) -> Phrase:
    seconds = int(seconds)
    if seconds < 120:
        return phrase("units.seconds", n=seconds)
    if seconds < 2 * 3600:
        return phrase("units.minutes", n=seconds // 60)
    if seconds < 2 * 86400:
        return phrase("units.hours", n=seconds // 3600)
    return phrase("units.days", n=seconds // 86400)


def window_closed_reason(ago: float | None, window: int) -> Phrase:
    """What a manager reads when the time window has closed."""
    since = (
        phrase("amo.window.never") if ago is None else phrase("amo.window.last", ago=_duration(ago))
    )
    return phrase("amo.window.closed", since=since, window=_duration(window))


class Undeliverable(Exception):
    """A message that must not or cannot reach Telegram; reported as -1 with this code."""

    def __init__(self, error_code: int, reason: Phrase) -> None:
        super().__init__(str(reason))
        self.error_code = error_code
        self.reason = reason  # worded in the account's language when it is reported


class DeliveryStatusReporter:
    """Runs `amo.status` jobs (queue "amojo"): the delivery_status call, retried like any job."""

    def __init__(self, amojo: AmojoClient, channel: Channel) -> None:
        self.amojo = amojo
        self.channel = channel

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this reporter runs."""
        return {KIND_AMO_STATUS: JobKind(run=self.report)}

    async def report(self, job: Job) -> Done:
        """POST /{scope_id}/{msgid}/delivery_status."""
        payload = job.payload
        started = time.perf_counter()
        await self.amojo.delivery_status(
            self.channel.scope_id,
            str(payload["amo_id"]),
            int(payload["status"]),
            payload.get("error_code"),
            payload.get("error") or None,
        )
        logger.info(
            "delivery status %s of %s reported in %.0f ms",
            payload["status"],
            payload["amo_id"],
            (time.perf_counter() - started) * 1000,
        )
        return Done()
