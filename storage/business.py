"""Telegram Business connections as Telegram last described them."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from storage.core import RepositoryCore, TransactionCore


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


class BusinessWrites(TransactionCore):
    """Writes of business (a part of Transaction)."""

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


class BusinessReads(RepositoryCore):
    """Reads of business (a part of Repository)."""

    async def business_connections(self) -> list[BusinessConnection]:
        """Every business connection ever seen, oldest change first."""
        rows = await self._all(
            f"SELECT {_CONNECTION_COLUMNS} FROM business_connections ORDER BY updated_at, id"
        )
        return [_connection(row) for row in rows]
