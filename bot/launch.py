"""`python -m bot` after the settings check: listen at once, stop cleanly at any moment.

Exit codes: 0 after SIGTERM/SIGINT at any stage, 2 when a setting is wrong (StartupError:
one line naming it, never a traceback), 1 for a bug. Services that are merely down are
waited for, with `/healthz` saying what start-up waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType

from bot.amocrm.channel import stored_channel
from bot.common.database_file import (
    KV_DATABASE_ID,
    judge_fresh,
    one_bridge_per_database,
    watch_database,
)
from bot.common.metrics import Metrics
from bot.common.settings import Settings, StartupError
from bot.common.tasks import cancel_and_wait
from bot.jobs.throttle import HookTraffic
from bot.listener.routes import Listener
from storage import Repository, StorageError, open_repository

logger = logging.getLogger(__name__)

KV_STARTED_AT = "started_at"
KV_FRESH = "fresh_database_since"  # made afresh where another had been; cleared once in use

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Libraries whose DEBUG lines would drown the bridge's own (aiosqlite logs every statement).
QUIET_LOGGERS = ("aiosqlite", "httpx", "httpcore", "asyncio", "aiogram.event")


def configure_logging(level: str) -> None:
    """Plain line logs on stderr."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class StopSignals:
    """SIGTERM and SIGINT: stop polling gracefully once it runs, cancel start-up before that.

    Only the first signal acts; later ones are logged (the shutdown is bounded anyway, and a
    second cancel could cut the clean-up short and leave the database's threads running).
    The bridge stops itself the same way (`fail`), with exit code 2.
    """

    def __init__(self, early: Callable[[], bool] = lambda: False) -> None:
        self.received: signal.Signals | None = None
        self.failure: str | None = None
        self._early = early
        self._task: asyncio.Task[object] | None = None
        self._graceful: Callable[[], None] | None = None

    def install(self) -> bool:
        """Handle the signals in the running loop for the current task; True if one came already."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self._early()

    def remove(self) -> None:
        """Stop acting on signals; a late one is ignored while the process exits."""
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

    def graceful(self, stop: Callable[[], None] | None) -> None:
        """From now on the first signal calls `stop` (None: it cancels start-up again)."""
        self._graceful = stop

    @property
    def stopping(self) -> bool:
        """A signal came, or the bridge asked to stop."""
        return self.received is not None or self.failure is not None

    def fail(self, reason: str) -> None:
        """Stop as a signal would (exit code 2): something outside makes running on wrong."""
        if self.stopping:
            return
        self.failure = reason
        logger.critical("%s; stopping", reason)
        self._act()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping:
            logger.info("%s received: already stopping", sig.name)
            return
        self.received = sig
        logger.info("%s received: stopping", sig.name)
        self._act()

    def _act(self) -> None:
        if self._graceful is not None:
            self._graceful()
        elif self._task is not None:
            self._task.cancel()


async def open_storage(settings: Settings) -> tuple[Repository, str]:
    """The database at DATABASE_PATH and its id; one it cannot open or write is a StartupError.

    A write at every start finds a read-only file, a full disk or a file owned by another
    user now, not at the first customer message.
    """
    path = settings.DATABASE_PATH
    try:
        repo = await open_repository(path)
    except (OSError, sqlite3.Error, StorageError) as exc:
        raise StartupError(
            f"DATABASE_PATH: cannot open the database at {path} ({exc}); "
            "choose a path in a writable directory"
        ) from None
    repo.outage.quiet = True  # a refusal here is a StartupError, not an outage
    try:
        database_id = await _probe_writes(repo, path)
    except BaseException:
        await repo.close()
        raise
    repo.outage.quiet = False
    return repo, database_id


async def _probe_writes(repo: Repository, path: object) -> str:
    """The database's id, written with this start's time: a write, so a database that cannot
    be written is found now. Locked by another program (a sqlite3 shell, a backup): waited
    for, as a running bridge waits out such an outage."""
    waiting = False
    while True:
        try:
            database_id = await repo.get_kv(KV_DATABASE_ID) or uuid.uuid4().hex
            async with repo.transaction() as tx:
                await tx.set_kv(KV_DATABASE_ID, database_id)
                await tx.set_kv(KV_STARTED_AT, str(time.time()))
            return database_id
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise _unwritable(path, exc) from None
            if not waiting:
                waiting = True
                logger.warning(
                    "DATABASE_PATH: the database at %s is locked by another program (%s); "
                    "waiting for it",
                    path,
                    exc,
                )
            await asyncio.sleep(1.0)
        except (OSError, sqlite3.Error) as exc:
            raise _unwritable(path, exc) from None


def _unwritable(path: object, exc: Exception) -> StartupError:
    return StartupError(
        f"DATABASE_PATH: cannot write the database at {path} ({exc}); the service's user "
        "must own the file and its directory, and the disk must have room"
    )


async def main(settings: Settings, early_signal: Callable[[], bool] = lambda: False) -> int:
    """Run the bridge; the exit code of `python -m bot`.

    `early_signal` tells whether a stop signal came before the loop could handle signals.
    """
    configure_logging(settings.LOG_LEVEL)
    for warning in settings.warnings():
        logger.warning("settings: %s", warning)
    stop = StopSignals(early_signal)
    if stop.install():
        logger.info("stopped before start-up")
        stop.remove()
        return 0
    try:
        code = await start_and_run(settings, stop)
    except StartupError as exc:
        logger.critical("cannot start: %s", exc)
        return 2
    except asyncio.CancelledError:
        if not stop.stopping:
            raise
        if stop.failure is None:
            logger.info("stopped during start-up")
        code = 0
    except Exception:
        logger.exception("stopped by an unexpected error (a bug: please report it)")
        return 1
    finally:
        stop.remove()
    return 2 if stop.failure is not None else code


async def start_and_run(settings: Settings, stop: StopSignals) -> int:
    """Open storage, listen at once (taking hooks when a scope is stored), then run the bridge.

    amojo never re-sends a hook, so every second before the listener answers is a gap: on a
    restart the stored scope is enough to verify and store hooks, long before aiogram is
    imported and amoCRM is reached. A first start answers health at once and takes hooks
    once connected.
    """
    database = Path(settings.DATABASE_PATH)
    with one_bridge_per_database(database) as lock:
        repo, database_id = await open_storage(settings)
        try:
            # A database made afresh stays "fresh" until it is confirmed in use (a hook stored
            # in it): the earlier one stays on record, and a restart meanwhile warns again.
            unconfirmed = lock.created or await repo.get_kv(KV_FRESH) is not None
            fresh = judge_fresh(database, unconfirmed, database_id, lock)
            if fresh is None:
                lock.record(database_id)
            else:
                await repo.set_kv(KV_FRESH, str(time.time()))
        except BaseException:
            await repo.close()
            raise

        async def confirm_fresh() -> None:
            lock.record(database_id)
            async with repo.transaction() as tx:
                await tx.delete_kv(KV_FRESH)

        watch = asyncio.create_task(watch_database(lock, stop.fail))
        try:
            return await run_on_database(settings, stop, repo, fresh, confirm_fresh)
        finally:
            await cancel_and_wait([watch])


async def run_on_database(
    settings: Settings,
    stop: StopSignals,
    repo: Repository,
    fresh: str | None,
    confirm_fresh: Callable[[], Awaitable[None]],
) -> int:
    listener = Listener(settings, repo, Metrics(), HookTraffic())
    listener.deps.fresh_database = fresh
    listener.deps.confirm_fresh_database = confirm_fresh
    try:
        await listener.start()
        channel = await stored_channel(repo)
        if channel is not None:
            await listener.take_hooks(channel)
        listener.waiting("loading")
        # aiogram's import takes seconds of CPU: done in a thread, so the loop keeps answering
        # hooks meanwhile (the GIL is handed over every few milliseconds).
        app: ModuleType = await import_aside("bot.app")
        run: Callable[..., Awaitable[int]] = app.run
        return await run(settings, repo, listener, on_polling=stop.graceful)
    finally:
        # Whatever happened: an open database keeps its threads, and the process, alive.
        await listener.stop()
        await repo.close()


async def import_aside(name: str) -> ModuleType:
    """Import `name` in a daemon thread; a stop meanwhile need not wait for the import.

    (`asyncio.to_thread` would: the loop's executor is joined when `asyncio.run` ends, so a
    stop during start-up waited seconds for aiogram to finish importing.)
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[ModuleType] = loop.create_future()

    def settle(module: ModuleType | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(module)  # type: ignore[arg-type]

    def work() -> None:
        try:
            module = importlib.import_module(name)
        except BaseException as exc:
            outcome: tuple[ModuleType | None, BaseException | None] = (None, exc)
        else:
            outcome = (module, None)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=work, name=f"import {name}", daemon=True).start()
    return await done
