"""Deep-link touches: each `/start <payload>` a conversation received, the first one kept."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from storage.conversations import ChatKey
from storage.core import RepositoryCore, TransactionCore


@dataclass(frozen=True, slots=True)
class StoredTouch:
    """One deep-link payload a conversation came through."""

    id: int
    key: ChatKey
    tg_message_id: int
    raw: str
    values: dict[str, str]
    first: bool
    created_at: float


def _touch(row: sqlite3.Row | tuple[Any, ...]) -> StoredTouch:
    return StoredTouch(
        id=row[0],
        key=ChatKey(row[1], row[2]),
        tg_message_id=row[3],
        raw=row[4],
        values=json.loads(row[5]),
        first=bool(row[6]),
        created_at=row[7],
    )


_COLUMNS = "id, bot, chat_id, tg_message_id, raw, values_json, first, created_at"


# A conversation's touches beyond this many are not recorded: each costs CRM calls and a note,
# and anyone can type `/start <anything>` again and again.
TOUCHES_PER_CONVERSATION = 10


class TouchWrites(TransactionCore):
    """Writes of touches (a part of Transaction)."""

    async def add_touch(
        self, key: ChatKey, tg_message_id: int, raw: str, values: dict[str, str]
    ) -> tuple[int, bool] | None:
        """Record a touch: (its id, whether it is the conversation's first); None when this
        message, or this payload, was recorded already for the conversation, or it has had
        TOUCHES_PER_CONVERSATION. The first touch is never replaced."""
        cursor = await self._conn.execute(
            "SELECT count(*), sum(raw = ?) FROM touches WHERE bot = ? AND chat_id = ?",
            (raw, key.bot, key.chat_id),
        )
        count, same = await cursor.fetchone() or (0, 0)
        if same or count >= TOUCHES_PER_CONVERSATION:
            return None
        first = count == 0
        cursor = await self._conn.execute(
            "INSERT INTO touches (bot, chat_id, tg_message_id, raw, values_json, first, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bot, chat_id, tg_message_id) DO NOTHING",
            (key.bot, key.chat_id, tg_message_id, raw, json.dumps(values), int(first), time.time()),
        )
        if cursor.rowcount == 0:
            return None
        return int(cursor.lastrowid or 0), first

    async def attribute_lead(self, lead_id: int, touch_id: int, moved_to: int | None) -> None:
        """Record that a lead got a touch's values (and perhaps a pipeline): never again."""
        await self._conn.execute(
            "INSERT INTO attributed_leads (lead_id, touch_id, moved_to, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (lead_id) DO NOTHING",
            (lead_id, touch_id, moved_to, time.time()),
        )


class TouchReads(RepositoryCore):
    """Reads of touches (a part of Repository)."""

    async def touches_of(self, key: ChatKey, limit: int = 20) -> list[StoredTouch]:
        """A conversation's touches, the first one first."""
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM touches WHERE bot = ? AND chat_id = ? ORDER BY id LIMIT ?",
            (key.bot, key.chat_id, limit),
        )
        return [_touch(row) for row in rows]

    async def lead_attributed(self, lead_id: int) -> bool:
        """Whether the bridge gave a lead its values already."""
        rows = await self._all("SELECT 1 FROM attributed_leads WHERE lead_id = ?", (lead_id,))
        return bool(rows)
