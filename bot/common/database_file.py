"""The database file as an operator can break it: two bridges on it, deleted, replaced, new.

One bridge per database (an exclusive flock beside it: a second copy would send every message
twice); the lock file also remembers which database the last bridge ran on, so a start that
has to create a new, empty one where another had been says so loudly; and while running, the
file vanishing or being replaced stops the bridge (SQLite would go on writing to a file no one
can open again).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.common.settings import StartupError

logger = logging.getLogger(__name__)

KV_DATABASE_ID = "database_id"
WATCH_SECONDS = 1.0


@dataclass(slots=True)
class DatabaseLock:
    """The held lock: which database the previous holder ran on (None: no record)."""

    fd: int
    lock_path: Path
    previous_id: str | None

    def record(self, database_id: str) -> None:
        """Remember this bridge's pid and database in the lock file."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n{database_id}\n".encode("ascii"), 0)


@contextlib.contextmanager
def one_bridge_per_database(database: Path) -> Iterator[DatabaseLock]:
    """An exclusive lock beside the database for as long as this bridge runs on it.

    Two bridges on one database would both run the job workers and send every message twice.
    The lock is the kernel's (flock), so a `kill -9` or a power cut releases it; the file keeps
    the holder's pid to name it, and the id of the database it ran on.
    """
    lock_path = database.with_name(database.name + ".lock")
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(
            f"DATABASE_PATH: cannot create the lock {lock_path} beside the database ({exc}); "
            "the service's user must own the database's directory"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lines(fd)[0] if _lines(fd) else "unknown"
            raise StartupError(
                f"DATABASE_PATH: another bridge (pid {holder}) is running on the database at "
                f"{database}; one database, one bridge: stop it first"
            ) from None
        lines = _lines(fd)
        previous = lines[1] if len(lines) > 1 and lines[1].isalnum() else None
        lock = DatabaseLock(fd, lock_path, previous)
        lock.record(previous or "")
        yield lock
    finally:
        os.close(fd)  # closing releases the lock


def _lines(fd: int) -> list[str]:
    return os.pread(fd, 200, 0).decode("ascii", "replace").split()


def identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), None when it does not exist."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def judge_fresh(database: Path, created: bool, database_id: str, lock: DatabaseLock) -> str | None:
    """What to tell when this database is not the one the last bridge ran on (None: it is).

    A new database where another had been means the stored scope, message links, phones and
    pending jobs are gone: loud (CRITICAL, and returned for `/healthz`). Another existing
    database (restored from a backup?) is a warning.
    """
    previous = lock.previous_id
    if previous is None or previous == database_id:
        return None
    if created:
        problem = (
            f"fresh database: a new, empty database was created at {database} where the bridge "
            f"last ran on database {previous}; its stored scope, message links, phones and "
            "pending jobs are not here. If it was deleted or moved by mistake, stop the bridge "
            "and put it back (docs/operations.md#the-database-file); this clears once a hook "
            "is stored"
        )
        logger.critical("DATABASE_PATH: %s", problem)
        return problem
    logger.warning(
        "DATABASE_PATH: the database at %s (id %s) is not the one the bridge last ran on (%s): "
        "restored from a backup? What came after that backup is not in it",
        database,
        database_id,
        previous,
    )
    return None


async def watch_database(paths: list[Path], stop: Callable[[str], None]) -> None:
    """Call `stop(reason)` once one of `paths` vanishes or is replaced by another file."""
    known = {path: identity(path) for path in paths}
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        for path, was in known.items():
            now = identity(path)
            if now != was:
                what = "deleted" if now is None else "replaced by another file"
                stop(
                    f"DATABASE_PATH: {path} was {what} while the bridge ran; what arrives now "
                    "would be written where no start can read it again. Put the database back "
                    "(docs/operations.md#the-database-file) before starting again"
                )
                return
