"""When hooks could have been missed: the listener's durable heartbeat and the gaps it leaves.

amojo sends each hook once and never again (spec §3.1). Any interval in which the listener
could not take and store hooks is a gap; each gap becomes a durable recovery job that reads
amojo's chat history (bot/recovery.py). Kept free of aiogram: a restart records its gap and
takes hooks before the slow imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bot.metrics import Metrics
from bot.queues import RECOVERY_QUEUE
from storage import NewJob, Repository, StorageError

logger = logging.getLogger(__name__)

KV_HEARTBEAT = "listener.heartbeat"
KIND_RECOVER_GAP = "recovery.gap"
HEARTBEAT_SECONDS = 2.0
# Widened on both sides: the heartbeat's own step, and clocks of amojo and ours a little apart.
GAP_MARGIN_SECONDS = 60.0
# A database from before heartbeats: the gap starts at its newest job, but at most this long
# ago (the upgrade's own restart), so an idle bridge does not send days-old history.
UNKNOWN_START_CAP_SECONDS = 10 * 60


def recovery_job(started_at: float, ended_at: float) -> NewJob:
    """The job that recovers one gap (its dedup key and payload get the gap's id)."""
    return NewJob(
        queue=RECOVERY_QUEUE,
        kind=KIND_RECOVER_GAP,
        lane="recovery:gaps",
        dedup_key="recover-gap",
        payload={"started_at": started_at, "ended_at": ended_at},
    )


async def add_gap(
    repo: Repository, started_at: float, ended_at: float, reason: str, metrics: Metrics
) -> int:
    """Store a gap and the job that recovers it, in one transaction."""
    async with repo.transaction(urgent=True) as tx:
        gap_id = await tx.add_gap(started_at, ended_at, reason, recovery_job(started_at, ended_at))
    metrics.recovery_gaps.labels(reason).inc()
    logger.warning(
        "gap in hook intake #%d (%s): %.1f s from %s; manager messages of it are read back "
        "from amojo's history",
        gap_id,
        reason,
        ended_at - started_at,
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started_at)),
    )
    return gap_id


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
        if since is not None:
            await add_gap(self.repo, since, listening_since, "restart", self.metrics)
        await self.repo.set_kv(KV_HEARTBEAT, repr(listening_since))
        self._task = asyncio.create_task(self._beat(), name="listener-heartbeat")

    def hook_not_stored(self, at: float) -> None:
        """A signed hook was answered non-2xx because it could not be stored."""
        self._failures.append(at)

    async def close(self) -> None:
        """Stop beating; the last beat marks the moment hooks stop being taken."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(StorageError):
            await self.beat()

    async def beat(self) -> None:
        """Store the heartbeat, with the gaps of hooks that could not be stored (atomically)."""
        failures, self._failures = self._failures, []
        try:
            async with self.repo.transaction() as tx:
                if failures:
                    await tx.add_gap(
                        min(failures),
                        max(failures),
                        "hook not stored",
                        recovery_job(min(failures), max(failures)),
                    )
                await tx.set_kv(KV_HEARTBEAT, repr(time.time()))
        except BaseException:
            self._failures = failures + self._failures
            raise
        if failures:
            self.metrics.recovery_gaps.labels("hook not stored").inc()
            logger.warning(
                "%d hook(s) could not be stored; they are read back from amojo's history",
                len(failures),
            )

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except StorageError:
                logger.warning("heartbeat not stored (database error); retrying")
            except Exception:
                logger.exception("heartbeat failed; retrying")
