"""Groups the bridge serves: who added the bot, and what Telegram calls the chat now."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from storage.core import RepositoryCore, TransactionCore

ACTIVE, REMOVED, MIGRATED = "active", "removed", "migrated"


@dataclass(frozen=True, slots=True)
class GroupChat:
    """A Telegram group or supergroup one of the bots is in.

    `chat_id` names the conversation (the id the group had when it was first bridged);
    `tg_chat_id` is a Telegram id of it (a supergroup it became has a row of its own, with the
    same `chat_id`; the old row is MIGRATED).
    """

    bot: int
    tg_chat_id: int
    chat_id: int
    title: str
    kind: str  # "group", "supergroup", "forum"
    added_by: int | None
    state: str
    reason: str | None = None


_COLUMNS = "bot, tg_chat_id, chat_id, title, kind, added_by, state, reason"


def _group(row: sqlite3.Row | tuple[Any, ...]) -> GroupChat:
    return GroupChat(*row)


class GroupWrites(TransactionCore):
    """Writes of groups (a part of Transaction)."""

    async def save_group(self, group: GroupChat) -> None:
        """Store a group as it is now."""
        await self._conn.execute(
            f"INSERT INTO group_chats ({_COLUMNS}, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bot, tg_chat_id) DO UPDATE SET chat_id = excluded.chat_id, "
            "title = excluded.title, "
            "kind = excluded.kind, added_by = coalesce(excluded.added_by, group_chats.added_by), "
            "state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at",
            (
                group.bot,
                group.tg_chat_id,
                group.chat_id,
                group.title,
                group.kind,
                group.added_by,
                group.state,
                group.reason,
                time.time(),
            ),
        )

    async def set_group_blocked(self, bot: int, chat_id: int, blocked: bool) -> None:
        """Every conversation of a group (each topic's too) can, or cannot, be written to."""
        await self._conn.execute(
            "UPDATE customers SET blocked = ?, updated_at = ? WHERE bot = ? AND chat_id = ?",
            (int(blocked), time.time(), bot, chat_id),
        )


class GroupReads(RepositoryCore):
    """Reads of groups (a part of Repository)."""

    async def conversation_kinds(self) -> dict[str, int]:
        """How many conversations of each kind: private chats, Business chats, groups, topics
        (a forum's or a private chat's) and a channel's direct-messages topics."""
        rows = await self._all(
            "SELECT CASE WHEN thread > 0 THEN 'topic' WHEN thread < 0 THEN 'direct' "
            "WHEN bot < 0 THEN 'business' WHEN chat_id < 0 THEN 'group' ELSE 'private' END, "
            "count(*) FROM customers GROUP BY 1"
        )
        counts = dict.fromkeys(("private", "business", "group", "topic", "direct"), 0)
        counts.update({str(kind): int(count) for kind, count in rows})
        return counts

    async def group_chats(self) -> list[GroupChat]:
        """Every group the bridge knows (loaded at start)."""
        rows = await self._all(f"SELECT {_COLUMNS} FROM group_chats ORDER BY updated_at")
        return [_group(row) for row in rows]
