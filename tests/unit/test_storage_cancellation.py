"""A write cancelled at any await (SIGTERM cancels tasks) never leaves the writer stuck."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import NewJob, Repository, open_repository

# Enough loop turns to land the cancellation before BEGIN, during it, inside the body,
# during COMMIT and after it (each aiosqlite call takes a few turns).
CANCEL_POINTS = 40


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    repository = await open_repository(tmp_path / "bridge.sqlite3")
    try:
        yield repository
    finally:
        await repository.close()


def job(key: str) -> NewJob:
    return NewJob(queue="q", kind="k", lane=f"lane:{key}", dedup_key=key, payload={"key": key})


def stored_keys(path: Path) -> set[str]:
    """What a fresh connection sees: only committed rows."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT dedup_key FROM jobs")}


async def cancel_after(turns: int, work: asyncio.Task[object]) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work


@pytest.mark.parametrize("turns", range(CANCEL_POINTS))
async def test_cancelled_transaction_leaves_the_writer_usable(
    repo: Repository, tmp_path: Path, turns: int
) -> None:
    async def write() -> object:
        async with repo.transaction() as tx:
            await tx.enqueue([job("cancelled")])
            await tx.enqueue([job("cancelled-2")])
        return None

    await cancel_after(turns, asyncio.create_task(write()))

    # The hook path and every later transaction still commit for real.
    assert await repo.insert_jobs([job("hook")]) == [True]
    async with repo.transaction() as tx:
        await tx.enqueue([job("worker")])
    await repo.start_attempts([(1, 0.0)])
    keys = stored_keys(tmp_path / "bridge.sqlite3")
    assert {"hook", "worker"} <= keys
    # The cancelled transaction is all or nothing.
    assert ("cancelled" in keys) == ("cancelled-2" in keys)


@pytest.mark.parametrize("turns", range(0, CANCEL_POINTS, 3))
async def test_cancelled_hook_insert_is_all_or_nothing(
    repo: Repository, tmp_path: Path, turns: int
) -> None:
    task = asyncio.create_task(repo.insert_jobs([job("a"), job("b")]))
    await cancel_after(turns, task)
    keys = stored_keys(tmp_path / "bridge.sqlite3")
    assert ("a" in keys) == ("b" in keys)
    assert await repo.insert_jobs([job("a"), job("b"), job("c")]) == [
        "a" not in keys,
        "b" not in keys,
        True,
    ]
    assert {"a", "b", "c"} <= stored_keys(tmp_path / "bridge.sqlite3")


async def test_cancelled_waiters_while_a_write_runs(repo: Repository, tmp_path: Path) -> None:
    """Writers queued behind a running transaction can be cancelled without harm."""
    release = asyncio.Event()

    async def long_write() -> None:
        async with repo.transaction() as tx:
            await tx.enqueue([job("long")])
            await release.wait()

    holder = asyncio.create_task(long_write())
    await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(repo.insert_jobs([job(f"w{i}")])) for i in range(5)]
    await asyncio.sleep(0)
    for waiter in waiters[::2]:
        waiter.cancel()
    release.set()
    await holder
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert sum(1 for r in results if r == [True]) == 2
    assert {"long", "w1", "w3"} <= stored_keys(tmp_path / "bridge.sqlite3")
