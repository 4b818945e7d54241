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
    """The held locks: which database the previous holder ran on (None: no record)."""

    fd: int
    database: Path  # resolved: symlinks followed
    lock_path: Path
    previous_id: str | None
    database_fd: int = -1
    recorded: str = ""
    created: bool = False  # the database file did not exist, or was empty, before this start

    def record(self, database_id: str) -> None:
        """Remember this bridge's pid and database in the lock file."""
        self.recorded = database_id
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n{database_id}\n".encode("ascii"), 0)

    def renew(self) -> None:
        """The lock file was deleted or replaced while running: write the record again (the
        database itself stays locked, so no second bridge could have started meanwhile)."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return  # someone holds the new file: it cannot run on our database anyway
        os.close(self.fd)
        self.fd = fd
        self.record(self.recorded)


def _refused(database: Path, holder: str) -> StartupError:
    return StartupError(
        f"DATABASE_PATH: another bridge (pid {holder}) is running on the database at "
        f"{database}; one database, one bridge: stop it first"
    )


@contextlib.contextmanager
def one_bridge_per_database(database: Path) -> Iterator[DatabaseLock]:
    """Exclusive locks on the database file and beside it for as long as this bridge runs.

    Two bridges on one database would both run the job workers and send every message twice.
    The database file itself is locked (the kernel's flock: a `kill -9` or a power cut releases
    it; SQLite's own locks are of another kind), so a second path to it — a symlink, a hard
    link — meets the same lock; the lock file beside it keeps the holder's pid to name it, and
    the id of the database it ran on.
    """
    database = database.resolve()
    lock_path = database.with_name(database.name + ".lock")
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(
            f"DATABASE_PATH: cannot create the lock {lock_path} beside the database ({exc}); "
            "the service's user must own the database's directory"
        ) from None
    database_fd = -1
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refused(database, _lines(fd)[0] if _lines(fd) else "unknown") from None
        try:
            existed = database.exists() and database.stat().st_size > 0
            database_fd = os.open(database, os.O_RDONLY | os.O_CREAT, 0o644)
            fcntl.flock(database_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refused(database, "unknown, through another path") from None
        except OSError as exc:
            raise StartupError(
                f"DATABASE_PATH: cannot open the database at {database} ({exc}); the "
                "service's user must own the file and its directory"
            ) from None
        lines = _lines(fd)
        previous = lines[1] if len(lines) > 1 and lines[1].isalnum() else None
        lock = DatabaseLock(fd, database, lock_path, previous, database_fd, created=not existed)
        lock.record(previous or "")
        yield lock
        fd = lock.fd  # renewed while running
    finally:
        os.close(fd)  # closing releases the lock
        if database_fd >= 0:
            os.close(database_fd)


def _lines(fd: int) -> list[str]:
    return os.pread(fd, 200, 0).decode("ascii", "replace").split()


def identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), None when it does not exist."""
    found = path.stat()  # FileNotFoundError and any other OSError: the caller's to judge
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


async def watch_database(lock: DatabaseLock, stop: Callable[[str], None]) -> None:
    """Call `stop(reason)` once the database vanishes, is replaced by another file or cannot
    be reached; a lock file deleted meanwhile is written again."""
    database = lock.database
    known = identity(database)
    lock_known = identity(lock.lock_path)
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        try:
            now = identity(database)
        except OSError as exc:
            what = "deleted" if isinstance(exc, FileNotFoundError) else f"unreachable ({exc})"
            stop(_vanished(database, what))
            return
        if now != known:
            stop(_vanished(database, "replaced by another file"))
            return
        try:
            if identity(lock.lock_path) == lock_known:
                continue
        except OSError:
            pass
        logger.warning(
            "DATABASE_PATH: the lock file %s was removed; writing it again", lock.lock_path
        )
        with contextlib.suppress(OSError):
            lock.renew()
            lock_known = identity(lock.lock_path)


def _vanished(database: Path, what: str) -> str:
    return (
        f"DATABASE_PATH: {database} was {what} while the bridge ran; what arrives now "
        "would be written where no start can read it again. Put the database back "
        "(docs/operations.md#the-database-file) before starting again"
    )
