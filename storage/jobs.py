"""Durable jobs: enqueue, run in lane order, retry, dead-letter, prune (the job tables)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiosqlite

from storage.core import RepositoryCore, TransactionCore, _dumps, _to_completion


class JobState(StrEnum):
    """Lifecycle of a durable job."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue; `dedup_key` makes a second insert of the same work a no-op."""

    queue: str
    kind: str
    lane: str
    dedup_key: str
    payload: dict[str, Any]
    not_before: float | None = None
    # Its place in the lane (between two jobs' positions; None: after every job there).
    pos: float | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A stored job."""

    id: int
    queue: str
    kind: str
    lane: str
    dedup_key: str
    payload: dict[str, Any]
    state: JobState
    attempts: int
    created_at: float
    next_attempt_at: float
    updated_at: float
    last_error: str | None
    redriven_at: float | None = None
    pos: float | None = None

    @property
    def position(self) -> float:
        """Where it stands in its lane (jobs run in this order)."""
        return self.id if self.pos is None else self.pos

    @property
    def retrying_since(self) -> float:
        """Start of the give-up clock: when the job was stored or last re-driven by an operator."""
        return max(self.created_at, self.redriven_at or 0.0)


@dataclass(frozen=True, slots=True)
class PruneStep:
    """Where a pruning pass stands: the last job id looked at, and what it deleted."""

    last_id: int
    deleted: int
    done: bool


@dataclass(slots=True)
class QueueStats:
    """Depth and age of one queue."""

    pending: int = 0
    dead: int = 0
    oldest_pending_created_at: float | None = None


_INSERT_BATCH = 500  # rows per INSERT: 9 parameters each, far below SQLite's variable limit


_JOB_COLUMNS = (
    "id, queue, kind, lane, dedup_key, payload, state, attempts, created_at, "
    "next_attempt_at, updated_at, last_error, redriven_at, pos"
)


_JOINED_JOB_COLUMNS = ", ".join(f"jobs.{name.strip()}" for name in _JOB_COLUMNS.split(","))


def _job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    return Job(
        id=row[0],
        queue=row[1],
        kind=row[2],
        lane=row[3],
        dedup_key=row[4],
        payload=json.loads(row[5]),
        state=JobState(row[6]),
        attempts=row[7],
        created_at=row[8],
        next_attempt_at=row[9],
        updated_at=row[10],
        last_error=row[11],
        redriven_at=row[12],
        pos=row[13],
    )


async def _insert_new_jobs(conn: aiosqlite.Connection, jobs: Sequence[NewJob]) -> list[bool]:
    """Insert jobs with multi-row statements; True for each job that was new."""
    now = time.time()
    inserted: set[str] = set()
    for start in range(0, len(jobs), _INSERT_BATCH):
        chunk = jobs[start : start + _INSERT_BATCH]
        params: list[Any] = []
        for job in chunk:
            params += [
                job.queue,
                job.kind,
                job.lane,
                job.dedup_key,
                _dumps(job.payload),
                job.not_before or now,
                now,
                now,
                job.pos,
            ]
        # A key is new when no job has it, and no pruned job had it (job_keys).
        rows = await conn.execute_fetchall(
            "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, next_attempt_at, "
            "created_at, updated_at, pos) SELECT * FROM (VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
            + ") AS v WHERE NOT EXISTS (SELECT 1 FROM job_keys AS k WHERE k.dedup_key = "
            "v.column4) ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key",
            params,
        )
        inserted.update(str(row[0]) for row in rows)
    result = []
    for job in jobs:
        result.append(job.dedup_key in inserted)
        inserted.discard(job.dedup_key)  # a second job with the same key in one call is old
    return result


class JobWrites(TransactionCore):
    """Writes of jobs (a part of Transaction)."""

    async def enqueue(self, jobs: Iterable[NewJob]) -> int:
        """Insert jobs, ignoring ones whose dedup_key already exists; returns how many were new."""
        return sum(await self.insert_jobs(list(jobs)))

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[bool]:
        """Insert many jobs in few statements; True for each job that was new."""
        result = await _insert_new_jobs(self._conn, jobs)
        self.enqueued.extend(job.queue for job, new in zip(jobs, result, strict=True) if new)
        return result

    async def finish_job(self, job_id: int, followups: Iterable[NewJob] = ()) -> None:
        """Mark a job done and enqueue what follows from it, atomically."""
        await self._conn.execute(
            "UPDATE jobs SET state = 'done', updated_at = ?, last_error = NULL WHERE id = ?",
            (time.time(), job_id),
        )
        await self.enqueue(followups)

    async def retry_job(self, job_id: int, next_attempt_at: float, error: str) -> None:
        """Leave a job pending and schedule its next attempt."""
        await self._conn.execute(
            "UPDATE jobs SET next_attempt_at = ?, last_error = ?, updated_at = ? WHERE id = ?",
            (next_attempt_at, error, time.time(), job_id),
        )

    async def kill_job(self, job_id: int, reason: str, followups: Iterable[NewJob] = ()) -> None:
        """Move a job to the dead-letter state with its reason."""
        await self._conn.execute(
            "UPDATE jobs SET state = 'dead', last_error = ?, updated_at = ? WHERE id = ?",
            (reason, time.time(), job_id),
        )
        await self.enqueue(followups)

    async def redrive_jobs(self, job_id: int | None = None) -> int:
        """Put dead jobs (one, or all when `job_id` is None) back in the queue.

        `redriven_at` restarts the give-up clock: an old job must not die on its first failure.
        """
        now = time.time()
        sql = (
            "UPDATE jobs SET state = 'pending', next_attempt_at = ?, updated_at = ?, "
            "redriven_at = ? WHERE state = 'dead'"
        )
        params: tuple[Any, ...] = (now, now, now)
        if job_id is not None:
            sql += " AND id = ?"
            params += (job_id,)
        rows = list(await self._conn.execute_fetchall(sql + " RETURNING queue", params))
        self.enqueued.extend(str(row[0]) for row in rows)
        return len(rows)

    async def pending_in_lane(self, queue: str, lane: str, limit: int = 200) -> list[Job]:
        """The pending jobs of one lane in the order they run (as this transaction sees it)."""
        rows = await self._conn.execute_fetchall(
            f"SELECT {_JOB_COLUMNS} FROM jobs INDEXED BY jobs_pending_lane_pos "
            "WHERE queue = ? AND lane = ? AND state = 'pending' ORDER BY coalesce(pos, id) "
            "LIMIT ?",
            (queue, lane, limit),
        )
        return [_job(row) for row in rows]

    async def set_positions(self, positions: Sequence[tuple[int, float]]) -> None:
        """Move jobs to new places in their lanes ((job id, position) pairs)."""
        await self._conn.executemany(
            "UPDATE jobs SET pos = ? WHERE id = ?", [(pos, job_id) for job_id, pos in positions]
        )

    async def prune_batch(self, after_id: int, finished_before: float, size: int) -> PruneStep:
        """Delete the finished jobs among the `size` jobs after `after_id` (keeping their keys)."""
        rows = list(
            await self._conn.execute_fetchall(
                "SELECT id, state, updated_at, dedup_key, created_at FROM jobs WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (after_id, size),
            )
        )
        if not rows:
            return PruneStep(after_id, 0, done=True)
        old = [
            (row[0], row[3], row[2])
            for row in rows
            if row[1] == "done" and row[2] < finished_before
        ]
        if old:
            await self._conn.executemany(
                "INSERT OR IGNORE INTO job_keys (dedup_key, finished_at) VALUES (?, ?)",
                [(key, finished) for _, key, finished in old],
            )
            await self._conn.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i, _, _ in old])
        # Jobs are stored in id order: once one was created after the cutoff, so were the rest.
        last = rows[-1]
        return PruneStep(
            int(last[0]), len(old), done=len(rows) < size or last[4] >= finished_before
        )

    async def prune_keys(self, finished_before: float, size: int) -> int:
        """Forget up to `size` dedup keys (and remembered file_ids) older than the cutoff."""
        cursor = await self._conn.execute(
            "DELETE FROM job_keys WHERE dedup_key IN (SELECT dedup_key FROM job_keys "
            "WHERE finished_at < ? LIMIT ?)",
            (finished_before, size),
        )
        files = await self._conn.execute(
            "DELETE FROM media_files WHERE key IN (SELECT key FROM media_files "
            "WHERE stored_at < ? LIMIT ?)",
            (finished_before, size),
        )
        return cursor.rowcount + files.rowcount

    async def remember_media_file(self, key: str, file_id: str) -> None:
        """Telegram's file_id of a file sent once (a broadcast re-sends it by id)."""
        await self._conn.execute(
            "INSERT INTO media_files (key, file_id, stored_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET file_id = excluded.file_id, "
            "stored_at = excluded.stored_at",
            (key, file_id, time.time()),
        )


class JobReads(RepositoryCore):
    """Reads of jobs (a part of Repository)."""

    async def start_attempts(self, leases: Sequence[tuple[int, float]]) -> None:
        """Count an attempt for each job before it touches the network, and lease it: it is
        not due again before its time, however its attempt ends (one atomic statement)."""
        if not leases:
            return
        await self._autocommit(
            "UPDATE jobs SET attempts = attempts + 1, next_attempt_at = lease.column2 FROM "
            f"(VALUES {', '.join(['(?, ?)'] * len(leases))}) AS lease "
            "WHERE jobs.id = lease.column1",
            [value for lease in leases for value in lease],
        )

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[bool]:
        """Store jobs at once, each True when new (False: its dedup_key was already stored).

        Taking the writer ahead of queued worker transactions: intake (an amojo hook waiting
        for its 200) never waits behind a backlog of them. Up to 500 jobs are one atomic
        statement (one round trip to SQLite's thread); more take a transaction.
        """
        if len(jobs) > _INSERT_BATCH:
            async with self.transaction(urgent=True) as tx:
                return await tx.insert_jobs(jobs)
        async with self._lock.hold(urgent=True):
            await _to_completion(self._leave_transaction())
            try:
                result: list[bool] = await _to_completion(_insert_new_jobs(self._writer, jobs))
            except BaseException as exc:
                self.outage.failed(exc)
                raise
        self.outage.succeeded()
        self._notify(job.queue for job, new in zip(jobs, result, strict=True) if new)
        return result

    async def enqueue(self, *jobs: NewJob) -> int:
        """Enqueue jobs in their own transaction."""
        async with self.transaction() as tx:
            return await tx.enqueue(jobs)

    async def media_file_id(self, key: str) -> str | None:
        """The file_id remembered for a media key, if any."""
        rows = await self._all("SELECT file_id FROM media_files WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def due_jobs(
        self, queue: str, now: float, limit: int, busy_lanes: frozenset[str] | set[str]
    ) -> list[Job]:
        """The head job of each lane that is due now, oldest first, skipping busy lanes."""
        rows = await self._all(
            # Heads in job order, skipping the ones not due: one index walk, however many lanes.
            f"SELECT {_JOINED_JOB_COLUMNS} FROM lane_heads AS h INDEXED BY lane_heads_order "
            "JOIN jobs ON jobs.id = h.job_id "
            "WHERE h.queue = ? AND h.next_attempt_at <= ? ORDER BY h.job_id LIMIT ?",
            (queue, now, limit + len(busy_lanes)),
        )
        jobs = [_job(row) for row in rows]
        return [job for job in jobs if job.lane not in busy_lanes][:limit]

    async def next_due_at(self, queue: str) -> float | None:
        """When the earliest pending job of a queue becomes due."""
        rows = await self._all(
            "SELECT min(next_attempt_at) FROM jobs WHERE queue = ? AND state = 'pending'",
            (queue,),
        )
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def get_job(self, job_id: int) -> Job | None:
        """One job by id."""
        rows = await self._all(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def jobs(
        self, *, state: JobState | None = None, kind: str | None = None, limit: int = 1000
    ) -> list[Job]:
        """Jobs filtered by state and kind, oldest first."""
        clauses, params = [], []
        if state is not None:
            clauses.append("state = ?")
            params.append(state.value)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._all(
            f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY id LIMIT ?", (*params, limit)
        )
        return [_job(row) for row in rows]

    async def pending_in_lane(self, queue: str, lane: str, limit: int = 50) -> list[Job]:
        """The pending jobs of one lane in the order they run (the head first)."""
        rows = await self._all(
            f"SELECT {_JOB_COLUMNS} FROM jobs INDEXED BY jobs_pending_lane_pos "
            "WHERE queue = ? AND lane = ? AND state = 'pending' ORDER BY coalesce(pos, id) "
            "LIMIT ?",
            (queue, lane, limit),
        )
        return [_job(row) for row in rows]

    async def newest_dead(self, limit: int) -> tuple[list[Job], int]:
        """The `limit` most recently dead-lettered jobs, newest first, and how many there are.

        Both read the partial index of dead jobs only: bounded however long the history.
        """
        rows = await self._all(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'dead' "
            "ORDER BY updated_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        total = await self._all("SELECT count(*) FROM jobs WHERE state = 'dead'")
        return [_job(row) for row in rows], int(total[0][0])

    async def prune(
        self, finished_before: float, keys_before: float, *, batch: int = 2000
    ) -> tuple[int, int]:
        """Delete jobs finished before `finished_before` and keys older than `keys_before`.

        A finished job's dedup key moves to `job_keys`, so the same hook or update still counts
        as a duplicate until the key expires. Short transactions: hooks get the writer between.
        Returns (jobs deleted, keys forgotten).
        """
        jobs = keys = 0
        after_id = 0
        while True:
            async with self.transaction() as tx:
                step = await tx.prune_batch(after_id, finished_before, batch)
            jobs += step.deleted
            after_id = step.last_id
            if step.done:
                break
            await asyncio.sleep(0)
        while True:
            async with self.transaction() as tx:
                forgotten = await tx.prune_keys(keys_before, batch)
            keys += forgotten
            if forgotten < batch:
                break
            await asyncio.sleep(0)
        return jobs, keys

    async def queue_stats(self) -> dict[str, QueueStats]:
        """Pending and dead counts and the oldest pending job, per queue."""
        # Counters kept by triggers, and each queue's oldest pending job from its index: a few
        # rows read however long the history and the backlog.
        rows = await self._all("SELECT queue, state, jobs FROM queue_counts WHERE jobs > 0")
        stats: dict[str, QueueStats] = {}
        for queue, state, count in rows:
            entry = stats.setdefault(queue, QueueStats())
            if state == "pending":
                entry.pending = count
            else:
                entry.dead = count
        for queue, entry in stats.items():
            if entry.pending:
                oldest = await self._all(
                    "SELECT created_at FROM jobs INDEXED BY jobs_pending_oldest "
                    "WHERE queue = ? AND state = 'pending' ORDER BY id LIMIT 1",
                    (queue,),
                )
                entry.oldest_pending_created_at = oldest[0][0] if oldest else None
        return stats

    async def newest_job_created_at(self) -> float | None:
        """When the newest job was stored (a lower bound of the last moment the bridge ran)."""
        rows = await self._all("SELECT max(created_at) FROM jobs")
        value = rows[0][0] if rows else None
        return float(value) if value is not None else None

    async def count_dead_since(self, since: float) -> int:
        """How many jobs were dead-lettered since `since` (unix time)."""
        rows = await self._all(
            "SELECT count(*) FROM jobs WHERE state = 'dead' AND updated_at >= ?", (since,)
        )
        return int(rows[0][0])
