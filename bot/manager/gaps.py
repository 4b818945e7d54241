"""When hooks could have been missed: the listener's durable heartbeat and the gaps it leaves.

amojo sends each hook once and never again (spec §3.1). Any interval in which the listener
could not take and store hooks is a gap; each gap becomes a durable recovery job that reads
amojo's chat history (bot/manager/recovery.py). Kept free of aiogram: a restart records its gap and
takes hooks before the slow imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.common.metrics import Metrics
from bot.common.tasks import cancel_and_wait
from bot.jobs.queues import RECOVERY_QUEUE
from storage import NewJob, Repository, StorageError, is_outage

logger = logging.getLogger(__name__)

KV_HEARTBEAT = "listener.heartbeat"
KIND_RECOVER_GAP = "recovery.gap"
REASON_NOT_STORED = "hook not stored"
HEARTBEAT_SECONDS = 2.0
# Widened on both sides: the heartbeat's own step, and clocks of amojo and ours a little apart.
GAP_MARGIN_SECONDS = 60.0
# A database from before heartbeats: the gap starts at its newest job, but at most this long
# ago (the upgrade's own restart), so an idle bridge does not send days-old history.
UNKNOWN_START_CAP_SECONDS = 10 * 60


GAPS_LANE = "recovery:gaps"


def recovery_job(started_at: float, ended_at: float) -> NewJob:
    """The job that recovers one gap (its dedup key and payload get the gap's id)."""
    return NewJob(
        queue=RECOVERY_QUEUE,
        kind=KIND_RECOVER_GAP,
        lane=GAPS_LANE,
        dedup_key="recover-gap",
        payload={"started_at": started_at, "ended_at": ended_at},
    )


def report_gap(
    metrics: Metrics, gap_id: int, started_at: float, ended_at: float, reason: str
) -> None:
    """One log line and a metric for a gap just stored."""
    metrics.recovery_gaps.labels(reason).inc()
    # A restart's gap is routine (its recovery tells if anything was missed); others are not.
    logger.log(
        logging.INFO if reason == "restart" else logging.WARNING,
        "gap in hook intake #%d (%s): %.1f s from %s; manager messages of it are read back "
        "from amojo's history",
        gap_id,
        reason,
        ended_at - started_at,
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started_at)),
    )


class Heartbeat:
    """Keeps "the listener was taking hooks until T" in SQLite; turns missed time into gaps."""

    def __init__(
        self, repo: Repository, metrics: Metrics, interval: float = HEARTBEAT_SECONDS
    ) -> None:
        self.repo = repo
        self.metrics = metrics
        self.interval = interval
        self._failures: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def open(self, listening_since: float) -> None:
        """Record the gap since the last heartbeat (a restart), then beat while running."""
        last = await self.repo.get_kv(KV_HEARTBEAT)
        if last is not None:
            since: float | None = float(last)
        else:
            newest = await self.repo.newest_job_created_at()
            since = (
                None if newest is None else max(newest, listening_since - UNKNOWN_START_CAP_SECONDS)
            )
        if since is not None and since >= listening_since:
            # Our clock was set back while we were down (or ran fast before): the real gap
            # is unknown, so take the longest one an unknown start may have.
            logger.warning("the last heartbeat is in the future: the clock was set back")
            since = listening_since - UNKNOWN_START_CAP_SECONDS
        gap_id = None
        async with self.repo.transaction(urgent=True) as tx:
            if since is not None:
                job = recovery_job(since, listening_since)
                gap_id = await tx.add_gap(since, listening_since, "restart", job)
            await tx.set_kv(KV_HEARTBEAT, repr(listening_since))
        if since is not None and gap_id is not None:
            report_gap(self.metrics, gap_id, since, listening_since, "restart")
        self._task = asyncio.create_task(self._beat(), name="listener-heartbeat")

    def hook_not_stored(self, at: float) -> None:
        """A signed hook was answered non-2xx because it could not be stored."""
        self._failures.append(at)

    async def close(self) -> None:
        """Stop beating; the last beat marks the moment hooks stop being taken."""
        if self._task is None:
            return
        await cancel_and_wait([self._task])
        self._task = None
        with contextlib.suppress(StorageError):
            await self.beat()

    async def beat(self) -> None:
        """Store the heartbeat, with the gaps of hooks that could not be stored (atomically)."""
        failures, self._failures = self._failures, []
        gap_id = None
        try:
            async with self.repo.transaction() as tx:
                if failures:
                    job = recovery_job(min(failures), max(failures))
                    gap_id = await tx.add_gap(min(failures), max(failures), REASON_NOT_STORED, job)
                await tx.set_kv(KV_HEARTBEAT, repr(time.time()))
        except BaseException:
            self._failures = failures + self._failures
            raise
        if gap_id is not None:
            report_gap(self.metrics, gap_id, min(failures), max(failures), REASON_NOT_STORED)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except StorageError as exc:
                if not is_outage(exc):  # an outage is logged once by the repository
                    logger.warning("heartbeat not stored (database error); retrying")
            except Exception:
                logger.exception("heartbeat failed; retrying")
