"""Finished jobs are pruned, their keys still stop duplicates; queue counters stay exact."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.common.limits import DEDUP_KEY_EXTRA_DAYS
from bot.jobs.pruner import DAY, Pruner
from storage import NewJob, Repository, open_repository
from tests.harness import database_at


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repository]:
    repository = await open_repository(tmp_path / "bridge.sqlite3")
    yield repository
    await repository.close()


def job(key: str, queue: str = "amojo") -> NewJob:
    return NewJob(
        queue=queue, kind="customer.message", lane=f"chat:{key}", dedup_key=key, payload={}
    )


def real_counts(path: Path) -> dict[tuple[str, str], int]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT queue, state, count(*) FROM jobs WHERE state IN ('pending', 'dead') "
            "GROUP BY queue, state"
        ).fetchall()
    return {(q, s): n for q, s, n in rows}


async def counted(repo: Repository) -> dict[tuple[str, str], int]:
    stats = await repo.queue_stats()
    found = {}
    for queue, entry in stats.items():
        if entry.pending:
            found[(queue, "pending")] = entry.pending
        if entry.dead:
            found[(queue, "dead")] = entry.dead
    return found


async def test_counters_match_the_table_through_every_kind_of_change(
    repo: Repository, tmp_path: Path
) -> None:
    rng = random.Random(7)
    await repo.insert_jobs([job(f"k{n}", rng.choice(["amojo", "telegram"])) for n in range(300)])
    ids = [j.id for j in await repo.jobs(limit=1000)]
    for job_id in ids:
        action = rng.choice(["finish", "kill", "retry", "keep"])
        async with repo.transaction() as tx:
            if action == "finish":
                await tx.finish_job(job_id, [job(f"follow-{job_id}", "telegram")])
            elif action == "kill":
                await tx.kill_job(job_id, "no")
            elif action == "retry":
                await tx.retry_job(job_id, 0.0, "later")
    async with repo.transaction() as tx:
        await tx.redrive_jobs(None)
    await repo.prune(finished_before=2e9, keys_before=0.0)
    assert await counted(repo) == real_counts(tmp_path / "bridge.sqlite3")
    stats = await repo.queue_stats()
    with sqlite3.connect(tmp_path / "bridge.sqlite3") as db:
        oldest = db.execute(
            "SELECT min(created_at) FROM jobs WHERE queue = 'amojo' AND state = 'pending'"
        ).fetchone()[0]
    assert stats["amojo"].oldest_pending_created_at == oldest


async def test_pruned_jobs_stay_duplicates_until_their_keys_expire(
    repo: Repository, tmp_path: Path
) -> None:
    await repo.insert_jobs([job("hook:old"), job("hook:pending"), job("hook:dead")])
    old, pending, dead = await repo.jobs(limit=10)
    async with repo.transaction() as tx:
        await tx.finish_job(old.id)
        await tx.kill_job(dead.id, "gone")
    pruner = Pruner(repo, retention_days=7)
    later = old.created_at + 8 * DAY

    assert await pruner.run_once(now=later) == (1, 0)
    assert [j.dedup_key for j in await repo.jobs(limit=10)] == ["hook:pending", "hook:dead"]
    assert await repo.insert_jobs([job("hook:old")]) == [False]  # still a duplicate

    much_later = later + (DEDUP_KEY_EXTRA_DAYS + 1) * DAY
    assert await pruner.run_once(now=much_later) == (0, 1)
    assert await repo.insert_jobs([job("hook:old")]) == [True]
    assert await repo.get_job(pending.id) is not None


async def test_recent_finished_jobs_are_kept(repo: Repository) -> None:
    await repo.insert_jobs([job("recent")])
    [recent] = await repo.jobs(limit=1)
    async with repo.transaction() as tx:
        await tx.finish_job(recent.id)
    assert await Pruner(repo, retention_days=7).run_once(now=recent.created_at + DAY) == (0, 0)
    assert await repo.get_job(recent.id) is not None


async def test_an_existing_database_gets_exact_counters_on_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "v8.sqlite3"
    db = database_at(path, 8)
    with db:
        db.executemany(
            "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, state, next_attempt_at, "
            "created_at, updated_at) VALUES (?, 'k', 'l', ?, '{}', ?, 0, ?, 0)",
            [("amojo", f"a{n}", ("pending", "done", "dead")[n % 3], 1000.0 + n) for n in range(90)],
        )
    db.close()
    repo = await open_repository(path)
    try:
        stats = await repo.queue_stats()
        assert (stats["amojo"].pending, stats["amojo"].dead) == (30, 30)
        assert stats["amojo"].oldest_pending_created_at == 1000.0
        assert await repo.insert_jobs([job("a1")]) == [False]
    finally:
        await repo.close()


def due_by_full_scan(path: Path, queue: str, now: float) -> list[int]:
    """The original definition of a due lane head: no earlier pending job in its lane."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT j.id FROM jobs AS j WHERE j.queue = ? AND j.state = 'pending' "
            "AND j.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM jobs AS p "
            "WHERE p.queue = j.queue AND p.lane = j.lane AND p.state = 'pending' "
            "AND p.id < j.id) ORDER BY j.id",
            (queue, now),
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("seed", range(5))
async def test_lane_heads_agree_with_a_full_scan_through_every_change(
    repo: Repository, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "bridge.sqlite3"
    now = 1_000.0
    counter = 0
    for _ in range(40):
        fresh = []
        for _ in range(rng.randint(0, 8)):
            counter += 1
            lane = f"chat:{rng.randint(1, 6)}"
            fresh.append(
                NewJob(
                    queue=rng.choice(["amojo", "telegram"]),
                    kind="k",
                    lane=lane,
                    dedup_key=f"j{counter}",
                    payload={},
                    not_before=now + rng.choice([-5.0, 0.0, 5.0]),
                )
            )
        await repo.insert_jobs(fresh)
        jobs = await repo.jobs(limit=10_000)
        for job_row in rng.sample(jobs, min(len(jobs), 4)):
            async with repo.transaction() as tx:
                match rng.choice(["finish", "kill", "retry", "redrive"]):
                    case "finish" if job_row.state == "pending":
                        await tx.finish_job(job_row.id)
                    case "kill" if job_row.state == "pending":
                        await tx.kill_job(job_row.id, "x")
                    case "retry" if job_row.state == "pending":
                        await tx.retry_job(job_row.id, now + rng.choice([-1.0, 3.0]), "later")
                    case "redrive":
                        await tx.redrive_jobs(job_row.id if rng.random() < 0.7 else None)
        if rng.random() < 0.2:
            await repo.prune(finished_before=now + 100, keys_before=0.0)
        now += rng.choice([0.0, 2.0, 6.0])
        for queue in ("amojo", "telegram"):
            due = [j.id for j in await repo.due_jobs(queue, now, 1000, frozenset())]
            assert due == due_by_full_scan(path, queue, now)
