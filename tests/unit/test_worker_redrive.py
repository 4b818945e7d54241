"""Re-driving a dead letter restarts its give-up clock (an old job gets a fresh period)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.amocrm.amojo import AmojoError
from bot.common.metrics import Metrics
from bot.jobs.worker import Backoff, Done, JobKind, Worker
from storage import Job, JobState, NewJob, Repository, open_repository
from tests.harness import wait_until

HOUR = 3600.0


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    """A fresh database."""
    repository = await open_repository(tmp_path / "redrive.sqlite3")
    try:
        yield repository
    finally:
        await repository.close()


async def enqueue_old_job(repo: Repository, age: float) -> int:
    """A pending job stored `age` seconds ago; returns its id."""
    job = NewJob(queue="q", kind="k", lane="chat:1", dedup_key="old", payload={})
    async with repo.transaction() as tx:
        await tx.enqueue([job])
        await tx.execute(
            "UPDATE jobs SET created_at = ? WHERE dedup_key = 'old'", (time.time() - age,)
        )
    [stored] = await repo.jobs()
    return stored.id


class FailsOnce:
    """A runner whose first attempt fails transiently (amojo 503) and later ones succeed."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, job: Job) -> Done:
        self.runs += 1
        if self.runs == 1:
            raise AmojoError(503, "down")
        return Done()


async def run_until_settled(repo: Repository, job_id: int, runner: FailsOnce) -> Job:
    """Run the queue until the job is done or dead; returns it."""
    kinds = {"k": JobKind(run=runner, give_up_after=HOUR)}
    worker = Worker(repo, "q", kinds, metrics=Metrics(), backoff=Backoff(0.01, 0.02))
    worker.start()

    async def settled() -> bool:
        job = await repo.get_job(job_id)
        return job is not None and job.state is not JobState.PENDING

    try:
        await wait_until(settled, what="job done or dead")
    finally:
        await worker.stop(1.0)
    job = await repo.get_job(job_id)
    assert job is not None
    return job


async def test_a_job_older_than_its_give_up_time_dies_on_a_transient_failure(
    repo: Repository,
) -> None:
    job_id = await enqueue_old_job(repo, 2 * HOUR)
    runner = FailsOnce()

    job = await run_until_settled(repo, job_id, runner)

    assert job.state is JobState.DEAD
    assert job.last_error is not None and job.last_error.startswith("still failing after 72")
    assert runner.runs == 1


async def test_a_redriven_old_job_gets_a_fresh_give_up_period(repo: Repository) -> None:
    job_id = await enqueue_old_job(repo, 2 * HOUR)
    async with repo.transaction() as tx:
        await tx.kill_job(job_id, "still failing after 3600 s: amojo HTTP 503")
    before = time.time()
    async with repo.transaction() as tx:
        assert await tx.redrive_jobs(job_id) == 1
    redriven = await repo.get_job(job_id)
    assert redriven is not None and redriven.redriven_at is not None
    assert redriven.redriven_at >= before
    assert redriven.created_at < before - HOUR  # the original time stays for age reporting
    assert redriven.retrying_since == redriven.redriven_at
    runner = FailsOnce()

    job = await run_until_settled(repo, job_id, runner)

    # Its first attempt after the re-drive failed transiently: retried, not dead-lettered again.
    assert job.state is JobState.DONE
    assert runner.runs == 2
