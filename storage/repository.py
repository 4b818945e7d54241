"""Repository over one SQLite file: a writer connection (serialised) and a reader connection."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiosqlite

from storage.migrations import MIGRATIONS

StorageError = sqlite3.Error
# The database as a whole refuses (locked, full, read-only, gone), not one statement's data.
StorageUnavailable = sqlite3.OperationalError
logger = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True, order=True)
class ChatKey:
    """Which conversation: a Telegram chat as one bot sees it.

    `bot` is 0 for the primary bot (the first token; its chats keep the ids they had before
    there were several bots) and the bot's Telegram id for every other bot.
    """

    bot: int
    chat_id: int


@dataclass(frozen=True, slots=True)
class BusinessConnection:
    """A Telegram Business account connected to one of the bots (`business_connection`)."""

    id: str
    bot: int  # the bot key of the bot it is connected to
    owner_id: int
    owner_name: str
    user_chat_id: int  # the owner's private chat with the bot (for notices)
    can_reply: bool
    can_read: bool
    enabled: bool
    updated_at: float = 0.0


_CONNECTION_COLUMNS = (
    "id, bot, owner_id, owner_name, user_chat_id, can_reply, can_read, enabled, updated_at"
)


def _connection(row: sqlite3.Row | tuple[Any, ...]) -> BusinessConnection:
    return BusinessConnection(
        id=row[0],
        bot=row[1],
        owner_id=row[2],
        owner_name=row[3],
        user_chat_id=row[4],
        can_reply=bool(row[5]),
        can_read=bool(row[6]),
        enabled=bool(row[7]),
        updated_at=row[8],
    )


@dataclass(frozen=True, slots=True)
class Customer:
    """A Telegram private chat known to the bridge."""

    bot: int
    chat_id: int
    user_id: int
    name: str
    username: str | None
    language_code: str | None
    phone: str | None
    last_message_at: float | None
    blocked: bool
    amo_conversation_id: str | None
    amo_user_id: str | None
    amo_chat_id: str | None = None

    @property
    def key(self) -> ChatKey:
        """The conversation this customer's chat is."""
        return ChatKey(self.bot, self.chat_id)


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    """What a customer's update tells about them."""

    key: ChatKey
    user_id: int
    name: str
    username: str | None
    language_code: str | None
    message_at: float | None


@dataclass(frozen=True, slots=True)
class MessageLink:
    """One Telegram message paired with its amoCRM counterpart."""

    key: ChatKey
    tg_message_id: int
    direction: str
    our_msgid: str | None = None
    amo_message_id: str | None = None
    content_hash: str | None = None

    @property
    def chat_id(self) -> int:
        """The Telegram chat of the message."""
        return self.key.chat_id


@dataclass(frozen=True, slots=True)
class Gap:
    """An interval in which amojo hooks may have been missed, and its recovery so far."""

    id: int
    started_at: float
    ended_at: float
    reason: str
    created_at: float
    conversations: int | None
    scanned: int
    recovered: int
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class RecoveryTarget:
    """A customer's chat to read from amojo's history after a gap."""

    key: ChatKey
    user_id: int
    name: str
    amo_chat_id: str | None


_GAP_COLUMNS = (
    "id, started_at, ended_at, reason, created_at, conversations, scanned, recovered, finished_at"
)


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


@dataclass(slots=True)
class _Listeners:
    callbacks: list[Any] = field(default_factory=list)


_UPSERT_CUSTOMER = (
    "INSERT INTO customers (bot, chat_id, user_id, name, username, language_code, "
    "last_message_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (bot, chat_id) DO UPDATE SET user_id = excluded.user_id, "
    "name = excluded.name, username = excluded.username, "
    "language_code = excluded.language_code, "
    "last_message_at = max(coalesce(customers.last_message_at, 0), "
    "coalesce(excluded.last_message_at, 0)), updated_at = excluded.updated_at"
)
_INSERT_BATCH = 500  # rows per INSERT: 9 parameters each, far below SQLite's variable limit
_JOB_COLUMNS = (
    "id, queue, kind, lane, dedup_key, payload, state, attempts, created_at, "
    "next_attempt_at, updated_at, last_error, redriven_at, pos"
)
_JOINED_JOB_COLUMNS = ", ".join(f"jobs.{name.strip()}" for name in _JOB_COLUMNS.split(","))
_CUSTOMER_COLUMNS = (
    "bot, chat_id, user_id, name, username, language_code, phone, last_message_at, blocked, "
    "amo_conversation_id, amo_user_id, amo_chat_id"
)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    # A lone UTF-16 surrogate (text cut inside an emoji) has no UTF-8 form, so SQLite cannot
    # bind it; as a JSON escape it is stored and read back unchanged. Outside string literals
    # json.dumps writes ASCII only, so every such character sits inside a string.
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


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


def _customer(row: sqlite3.Row | tuple[Any, ...]) -> Customer:
    return Customer(
        bot=row[0],
        chat_id=row[1],
        user_id=row[2],
        name=row[3],
        username=row[4],
        language_code=row[5],
        phone=row[6],
        last_message_at=row[7],
        blocked=bool(row[8]),
        amo_conversation_id=row[9],
        amo_user_id=row[10],
        amo_chat_id=row[11],
    )


_LINK_COLUMNS = "bot, chat_id, tg_message_id, direction, our_msgid, amo_message_id, content_hash"


def _link(row: sqlite3.Row | tuple[Any, ...]) -> MessageLink:
    return MessageLink(ChatKey(row[0], row[1]), *row[2:])


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


async def _to_completion(step: Awaitable[Any]) -> Any:
    """Await a database step to its end even if the caller is cancelled meanwhile.

    The step runs in aiosqlite's thread whatever happens to its awaiter; leaving before it ends
    would hand the writer on while a BEGIN or COMMIT is still under way. A cancellation that
    arrives meanwhile is re-raised once the step has finished.
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        error = None if task.cancelled() else task.exception()
        if error is not None:  # the caller sees the cancellation; the failure is not hidden
            logger.error("database step failed while its caller was cancelled: %r", error)
        raise asyncio.CancelledError
    return task.result()


class WriteLock:
    """FIFO lock over the writer connection in which urgent holders go first."""

    def __init__(self) -> None:
        self._locked = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def hold(self, *, urgent: bool = False) -> AsyncIterator[None]:
        """Hold the lock for the block."""
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._locked:
            self._locked = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._urgent if urgent else self._normal
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # ownership was handed over just before the cancellation
            else:
                queue.remove(waiter)
            raise

    def _release(self) -> None:
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # ownership passes straight to the next holder
                    return
        self._locked = False


class Transaction:
    """Write operations; only reachable inside `Repository.transaction()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.enqueued: list[str] = []

    async def enqueue(self, jobs: Iterable[NewJob]) -> int:
        """Insert jobs, ignoring ones whose dedup_key already exists; returns how many were new."""
        return sum(await self.insert_jobs(list(jobs)))

    async def insert_jobs(self, jobs: Sequence[NewJob]) -> list[bool]:
        """Insert many jobs in few statements; True for each job that was new."""
        result = await _insert_new_jobs(self._conn, jobs)
        self.enqueued.extend(job.queue for job, new in zip(jobs, result, strict=True) if new)
        return result

    async def upsert_customers(self, profiles: Iterable[CustomerProfile]) -> None:
        """Create or refresh many customers' profiles and last-message times."""
        now = time.time()
        await self._conn.executemany(
            _UPSERT_CUSTOMER,
            [
                (
                    p.key.bot,
                    p.key.chat_id,
                    p.user_id,
                    p.name,
                    p.username,
                    p.language_code,
                    p.message_at,
                    now,
                )
                for p in profiles
            ],
        )

    async def set_customer_phone(self, key: ChatKey, phone: str) -> None:
        """Remember the phone (normalised, `+digits`) a customer shared as their own."""
        await self._conn.execute(
            "UPDATE customers SET phone = ?, updated_at = ? WHERE bot = ? AND chat_id = ?",
            (phone, time.time(), key.bot, key.chat_id),
        )

    async def set_customer_blocked(self, key: ChatKey, blocked: bool) -> None:
        """Record that the customer blocked (or unblocked) the bot."""
        await self._conn.execute(
            "UPDATE customers SET blocked = ?, updated_at = ? WHERE bot = ? AND chat_id = ?",
            (int(blocked), time.time(), key.bot, key.chat_id),
        )

    async def bind_amo_conversation(
        self, key: ChatKey, amo_conversation_id: str, amo_user_id: str | None
    ) -> None:
        """Tie a customer's chat to an amo chat (and amojo user) created on the amo side."""
        await self._conn.execute(
            "UPDATE customers SET amo_conversation_id = ?, amo_user_id = coalesce(?, "
            "amo_user_id), updated_at = ? WHERE bot = ? AND chat_id = ?",
            (amo_conversation_id, amo_user_id, time.time(), key.bot, key.chat_id),
        )

    async def save_links(self, links: Sequence[MessageLink]) -> None:
        """Store message pairs; a later save for the same Telegram message fills in gaps."""
        now = time.time()
        await self._conn.executemany(
            "INSERT INTO message_links (bot, chat_id, tg_message_id, direction, our_msgid, "
            "amo_message_id, content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bot, chat_id, tg_message_id) DO UPDATE SET "
            "our_msgid = coalesce(excluded.our_msgid, message_links.our_msgid), "
            "amo_message_id = coalesce(excluded.amo_message_id, message_links.amo_message_id), "
            "content_hash = coalesce(excluded.content_hash, message_links.content_hash)",
            [
                (
                    link.key.bot,
                    link.key.chat_id,
                    link.tg_message_id,
                    link.direction,
                    link.our_msgid,
                    link.amo_message_id,
                    link.content_hash,
                    now,
                )
                for link in links
            ],
        )

    async def save_business_connection(self, connection: BusinessConnection) -> None:
        """Store a business connection as Telegram last described it."""
        await self._conn.execute(
            f"INSERT INTO business_connections ({_CONNECTION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "bot = excluded.bot, owner_id = excluded.owner_id, owner_name = excluded.owner_name, "
            "user_chat_id = excluded.user_chat_id, can_reply = excluded.can_reply, "
            "can_read = excluded.can_read, enabled = excluded.enabled, "
            "updated_at = excluded.updated_at",
            (
                connection.id,
                connection.bot,
                connection.owner_id,
                connection.owner_name,
                connection.user_chat_id,
                int(connection.can_reply),
                int(connection.can_read),
                int(connection.enabled),
                connection.updated_at or time.time(),
            ),
        )

    async def set_amo_message_id(self, our_msgid: str, amo_message_id: str) -> None:
        """Attach amo's id to a message we sent under our own msgid."""
        await self._conn.execute(
            "UPDATE message_links SET amo_message_id = ? WHERE our_msgid = ?",
            (amo_message_id, our_msgid),
        )

    async def get_kv(self, key: str) -> str | None:
        """A small named value, as this transaction sees it."""
        async with self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def set_kv(self, key: str, value: str) -> None:
        """Store a small named value."""
        await self._conn.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

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

    async def add_gap(
        self, started_at: float, ended_at: float, reason: str, job: NewJob | None = None
    ) -> int:
        """Record an interval in which hooks may have been missed; returns its id.

        `job`, when given, is built by the caller from the id (its payload's "gap_id" is set).
        """
        rows = list(
            await self._conn.execute_fetchall(
                "INSERT INTO gaps (started_at, ended_at, reason, created_at) "
                "VALUES (?, ?, ?, ?) RETURNING id",
                (started_at, ended_at, reason, time.time()),
            )
        )
        gap_id = int(rows[0][0])
        if job is not None:
            payload = {**job.payload, "gap_id": gap_id}
            await self.enqueue(
                [
                    NewJob(
                        job.queue,
                        job.kind,
                        job.lane,
                        f"{job.dedup_key}:{gap_id}",
                        payload,
                        job.not_before,
                    )
                ]
            )
        return gap_id

    async def set_gap_conversations(self, gap_id: int, conversations: int) -> None:
        """How many conversations the recovery of a gap reads."""
        await self._conn.execute(
            "UPDATE gaps SET conversations = ? WHERE id = ?", (conversations, gap_id)
        )

    async def gap_conversation_scanned(self, gap_id: int, recovered: int) -> Gap | None:
        """Count one conversation read (and its recovered messages); the gap afterwards.

        `finished_at` is set by the call that scans the last conversation.
        """
        rows = list(
            await self._conn.execute_fetchall(
                "UPDATE gaps SET scanned = scanned + 1, recovered = recovered + ?, "
                "finished_at = CASE WHEN scanned + 1 >= coalesce(conversations, -1) "
                "THEN ? ELSE finished_at END WHERE id = ? RETURNING " + _GAP_COLUMNS,
                (recovered, time.time(), gap_id),
            )
        )
        return Gap(*rows[0]) if rows else None

    async def finish_gap(self, gap_id: int) -> Gap | None:
        """Mark a gap's recovery finished (nothing, or nothing more, to read)."""
        rows = list(
            await self._conn.execute_fetchall(
                "UPDATE gaps SET finished_at = coalesce(finished_at, ?) WHERE id = ? RETURNING "
                + _GAP_COLUMNS,
                (time.time(), gap_id),
            )
        )
        return Gap(*rows[0]) if rows else None

    async def set_amo_chat_id(self, key: ChatKey, amo_chat_id: str) -> None:
        """Remember an amo chat of a conversation (the latest is the customer's; every one is
        kept: a write-first chat is a second chat of the same customer)."""
        await self._conn.execute(
            "UPDATE customers SET amo_chat_id = ? "
            "WHERE bot = ? AND chat_id = ? AND amo_chat_id IS NOT ?",
            (amo_chat_id, key.bot, key.chat_id, amo_chat_id),
        )
        await self._conn.execute(
            "INSERT INTO amo_chats (amo_chat_id, bot, chat_id, learned_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (amo_chat_id) DO NOTHING",
            (amo_chat_id, key.bot, key.chat_id, time.time()),
        )

    async def pending_in_lane(self, queue: str, lane: str, limit: int = 200) -> list[Job]:
        """The pending jobs of one lane in the order they run (as this transaction sees it)."""
        rows = await self._conn.execute_fetchall(
            f"SELECT {_JOB_COLUMNS} FROM jobs INDEXED BY jobs_pending_lane_pos "
            "WHERE queue = ? AND lane = ? AND state = 'pending' ORDER BY coalesce(pos, id) "
            "LIMIT ?",
            (queue, lane, limit),
        )
        return [_job(row) for row in rows]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement of a storage-module extension; returns the changed row count."""
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

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

    async def delete_kv(self, key: str) -> None:
        """Forget one key."""
        await self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))


class Repository:
    """All persistence of the bridge."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = WriteLock()
        self._listeners: list[Any] = []

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except ValueError as exc:  # aiosqlite's "no active connection": a database error too
            raise sqlite3.ProgrammingError(f"database connection closed: {exc}") from exc

    @property
    def reader(self) -> aiosqlite.Connection:
        """Read-only connection for storage-module extensions."""
        return self._reader

    def on_enqueue(self, callback: Any) -> None:
        """Call `callback(queue)` after a transaction that enqueued work commits."""
        self._listeners.append(callback)

    @asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[Transaction]:
        """Serialised write transaction: commits on success, rolls back on error.

        `urgent` (intake someone is waiting on) goes ahead of queued worker transactions.
        Cancellation-safe: aiosqlite runs a statement to its end in its thread even when the
        awaiting task is cancelled, so BEGIN, COMMIT and ROLLBACK are awaited to completion
        and the writer is handed on only once it is out of its transaction.
        """
        tx = Transaction(self._writer)
        async with self._lock.hold(urgent=urgent):
            try:
                await _to_completion(self._writer.execute("BEGIN IMMEDIATE"))
                yield tx
            except BaseException:
                await _to_completion(self._leave_transaction())
                raise
            try:
                await _to_completion(self._writer.commit())
            except BaseException:
                if self._in_transaction():  # the commit itself failed
                    await _to_completion(self._leave_transaction())
                else:  # committed; only the caller was cancelled meanwhile
                    self._notify(tx.enqueued)
                raise
        self._notify(tx.enqueued)

    async def _leave_transaction(self) -> None:
        """Roll back whatever is open on the writer (nothing, when BEGIN never ran).

        Every holder of the writer leaves it outside a transaction; this is the guard that
        keeps a single-statement write from ever joining one that was left open.
        """
        if self._in_transaction():
            await self._writer.rollback()

    def _in_transaction(self) -> bool:
        try:
            return self._writer.in_transaction
        except ValueError:  # the connection is closed: nothing is open on it any more
            return False

    def _notify(self, queues: Iterable[str]) -> None:
        for queue in set(queues):
            for callback in self._listeners:
                callback(queue)

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
            result: list[bool] = await _to_completion(_insert_new_jobs(self._writer, jobs))
        self._notify(job.queue for job, new in zip(jobs, result, strict=True) if new)
        return result

    async def _autocommit(self, sql: str, params: Sequence[Any]) -> None:
        """One statement, atomic by itself, on a writer that is surely outside a transaction."""
        async with self._lock.hold():
            await _to_completion(self._leave_transaction())
            await _to_completion(self._writer.execute(sql, params))

    async def close(self) -> None:
        """Close both connections."""
        await self._reader.close()
        await self._writer.close()

    async def ping(self) -> bool:
        """True when the database answers."""
        try:
            await self._all("SELECT 1")
        except (sqlite3.Error, ValueError):
            return False
        return True

    async def enqueue(self, *jobs: NewJob) -> int:
        """Enqueue jobs in their own transaction."""
        async with self.transaction() as tx:
            return await tx.enqueue(jobs)

    async def media_file_id(self, key: str) -> str | None:
        """The file_id remembered for a media key, if any."""
        rows = await self._all("SELECT file_id FROM media_files WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def get_kv(self, key: str) -> str | None:
        """Read a small named value."""
        rows = await self._all("SELECT value FROM kv WHERE key = ?", (key,))
        for row in rows:
            return str(row[0])
        return None

    async def set_kv(self, key: str, value: str) -> None:
        """Store a small named value."""
        async with self.transaction() as tx:
            await tx.set_kv(key, value)

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

    async def chat_of_amo_chat(self, amo_chat_id: str) -> ChatKey | None:
        """Our conversation behind an amo chat id, when the bridge has seen that chat."""
        rows = await self._all(
            "SELECT bot, chat_id FROM amo_chats WHERE amo_chat_id = ?", (amo_chat_id,)
        )
        return ChatKey(rows[0][0], rows[0][1]) if rows else None

    async def amo_chats_of(self, key: ChatKey, limit: int = 5) -> list[str]:
        """Every amo chat of a conversation the bridge has seen, the latest first."""
        rows = await self._all(
            "SELECT amo_chat_id FROM amo_chats WHERE bot = ? AND chat_id = ? "
            "ORDER BY learned_at DESC LIMIT ?",
            (key.bot, key.chat_id, limit),
        )
        return [str(row[0]) for row in rows]

    async def known_message_ids(self, amo_ids: Sequence[str]) -> set[str]:
        """Which amo message ids the bridge has (their hook stored, or a message it sent)."""
        known: set[str] = set()
        for start in range(0, len(amo_ids), 400):
            chunk = list(amo_ids[start : start + 400])
            marks = ", ".join("?" * len(chunk))
            keys = [f"hook:{amo_id}" for amo_id in chunk]
            rows = await self._all(
                f"SELECT substr(dedup_key, 6) FROM jobs WHERE dedup_key IN ({marks}) "
                f"UNION SELECT substr(dedup_key, 6) FROM job_keys WHERE dedup_key IN ({marks}) "
                f"UNION SELECT amo_message_id FROM message_links WHERE amo_message_id IN ({marks})",
                [*keys, *keys, *chunk],
            )
            known.update(str(row[0]) for row in rows)
        return known

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

    async def last_gap(self) -> Gap | None:
        """The most recent gap in hook intake, if any."""
        rows = await self._all(f"SELECT {_GAP_COLUMNS} FROM gaps ORDER BY id DESC LIMIT 1")
        return Gap(*rows[0]) if rows else None

    async def recovery_targets(
        self, active_since: float, after: ChatKey | None = None, limit: int = 500
    ) -> list[RecoveryTarget]:
        """A page of the customers who wrote since `active_since`, in conversation order."""
        start = after or ChatKey(-(2**63), -(2**63))
        rows = await self._all(
            "SELECT bot, chat_id, user_id, name, amo_chat_id FROM customers "
            "WHERE last_message_at >= ? AND (bot, chat_id) > (?, ?) "
            "ORDER BY bot, chat_id LIMIT ?",
            (active_since, start.bot, start.chat_id, limit),
        )
        return [RecoveryTarget(ChatKey(row[0], row[1]), *row[2:]) for row in rows]

    async def unfinished_gaps_since(self) -> float | None:
        """Where the oldest gap whose recovery is not finished starts (None: there is none)."""
        rows = await self._all("SELECT min(started_at) FROM gaps WHERE finished_at IS NULL")
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

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

    async def business_connections(self) -> list[BusinessConnection]:
        """Every business connection ever seen, oldest change first."""
        rows = await self._all(
            f"SELECT {_CONNECTION_COLUMNS} FROM business_connections ORDER BY updated_at, id"
        )
        return [_connection(row) for row in rows]

    async def get_customer(self, key: ChatKey) -> Customer | None:
        """A customer by bot and Telegram chat id."""
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE bot = ? AND chat_id = ?",
            (key.bot, key.chat_id),
        )
        return _customer(rows[0]) if rows else None

    async def customers_with_phone(
        self, phone: str, limit: int = 10, *, bot: int | None = None, accounts: bool = False
    ) -> list[Customer]:
        """Customers who shared this very phone (normalised, `+digits`) as their own.

        `bot` narrows the search to one bot's customers (None: every bot's). Chats of Business
        accounts (negative keys) match only with `accounts`, and then only they do: a bot cannot
        write first on an account's behalf.
        """
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE phone = ? "
            "AND (? IS NULL OR bot = ?) AND (bot < 0) = ? ORDER BY updated_at DESC LIMIT ?",
            (phone, bot, bot, accounts, limit),
        )
        return [_customer(row) for row in rows]

    async def customer_by_amo_conversation(self, amo_conversation_id: str) -> Customer | None:
        """The customer whose chat is bound to this amo chat id."""
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE amo_conversation_id = ?",
            (amo_conversation_id,),
        )
        return _customer(rows[0]) if rows else None

    async def has_conversations(self) -> bool:
        """Whether any customer chat or message pair is stored."""
        rows = await self._all(
            "SELECT EXISTS (SELECT 1 FROM customers) OR EXISTS (SELECT 1 FROM message_links)"
        )
        return bool(rows[0][0])

    async def count_blocked_customers(self) -> int:
        """How many customers currently block the bot."""
        rows = await self._all("SELECT count(*) FROM customers WHERE blocked = 1")
        return int(rows[0][0])

    async def get_link(self, key: ChatKey, tg_message_id: int) -> MessageLink | None:
        """The amo side of a Telegram message."""
        rows = await self._all(
            f"SELECT {_LINK_COLUMNS} FROM message_links "
            "WHERE bot = ? AND chat_id = ? AND tg_message_id = ?",
            (key.bot, key.chat_id, tg_message_id),
        )
        return _link(rows[0]) if rows else None

    async def last_incoming_message(self, key: ChatKey) -> int | None:
        """The Telegram id of the customer's latest bridged message in a chat."""
        rows = await self._all(
            "SELECT MAX(tg_message_id) FROM message_links "
            "WHERE bot = ? AND chat_id = ? AND direction = 'in'",
            (key.bot, key.chat_id),
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def links_for_amo_message(self, amo_id: str) -> list[MessageLink]:
        """Telegram messages for an amo message id (or our own msgid), in send order."""
        rows = await self._all(
            f"SELECT {_LINK_COLUMNS} FROM message_links "
            "WHERE amo_message_id = ? OR our_msgid = ? ORDER BY id",
            (amo_id, amo_id),
        )
        return [_link(row) for row in rows]


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        # FULL: a commit confirmed to the outside world (the getUpdates offset, a hook's 200)
        # must survive a power cut, not only kill -9; NORMAL in WAL mode may lose the last
        # commits on an OS crash. https://sqlite.org/pragma.html#pragma_synchronous
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await conn.close()  # its thread would keep the process alive (a file that is no database)
        raise
    return conn


def _statements(script: str) -> list[str]:
    """A script's statements; a trigger's body keeps its own semicolons."""
    statements, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    return statements


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.execute("PRAGMA journal_mode = WAL")
    rows = await conn.execute_fetchall("PRAGMA user_version")
    current = int(next(iter(rows))[0])
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


async def open_repository(path: Path | str) -> Repository:
    """Open (creating and migrating as needed) the database at `path`."""
    db_path = Path(path)
    if str(db_path) != ":memory:":
        db_path.parent.mkdir(parents=True, exist_ok=True)
    writer = await _connect(db_path)
    try:
        await _migrate(writer)
        reader = await _connect(db_path)
    except BaseException:
        await writer.close()
        raise
    await reader.execute("PRAGMA query_only = ON")
    return Repository(writer, reader)
