"""Retry policy of the durable workers: backoff with jitter, transient vs permanent failures."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import bot.jobs.worker as worker_module
from bot.amocrm.amojo import AmojoError
from bot.common.limits import AMOJO_REFUSAL_GIVE_UP_SECONDS
from bot.common.metrics import Metrics
from bot.jobs.worker import Backoff, Done, GiveUp, JobKind, RetryLater, Worker, classify_failure
from storage import Job, JobState, NewJob, Repository, open_repository
from tests.harness import wait_until


def test_backoff_grows_exponentially_with_jitter_within_bounds() -> None:
    worker_module._JITTER.seed(1234)
    backoff = Backoff(base=1.0, cap=60.0)
    for attempts in range(1, 12):
        ceiling = min(60.0, 2.0 ** (attempts - 1))
        delays = [backoff.delay(attempts) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), attempts
        assert len(set(delays)) > 100, "no jitter"
    assert max(backoff.delay(50) for _ in range(200)) <= 60.0
    assert min(backoff.delay(50) for _ in range(200)) >= 30.0


def test_backoff_averages_grow_until_the_cap() -> None:
    worker_module._JITTER.seed(99)
    backoff = Backoff(base=0.5, cap=10.0)
    averages = [sum(backoff.delay(n) for _ in range(300)) / 300 for n in range(1, 8)]
    assert averages[:5] == sorted(averages[:5])
    assert averages[-1] <= 10.0


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        pytest.param(AmojoError(503, "down"), True, id="amojo-503"),
        pytest.param(AmojoError(500, "boom"), True, id="amojo-500"),
        pytest.param(AmojoError(429, "slow down", retry_after=7.0), True, id="amojo-429"),
        pytest.param(AmojoError(400, "bad payload"), False, id="amojo-400"),
        # A clock that is off makes amojo refuse the signature: retried, within a give-up time.
        pytest.param(AmojoError(403, "bad signature"), True, id="amojo-403"),
        pytest.param(AmojoError(401, "bad signature"), True, id="amojo-401"),
        pytest.param(AmojoError(404, "no scope"), False, id="amojo-404"),
        pytest.param(httpx.ReadTimeout("slow"), True, id="timeout"),
        pytest.param(httpx.ConnectError("refused"), True, id="refused"),
        pytest.param(RetryLater("later", 3.0), True, id="retry-later"),
        pytest.param(GiveUp("never"), False, id="give-up"),
        pytest.param(KeyError("bug"), False, id="bug"),
    ],
)
def test_transient_failures_retry_and_permanent_ones_do_not(exc: Exception, retry: bool) -> None:
    assert classify_failure(exc).retry is retry


def test_signature_refusals_retry_only_within_their_give_up_time() -> None:
    assert classify_failure(AmojoError(403, "bad signature")).give_up_after == (
        AMOJO_REFUSAL_GIVE_UP_SECONDS
    )
    assert classify_failure(AmojoError(503, "down")).give_up_after is None


def test_rate_limit_honours_retry_after() -> None:
    decision = classify_failure(AmojoError(429, "slow down", retry_after=7.0))
    assert decision.delay == 7.0


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    """A fresh database."""
    repository = await open_repository(tmp_path / "worker.sqlite3")
    try:
        yield repository
    finally:
        await repository.close()


def job(number: int, lane: str = "chat:1") -> NewJob:
    """A test job of one lane."""
    return NewJob(queue="q", kind="k", lane=lane, dedup_key=f"j{number}", payload={"n": number})


async def test_permanent_failure_is_dead_lettered_and_the_lane_moves_on(repo: Repository) -> None:
    ran: list[int] = []

    async def run(stored: Job) -> Done:
        number = int(stored.payload["n"])
        ran.append(number)
        if number == 1:
            raise AmojoError(400, "payload.message: unsupported")
        return Done()

    worker = Worker(repo, "q", {"k": JobKind(run=run)}, metrics=Metrics(), backoff=Backoff(0.01))
    await repo.enqueue(job(1), job(2), job(3))
    worker.start()
    try:
        await wait_until(lambda: len(ran) == 3, what="three jobs run")
        dead = await repo.jobs(state=JobState.DEAD)
        await wait_until(lambda: _count_done(repo, 2), what="two jobs done")
    finally:
        await worker.stop(1.0)

    assert ran == [1, 2, 3]
    assert [d.payload["n"] for d in dead] == [1]
    assert dead[0].last_error is not None
    assert "400" in dead[0].last_error
    assert "unsupported" in dead[0].last_error


async def _count_done(repo: Repository, expected: int) -> bool:
    return len(await repo.jobs(state=JobState.DONE)) == expected


async def test_transient_failure_retries_in_order(repo: Repository) -> None:
    ran: list[int] = []
    failures = {1: 2}

    async def run(stored: Job) -> Done:
        number = int(stored.payload["n"])
        ran.append(number)
        if failures.get(number, 0) > 0:
            failures[number] -= 1
            raise AmojoError(503, "down")
        return Done()

    worker = Worker(repo, "q", {"k": JobKind(run=run)}, metrics=Metrics(), backoff=Backoff(0.01))
    await repo.enqueue(job(1), job(2))
    worker.start()
    try:
        await wait_until(lambda: _count_done(repo, 2), what="both jobs done")
    finally:
        await worker.stop(1.0)

    assert ran == [1, 1, 1, 2]
    first = await repo.get_job(1)
    assert first is not None and first.attempts == 3


async def test_a_failing_dead_letter_handler_still_ends_in_a_dead_letter(repo: Repository) -> None:
    ran: list[int] = []

    async def run(stored: Job) -> Done:
        ran.append(int(stored.payload["n"]))
        raise GiveUp("never")

    async def on_dead(stored: Job, reason: str) -> list[NewJob]:
        raise ValueError("the stored payload cannot be read")

    kind = JobKind(run=run, on_dead=on_dead)
    worker = Worker(repo, "q", {"k": kind}, metrics=Metrics(), backoff=Backoff(0.01))
    await repo.enqueue(job(1), job(2))
    worker.start()
    try:
        await wait_until(lambda: _count_dead(repo, 2), what="both dead-lettered")
    finally:
        await worker.stop(1.0)
    assert ran == [1, 2]  # once each: no re-run of a job whose failure handling failed
    dead = await repo.jobs(state=JobState.DEAD)
    assert all("ValueError" in (d.last_error or "") for d in dead)


async def test_an_error_recording_a_success_ends_in_a_dead_letter_not_a_rerun(
    repo: Repository,
) -> None:
    ran: list[int] = []

    async def record(tx: object) -> None:
        raise TypeError("a bug in what the job records")

    async def run(stored: Job) -> Done:
        ran.append(int(stored.payload["n"]))
        return Done(record=record)

    worker = Worker(repo, "q", {"k": JobKind(run=run)}, metrics=Metrics(), backoff=Backoff(0.01))
    await repo.enqueue(job(1), job(2))
    worker.start()
    try:
        await wait_until(lambda: _count_dead(repo, 2), what="both dead-lettered")
    finally:
        await worker.stop(1.0)
    assert ran == [1, 2]
    [first, _] = await repo.jobs(state=JobState.DEAD)
    assert "TypeError: a bug in what the job records" in (first.last_error or "")


async def test_a_job_left_unfinished_is_not_due_again_at_once(repo: Repository) -> None:
    await repo.enqueue(job(1))
    [due] = await repo.due_jobs("q", time.time(), 10, set())
    await repo.start_attempts([(due.id, time.time() + 30)])  # then the process dies
    assert await repo.due_jobs("q", time.time(), 10, set()) == []
    [later] = await repo.due_jobs("q", time.time() + 31, 10, set())
    assert (later.id, later.attempts) == (due.id, 1)


async def _count_dead(repo: Repository, expected: int) -> bool:
    return len(await repo.jobs(state=JobState.DEAD)) == expected
