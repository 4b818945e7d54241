"""Every Telegram bot the bridge runs, by bot key (0: the primary bot, else its Telegram id)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aiogram import Bot
from aiogram.types import Chat, Message

from bot.common.ids import (
    PRIMARY,
    account_source_external_id,
    alias_chat,
    business_key,
    source_external_id,
)
from bot.common.texts import Phrase
from storage import BusinessConnection, ChatKey, GroupChat
from storage.groups import MIGRATED

GROUP_TYPES = frozenset({"group", "supergroup"})


@dataclass(frozen=True, slots=True)
class Route:
    """How to send into a chat: the bot, and the Business connection it sends through."""

    bot: Bot
    business_connection_id: str | None = None


class Bots:
    """The bots of `TELEGRAM_BOT_TOKEN`, in its order; the first is the primary bot."""

    def __init__(self, bots: Sequence[Bot]) -> None:
        if not bots:
            raise ValueError("at least one bot")
        self.primary = bots[0]
        self._by_key: dict[int, Bot] = {PRIMARY: bots[0]}
        for other in bots[1:]:
            self._by_key[other.id] = other
        # Bots whose token Telegram rejected while running, with the reason: not polled.
        self.revoked: dict[int, Phrase] = {}
        self.usernames: dict[int, str] = {}  # from getMe at start
        # Every token was accepted at start: a rejection before that is a start-up refusal.
        self.checked = False
        # Telegram Business connections by id (loaded at start, updated by every update).
        self.connections: dict[str, BusinessConnection] = {}
        # Groups by (bot key, Telegram chat id): loaded at start, updated by every update.
        self.groups: dict[tuple[int, int], GroupChat] = {}
        # (bot key, a group's conversation chat id) → the supergroup it became.
        self.moved: dict[tuple[int, int], int] = {}

    def __iter__(self) -> Iterator[Bot]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    def each_key(self) -> list[int]:
        """Every bot key, the primary's (0) first."""
        return list(self._by_key)

    def key_of(self, bot: Bot) -> int:
        """The bot key of one of our bots (0 for the primary one)."""
        return PRIMARY if bot.id == self.primary.id else bot.id

    def get(self, key: int) -> Bot | None:
        """The bot behind a key; None when that bot is no longer configured.

        A Business account's key (negative) gives the bot its latest connection is to.
        """
        if key < 0:
            connection = self.connection_of(-key)
            return None if connection is None else self._by_key.get(connection.bot)
        return self._by_key.get(key)

    def remember(self, connection: BusinessConnection) -> None:
        """Keep a business connection as Telegram last described it."""
        self.connections[connection.id] = connection

    def connection_of(self, owner_id: int) -> BusinessConnection | None:
        """The connection of a Business account that sends go through: an enabled one first
        (an owner moving to another bot disables the old connection, and the two bots' updates
        may come in either order), then the latest."""
        owned = [c for c in self.connections.values() if c.owner_id == owner_id]
        return max(owned, key=lambda c: (c.enabled, c.updated_at), default=None)

    def route(self, key: int) -> Route | None:
        """The bot (and Business connection) that sends into chats of a key; None when nothing
        may be sent there (the bot is gone; the account's connection is removed or may not
        reply)."""
        bot = self.get(key)
        if bot is None:
            return None
        if key >= 0:
            return Route(bot)
        connection = self.connection_of(-key)
        if connection is None or not connection.enabled or not connection.can_reply:
            return None
        return Route(bot, connection.id)

    def telegram_id(self, key: int) -> int:
        """The Telegram id of the bot behind a key."""
        return self.primary.id if key == PRIMARY else key

    def chat(
        self, bot: Bot | None, chat: Chat, business_connection_id: str | None = None
    ) -> ChatKey:
        """The conversation of an update that came to `bot` in `chat`.

        Through a Business connection, the conversation is the account's chat (KeyError for a
        connection the bridge was never told of).
        """
        if business_connection_id is not None:
            owner = self.connections[business_connection_id].owner_id
            return business_key(owner, chat.id)
        return ChatKey(PRIMARY if bot is None else self.key_of(bot), chat.id)

    def message_chat(self, message: Message) -> ChatKey:
        """The conversation of a message: its chat, or the topic of it it was written in."""
        base = self.chat(message.bot, message.chat, message.business_connection_id)
        topic = message.direct_messages_topic
        if topic is not None:
            return ChatKey(base.bot, base.chat_id, -int(topic.topic_id))
        if message.is_topic_message and message.message_thread_id:
            return ChatKey(base.bot, base.chat_id, int(message.message_thread_id))
        return base

    def group(self, key: ChatKey) -> GroupChat | None:
        """The group a chat is, as Telegram has it now (None: not a group we know)."""
        group = self.groups.get((key.bot, key.chat_id))
        if group is not None and group.state == MIGRATED:
            return self.groups.get((key.bot, self.moved.get((key.bot, group.chat_id), 0)), group)
        return group

    def remember_group(self, group: GroupChat) -> None:
        """Keep a group as stored; a supergroup a group became names the group's conversation."""
        self.groups[(group.bot, group.tg_chat_id)] = group
        if group.state != MIGRATED and group.tg_chat_id != group.chat_id:
            self.moved[(group.bot, group.chat_id)] = group.tg_chat_id
            alias_chat(group.bot, group.tg_chat_id, group.chat_id)

    def current(self, key: ChatKey) -> ChatKey:
        """The chat a conversation is in now: a group upgraded to a supergroup is there."""
        group = self.group(key) if key.chat_id < 0 else None
        if group is None or group.tg_chat_id == key.chat_id:
            return key
        return ChatKey(key.bot, group.tg_chat_id, key.thread)

    def telegram_chat_id(self, key: ChatKey) -> int:
        """Where sends into a chat go now."""
        return self.current(key).chat_id

    def label(self, key: int) -> str:
        """`@username` once Telegram told it (getMe at start), else the bot's id; no token.

        A Business account: its owner's name and id.
        """
        if key < 0:
            connection = self.connection_of(-key)
            name = connection.owner_name if connection is not None else "account"
            return f"{name} ({-key})"
        username = self.usernames.get(key)
        return f"@{username}" if username else str(self.telegram_id(key))

    def source(self, key: int) -> str:
        """The amoCRM source external id of the bot (or Business account) behind a key."""
        if key < 0:
            return account_source_external_id(-key)
        return source_external_id(self.telegram_id(key))

    def key_of_source(self, external_id: object) -> int | None:
        """The bot (or Business account) whose amoCRM source this is, if it is one of ours."""
        owners = {c.owner_id for c in self.connections.values()}
        for key in [*self._by_key, *(-owner for owner in owners)]:
            if self.source(key) == external_id:
                return key
        return None
