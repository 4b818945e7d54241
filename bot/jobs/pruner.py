"""Keeps the job table small: finished jobs go after JOB_RETENTION_DAYS, their keys later."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.common.limits import DEDUP_KEY_EXTRA_DAYS, PRUNE_INTERVAL_SECONDS
from bot.common.tasks import cancel_and_wait
from storage import Repository, StorageError, is_outage

logger = logging.getLogger(__name__)

DAY = 86400.0


class Pruner:
    """Deletes finished jobs past their retention, now and then, in short transactions.

    Their dedup keys stay (in a compact table) DEDUP_KEY_EXTRA_DAYS longer, so a hook or update
    that comes again is still known as a duplicate; pending and dead jobs are never touched.
    """

    def __init__(
        self, repo: Repository, retention_days: int, interval: float = PRUNE_INTERVAL_SECONDS
    ) -> None:
        self.repo = repo
        self.retention = retention_days * DAY
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, now: float | None = None) -> tuple[int, int]:
        """One pass; (jobs deleted, keys forgotten)."""
        now = time.time() if now is None else now
        cutoff = now - self.retention
        jobs, keys = await self.repo.prune(cutoff, cutoff - DEDUP_KEY_EXTRA_DAYS * DAY)
        if jobs or keys:
            logger.info("pruned %d finished job(s) and %d old dedup key(s)", jobs, keys)
        return jobs, keys

    def start(self) -> None:
        """Prune every `interval` seconds until stopped."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="job-pruner")

    async def stop(self) -> None:
        """Stop pruning (a pass in progress ends with its current short transaction)."""
        await cancel_and_wait([self._task])
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except StorageError as exc:
                if not is_outage(exc):  # an outage is logged once by the repository
                    logger.warning("pruning failed (database error); trying again later")
            except Exception:
                logger.exception("pruning failed; trying again later")
            await asyncio.sleep(self.interval)
