"""The transaction machinery over one SQLite file: a writer (serialised) and a reader."""

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from storage.migrations import MIGRATIONS

if TYPE_CHECKING:
    from storage.repository import Transaction

StorageError = sqlite3.Error
# The database as a whole refuses (locked, full, read-only, gone), not one statement's data.
StorageUnavailable = sqlite3.OperationalError
logger = logging.getLogger(__name__)
# SQLite's primary result codes that say the database as a whole refuses writes, whatever the
# statement (https://sqlite.org/rescode.html). CORRUPT is not among them: it is no passing
# outage, and is logged in full every time.
_OUTAGE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
    }
)
# An outage is over once writes have worked this long since the last one that failed: a
# disk that is full for new pages but takes rewrites would otherwise flap it on and off.
OUTAGE_CLEARS_AFTER_SECONDS = 5.0


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the database refuses writes as a whole (not one statement's bug)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _OUTAGE_CODES


class StorageOutage:
    """Whether the database refuses writes now: one log line when it starts, one when it ends.

    Callers retry on their own (hooks are answered 503, updates stay unconfirmed, jobs keep
    their lease); this keeps their retries out of the log and tells `/healthz`.
    """

    def __init__(self) -> None:
        self.since: float | None = None
        self.reason = ""
        self.failures = 0
        self.last_failure = 0.0
        self.quiet = False  # the caller reports it (start-up's own check)

    def failed(self, exc: BaseException) -> None:
        """A write failed; the first failure of an outage is logged."""
        if not is_outage(exc):
            return
        self.failures += 1
        self.last_failure = time.monotonic()
        if self.since is None and not self.quiet:
            self.since, self.reason = time.time(), str(exc)
            logger.error(
                "storage: the database refuses writes (%s); hooks are answered 503 and "
                "Telegram updates stay unconfirmed until it takes them again",
                exc,
            )

    def succeeded(self) -> None:
        """A write committed: an outage, if there was one, is over once writes have kept
        working for a while."""
        if self.since is None:
            return
        if time.monotonic() - self.last_failure < OUTAGE_CLEARS_AFTER_SECONDS:
            return
        logger.warning(
            "storage: the database takes writes again after %.0f s (%d failed attempts)",
            time.time() - self.since,
            self.failures,
        )
        self.since, self.reason, self.failures = None, "", 0


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _dumps(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    # A lone UTF-16 surrogate (text cut inside an emoji) has no UTF-8 form, so SQLite cannot
    # bind it; as a JSON escape it is stored and read back unchanged. Outside string literals
    # json.dumps writes ASCII only, so every such character sits inside a string.
    return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


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


class TransactionCore:
    """What every part of a write transaction builds on: the writer connection."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.enqueued: list[str] = []

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement of a storage-module extension; returns the changed row count."""
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount


class RepositoryCore:
    """What every part of the repository builds on: the connections and transactions."""

    transaction_type: type[Transaction]

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = WriteLock()
        self._listeners: list[Any] = []
        self.outage = StorageOutage()

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
        tx = self.transaction_type(self._writer)
        async with self._lock.hold(urgent=urgent):
            try:
                await _to_completion(self._writer.execute("BEGIN IMMEDIATE"))
                yield tx
            except BaseException as exc:
                self.outage.failed(exc)
                await _to_completion(self._leave_transaction())
                raise
            try:
                await _to_completion(self._writer.commit())
            except BaseException as exc:
                if self._in_transaction():  # the commit itself failed
                    self.outage.failed(exc)
                    await _to_completion(self._leave_transaction())
                else:  # committed; only the caller was cancelled meanwhile
                    self._notify(tx.enqueued)
                raise
        self.outage.succeeded()
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

    async def _autocommit(self, sql: str, params: Sequence[Any]) -> None:
        """One statement, atomic by itself, on a writer that is surely outside a transaction."""
        async with self._lock.hold():
            await _to_completion(self._leave_transaction())
            try:
                await _to_completion(self._writer.execute(sql, params))
            except BaseException as exc:
                self.outage.failed(exc)
                raise
        self.outage.succeeded()

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
