"""`python -m bot` after the settings check: listen at once, stop cleanly at any moment.

Exit codes: 0 after SIGTERM/SIGINT at any stage, 2 when a setting is wrong (StartupError:
one line naming it, never a traceback), 1 for a bug. Services that are merely down are
waited for, with `/healthz` saying what start-up waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType

from bot.amocrm.channel import stored_channel
from bot.common.metrics import Metrics
from bot.common.settings import Settings, StartupError
from bot.jobs.throttle import HookTraffic
from bot.listener.routes import Listener
from storage import Repository, StorageError, open_repository

logger = logging.getLogger(__name__)

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
    """

    def __init__(self, early: Callable[[], bool] = lambda: False) -> None:
        self.received: signal.Signals | None = None
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

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is not None:
            logger.info("%s received: already stopping", sig.name)
            return
        self.received = sig
        logger.info("%s received: stopping", sig.name)
        if self._graceful is not None:
            self._graceful()
        elif self._task is not None:
            self._task.cancel()


@contextlib.contextmanager
def one_bridge_per_database(database: Path) -> Iterator[None]:
    """An exclusive lock beside the database for as long as this bridge runs on it.

    Two bridges on one database would both run the job workers and send every message twice.
    The lock is the kernel's (flock), so a `kill -9` or a power cut releases it; the file keeps
    the holder's pid to name it.
    """
    lock_path = database.with_name(database.name + ".lock")
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(
            f"DATABASE_PATH: cannot create the lock {lock_path} beside the database ({exc}); "
            "choose a path in a writable directory"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise StartupError(
                f"DATABASE_PATH: another bridge (pid {holder}) is running on the database at "
                f"{database}; one database, one bridge: stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


async def open_storage(settings: Settings) -> Repository:
    """The database at DATABASE_PATH; a path that cannot hold it is a StartupError."""
    try:
        return await open_repository(settings.DATABASE_PATH)
    except (OSError, sqlite3.Error, StorageError) as exc:
        raise StartupError(
            f"DATABASE_PATH: cannot open the database at {settings.DATABASE_PATH} ({exc}); "
            "choose a path in a writable directory"
        ) from None


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
        return await start_and_run(settings, stop)
    except StartupError as exc:
        logger.critical("cannot start: %s", exc)
        return 2
    except asyncio.CancelledError:
        if stop.received is None:
            raise
        logger.info("stopped during start-up")
        return 0
    except Exception:
        logger.exception("stopped by an unexpected error (a bug: please report it)")
        return 1
    finally:
        stop.remove()


async def start_and_run(settings: Settings, stop: StopSignals) -> int:
    """Open storage, listen at once (taking hooks when a scope is stored), then run the bridge.

    amojo never re-sends a hook, so every second before the listener answers is a gap: on a
    restart the stored scope is enough to verify and store hooks, long before aiogram is
    imported and amoCRM is reached. A first start answers health at once and takes hooks
    once connected.
    """
    with one_bridge_per_database(Path(settings.DATABASE_PATH)):
        return await run_on_database(settings, stop)


async def run_on_database(settings: Settings, stop: StopSignals) -> int:
    repo = await open_storage(settings)
    listener = Listener(settings, repo, Metrics(), HookTraffic())
    try:
        await listener.start()
        channel = await stored_channel(repo)
        if channel is not None:
            await listener.take_hooks(channel)
        listener.waiting("loading")
        # aiogram's import takes seconds of CPU: done in a thread, so the loop keeps answering
        # hooks meanwhile (the GIL is handed over every few milliseconds).
        app: ModuleType = await asyncio.to_thread(importlib.import_module, "bot.app")
        run: Callable[..., Awaitable[int]] = app.run
        return await run(settings, repo, listener, on_polling=stop.graceful)
    finally:
        # Whatever happened: an open database keeps its threads, and the process, alive.
        await listener.stop()
        await repo.close()
