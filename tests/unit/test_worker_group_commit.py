"""Group commit of finished jobs: fewer transactions, same per-job outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from bot.common.metrics import Metrics
from bot.jobs.worker import Backoff, Done, JobKind, Worker
from storage import Job, JobState, NewJob, Repository, open_repository
from storage.repository import Transaction
from tests.harness import wait_until

LANES = 10


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    """A fresh database."""
    repository = await open_repository(tmp_path / "group.sqlite3")
    try:
        yield repository
    finally:
        await repository.close()


def lane_job(number: int) -> NewJob:
    """Job `number` in a lane of its own."""
    return NewJob(
        queue="q", kind="k", lane=f"chat:{number}", dedup_key=f"j{number}", payload={"n": number}
    )


async def _all_done(repo: Repository) -> bool:
    return len(await repo.jobs(state=JobState.DONE)) == LANES


def count_transactions(repo: Repository) -> list[int]:
    """Count write transactions from now on."""
    counter = [0]
    original = repo.transaction

    def counting() -> AbstractAsyncContextManager[Transaction]:
        counter[0] += 1
        return original()

    repo.transaction = counting  # type: ignore[method-assign, assignment]
    return counter


async def test_jobs_finishing_together_share_transactions(repo: Repository) -> None:
    gate = asyncio.Event()

    async def run(stored: Job) -> Done:
        await gate.wait()
        return Done()

    await repo.enqueue(*(lane_job(n) for n in range(LANES)))
    worker = Worker(repo, "q", {"k": JobKind(run=run)}, metrics=Metrics(), backoff=Backoff(0.01))
    worker.start()
    try:
        await wait_until(lambda: len(worker._inflight) == LANES, what="all jobs running")
        transactions = count_transactions(repo)
        gate.set()
        await wait_until(lambda: _all_done(repo), what="all jobs done")
    finally:
        await worker.stop(1.0)

    assert transactions[0] < LANES


async def test_an_outcome_that_cannot_be_stored_fails_alone(repo: Repository) -> None:
    gate = asyncio.Event()
    runs: Counter[int] = Counter()
    # Job 4's outcome fails in the shared transaction and again on its own; then it works.
    failures_left = {4: 2}

    async def run(stored: Job) -> Done:
        number = int(stored.payload["n"])
        runs[number] += 1
        await gate.wait()

        async def record(tx: Transaction) -> None:
            if failures_left.get(number, 0) > 0:
                failures_left[number] -= 1
                raise sqlite3.OperationalError("disk I/O error")

        return Done(record=record)

    await repo.enqueue(*(lane_job(n) for n in range(LANES)))
    worker = Worker(repo, "q", {"k": JobKind(run=run)}, metrics=Metrics(), backoff=Backoff(0.01))
    worker.start()
    try:
        await wait_until(lambda: len(worker._inflight) == LANES, what="all jobs running")
        gate.set()
        await wait_until(lambda: _all_done(repo), what="all jobs done")
    finally:
        await worker.stop(1.0)

    # Only the job whose outcome could not be stored ran again; the rest of its batch did not.
    assert runs == {n: 2 if n == 4 else 1 for n in range(LANES)}
