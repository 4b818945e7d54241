"""Gaps in hook intake and how far their recovery got."""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.conversations import ChatKey
from storage.core import RepositoryCore
from storage.jobs import JobWrites, NewJob


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


class GapWrites(JobWrites):
    """Writes of gaps (a part of Transaction)."""

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


class GapReads(RepositoryCore):
    """Reads of gaps (a part of Repository)."""

    async def last_gap(self) -> Gap | None:
        """The most recent gap in hook intake, if any."""
        rows = await self._all(f"SELECT {_GAP_COLUMNS} FROM gaps ORDER BY id DESC LIMIT 1")
        return Gap(*rows[0]) if rows else None

    async def recovery_targets(
        self, active_since: float, after: ChatKey | None = None, limit: int = 500
    ) -> list[RecoveryTarget]:
        """A page of the customers who wrote since `active_since`, in conversation order."""
        start = after or ChatKey(-(2**63), -(2**63), -(2**63))
        rows = await self._all(
            "SELECT bot, chat_id, user_id, name, amo_chat_id, thread FROM customers "
            "WHERE last_message_at >= ? AND (bot, chat_id, thread) > (?, ?, ?) "
            "ORDER BY bot, chat_id, thread LIMIT ?",
            (active_since, start.bot, start.chat_id, start.thread, limit),
        )
        return [RecoveryTarget(ChatKey(row[0], row[1], row[5]), *row[2:5]) for row in rows]

    async def unfinished_gaps_since(self) -> float | None:
        """Where the oldest gap whose recovery is not finished starts (None: there is none)."""
        rows = await self._all("SELECT min(started_at) FROM gaps WHERE finished_at IS NULL")
        return float(rows[0][0]) if rows and rows[0][0] is not None else None
