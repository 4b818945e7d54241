"""Conversations: customers, the amo chats of each, and the message pairs (links)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from storage.core import RepositoryCore, TransactionCore


@dataclass(frozen=True, slots=True, order=True)
class ChatKey:
    """Which conversation: a Telegram chat as one bot sees it, or a topic in it.

    `bot` is 0 for the primary bot (the first token; its chats keep the ids they had before
    there were several bots) and the bot's Telegram id for every other bot. `thread` is 0 for
    a whole chat, a topic's `message_thread_id` (a forum supergroup's, or a private chat's
    with topics), or minus a channel's direct-messages topic id (bot/common/ids.py).
    """

    bot: int
    chat_id: int
    thread: int = 0


@dataclass(frozen=True, slots=True)
class Customer:
    """A Telegram private chat known to the bridge."""

    bot: int
    chat_id: int
    user_id: int
    name: str
    username: str | None
    language_code: str | None
    phone: str | None
    last_message_at: float | None
    blocked: bool
    amo_conversation_id: str | None
    amo_user_id: str | None
    amo_chat_id: str | None = None
    thread: int = 0

    @property
    def key(self) -> ChatKey:
        """The conversation this customer's chat is."""
        return ChatKey(self.bot, self.chat_id, self.thread)


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    """What a customer's update tells about them."""

    key: ChatKey
    user_id: int
    name: str
    username: str | None
    language_code: str | None
    message_at: float | None


@dataclass(frozen=True, slots=True)
class MessageLink:
    """One Telegram message paired with its amoCRM counterpart."""

    key: ChatKey
    tg_message_id: int
    direction: str
    our_msgid: str | None = None
    amo_message_id: str | None = None
    content_hash: str | None = None

    @property
    def chat_id(self) -> int:
        """The Telegram chat of the message."""
        return self.key.chat_id


_UPSERT_CUSTOMER = (
    "INSERT INTO customers (bot, chat_id, thread, user_id, name, username, language_code, "
    "last_message_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (bot, chat_id, thread) DO UPDATE SET user_id = excluded.user_id, "
    "name = excluded.name, username = excluded.username, "
    "language_code = excluded.language_code, "
    "last_message_at = max(coalesce(customers.last_message_at, 0), "
    "coalesce(excluded.last_message_at, 0)), updated_at = excluded.updated_at"
)


_CUSTOMER_COLUMNS = (
    "bot, chat_id, user_id, name, username, language_code, phone, last_message_at, blocked, "
    "amo_conversation_id, amo_user_id, amo_chat_id, thread"
)


def _customer(row: sqlite3.Row | tuple[Any, ...]) -> Customer:
    return Customer(
        bot=row[0],
        chat_id=row[1],
        user_id=row[2],
        name=row[3],
        username=row[4],
        language_code=row[5],
        phone=row[6],
        last_message_at=row[7],
        blocked=bool(row[8]),
        amo_conversation_id=row[9],
        amo_user_id=row[10],
        amo_chat_id=row[11],
        thread=row[12],
    )


_LINK_COLUMNS = (
    "bot, chat_id, tg_message_id, direction, our_msgid, amo_message_id, content_hash, thread"
)
_KEY = "bot = ? AND chat_id = ? AND thread = ?"  # one conversation's rows


def _link(row: sqlite3.Row | tuple[Any, ...]) -> MessageLink:
    return MessageLink(ChatKey(row[0], row[1], row[7]), *row[2:7])


def key_params(key: ChatKey) -> tuple[int, int, int]:
    """The parameters of `_KEY` for one conversation."""
    return key.bot, key.chat_id, key.thread


class ConversationWrites(TransactionCore):
    """Writes of conversations (a part of Transaction)."""

    async def upsert_customers(self, profiles: Iterable[CustomerProfile]) -> None:
        """Create or refresh many customers' profiles and last-message times."""
        now = time.time()
        await self._conn.executemany(
            _UPSERT_CUSTOMER,
            [
                (
                    p.key.bot,
                    p.key.chat_id,
                    p.key.thread,
                    p.user_id,
                    p.name,
                    p.username,
                    p.language_code,
                    p.message_at,
                    now,
                )
                for p in profiles
            ],
        )

    async def set_customer_phone(self, key: ChatKey, phone: str) -> None:
        """Remember the phone (normalised, `+digits`) a customer shared as their own."""
        await self._conn.execute(
            f"UPDATE customers SET phone = ?, updated_at = ? WHERE {_KEY}",
            (phone, time.time(), *key_params(key)),
        )

    async def set_customer_blocked(self, key: ChatKey, blocked: bool) -> None:
        """Record that the customer blocked (or unblocked) the bot."""
        await self._conn.execute(
            f"UPDATE customers SET blocked = ?, updated_at = ? WHERE {_KEY}",
            (int(blocked), time.time(), *key_params(key)),
        )

    async def bind_amo_conversation(
        self, key: ChatKey, amo_conversation_id: str, amo_user_id: str | None
    ) -> None:
        """Tie a customer's chat to an amo chat (and amojo user) created on the amo side."""
        await self._conn.execute(
            "UPDATE customers SET amo_conversation_id = ?, amo_user_id = coalesce(?, "
            f"amo_user_id), updated_at = ? WHERE {_KEY}",
            (amo_conversation_id, amo_user_id, time.time(), *key_params(key)),
        )

    async def save_links(self, links: Sequence[MessageLink]) -> None:
        """Store message pairs; a later save for the same Telegram message fills in gaps."""
        now = time.time()
        await self._conn.executemany(
            "INSERT INTO message_links (bot, chat_id, tg_message_id, direction, our_msgid, "
            "amo_message_id, content_hash, created_at, thread) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bot, chat_id, tg_message_id) DO UPDATE SET "
            "our_msgid = coalesce(excluded.our_msgid, message_links.our_msgid), "
            "amo_message_id = coalesce(excluded.amo_message_id, message_links.amo_message_id), "
            "content_hash = coalesce(excluded.content_hash, message_links.content_hash)",
            [
                (
                    link.key.bot,
                    link.key.chat_id,
                    link.tg_message_id,
                    link.direction,
                    link.our_msgid,
                    link.amo_message_id,
                    link.content_hash,
                    now,
                    link.key.thread,
                )
                for link in links
            ],
        )

    async def set_amo_message_id(self, our_msgid: str, amo_message_id: str) -> None:
        """Attach amo's id to a message we sent under our own msgid."""
        await self._conn.execute(
            "UPDATE message_links SET amo_message_id = ? WHERE our_msgid = ?",
            (amo_message_id, our_msgid),
        )

    async def set_amo_chat_id(self, key: ChatKey, amo_chat_id: str) -> None:
        """Remember an amo chat of a conversation (the latest is the customer's; every one is
        kept: a write-first chat is a second chat of the same customer)."""
        await self._conn.execute(
            f"UPDATE customers SET amo_chat_id = ? WHERE {_KEY} AND amo_chat_id IS NOT ?",
            (amo_chat_id, *key_params(key), amo_chat_id),
        )
        await self._conn.execute(
            "INSERT INTO amo_chats (amo_chat_id, bot, chat_id, thread, learned_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (amo_chat_id) DO NOTHING",
            (amo_chat_id, *key_params(key), time.time()),
        )


class ConversationReads(RepositoryCore):
    """Reads of conversations (a part of Repository)."""

    async def chat_of_amo_chat(self, amo_chat_id: str) -> ChatKey | None:
        """Our conversation behind an amo chat id, when the bridge has seen that chat."""
        rows = await self._all(
            "SELECT bot, chat_id, thread FROM amo_chats WHERE amo_chat_id = ?", (amo_chat_id,)
        )
        return ChatKey(rows[0][0], rows[0][1], rows[0][2]) if rows else None

    async def amo_chats_of(self, key: ChatKey, limit: int = 5) -> list[str]:
        """Every amo chat of a conversation the bridge has seen, the latest first."""
        rows = await self._all(
            f"SELECT amo_chat_id FROM amo_chats WHERE {_KEY} ORDER BY learned_at DESC LIMIT ?",
            (*key_params(key), limit),
        )
        return [str(row[0]) for row in rows]

    async def known_message_ids(self, amo_ids: Sequence[str]) -> set[str]:
        """Which amo message ids the bridge has (their hook stored, or a message it sent)."""
        known: set[str] = set()
        for start in range(0, len(amo_ids), 400):
            chunk = list(amo_ids[start : start + 400])
            marks = ", ".join("?" * len(chunk))
            keys = [f"hook:{amo_id}" for amo_id in chunk]
            rows = await self._all(
                f"SELECT substr(dedup_key, 6) FROM jobs WHERE dedup_key IN ({marks}) "
                f"UNION SELECT substr(dedup_key, 6) FROM job_keys WHERE dedup_key IN ({marks}) "
                f"UNION SELECT amo_message_id FROM message_links WHERE amo_message_id IN ({marks})",
                [*keys, *keys, *chunk],
            )
            known.update(str(row[0]) for row in rows)
        return known

    async def get_customer(self, key: ChatKey) -> Customer | None:
        """A customer by bot and Telegram chat id."""
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE {_KEY}",
            key_params(key),
        )
        return _customer(rows[0]) if rows else None

    async def customers_with_phone(
        self, phone: str, limit: int = 10, *, bot: int | None = None, accounts: bool = False
    ) -> list[Customer]:
        """Customers who shared this very phone (normalised, `+digits`) as their own.

        `bot` narrows the search to one bot's customers (None: every bot's). Chats of Business
        accounts (negative keys) match only with `accounts`, and then only they do: a bot cannot
        write first on an account's behalf.
        """
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE phone = ? "
            "AND (? IS NULL OR bot = ?) AND (bot < 0) = ? ORDER BY updated_at DESC LIMIT ?",
            (phone, bot, bot, accounts, limit),
        )
        return [_customer(row) for row in rows]

    async def customer_by_amo_conversation(self, amo_conversation_id: str) -> Customer | None:
        """The customer whose chat is bound to this amo chat id."""
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE amo_conversation_id = ?",
            (amo_conversation_id,),
        )
        return _customer(rows[0]) if rows else None

    async def has_conversations(self) -> bool:
        """Whether any customer chat or message pair is stored."""
        rows = await self._all(
            "SELECT EXISTS (SELECT 1 FROM customers) OR EXISTS (SELECT 1 FROM message_links)"
        )
        return bool(rows[0][0])

    async def count_blocked_customers(self) -> int:
        """How many customers currently block the bot."""
        rows = await self._all("SELECT count(*) FROM customers WHERE blocked = 1")
        return int(rows[0][0])

    async def get_link(self, key: ChatKey, tg_message_id: int) -> MessageLink | None:
        """The amo side of a Telegram message."""
        rows = await self._all(
            f"SELECT {_LINK_COLUMNS} FROM message_links "
            "WHERE bot = ? AND chat_id = ? AND tg_message_id = ?",
            (key.bot, key.chat_id, tg_message_id),
        )
        return _link(rows[0]) if rows else None

    async def last_incoming_message(self, key: ChatKey) -> int | None:
        """The Telegram id of the customer's latest bridged message in a chat."""
        rows = await self._all(
            f"SELECT MAX(tg_message_id) FROM message_links WHERE {_KEY} AND direction = 'in'",
            key_params(key),
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def links_for_amo_message(self, amo_id: str) -> list[MessageLink]:
        """Telegram messages for an amo message id (or our own msgid), in send order."""
        rows = await self._all(
            f"SELECT {_LINK_COLUMNS} FROM message_links "
            "WHERE amo_message_id = ? OR our_msgid = ? ORDER BY id",
            (amo_id, amo_id),
        )
        return [_link(row) for row in rows]
