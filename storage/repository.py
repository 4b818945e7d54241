"""All persistence of the bridge, one part per aggregate, over one SQLite file.

The transaction machinery is storage/core.py; each aggregate keeps its rows and SQL in its own
module (jobs, conversations, business, gaps, kv) as a part of Transaction (writes) and of
Repository (reads). Call sites see one repository.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from storage.business import BusinessConnection, BusinessReads, BusinessWrites
from storage.conversations import (
    ChatKey,
    ConversationReads,
    ConversationWrites,
    Customer,
    CustomerProfile,
    MessageLink,
)
from storage.core import (
    StorageError,
    StorageOutage,
    StorageUnavailable,
    WriteLock,
    _connect,
    _migrate,
    is_outage,
)
from storage.gaps import Gap, GapReads, GapWrites, RecoveryTarget
from storage.groups import GroupChat, GroupReads, GroupWrites
from storage.jobs import Job, JobReads, JobState, JobWrites, NewJob, PruneStep, QueueStats
from storage.kv import KvReads, KvWrites
from storage.touches import StoredTouch, TouchReads, TouchWrites

__all__ = [
    "BusinessConnection",
    "ChatKey",
    "Customer",
    "CustomerProfile",
    "Gap",
    "GroupChat",
    "Job",
    "JobState",
    "MessageLink",
    "NewJob",
    "PruneStep",
    "QueueStats",
    "RecoveryTarget",
    "Repository",
    "StorageError",
    "StorageOutage",
    "StorageUnavailable",
    "StoredTouch",
    "Transaction",
    "WriteLock",
    "is_outage",
    "open_repository",
]


class Transaction(
    GapWrites, JobWrites, ConversationWrites, BusinessWrites, KvWrites, TouchWrites, GroupWrites
):
    """Write operations; only reachable inside `Repository.transaction()`."""


class Repository(
    JobReads, ConversationReads, BusinessReads, GapReads, KvReads, TouchReads, GroupReads
):
    """All persistence of the bridge."""

    transaction_type = Transaction


async def open_repository(path: Path | str) -> Repository:
    """Open (creating and migrating as needed) the database at `path`."""
    db_path = Path(path)
    if str(db_path) != ":memory:":
        db_path.parent.mkdir(parents=True, exist_ok=True)
    writer = await _connect(db_path)
    reader = None
    try:
        await _migrate(writer)
        reader = await _connect(db_path)
        await reader.execute("PRAGMA query_only = ON")
    except BaseException:
        # An open connection's thread would keep the process alive after a start-up failure.
        for conn in (reader, writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        raise
    return Repository(writer, reader)
