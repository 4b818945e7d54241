"""Every Telegram bot the bridge runs, by bot key (0: the primary bot, else its Telegram id)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from aiogram import Bot
from aiogram.types import Chat

from bot.ids import PRIMARY, source_external_id
from storage import ChatKey


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
        self.revoked: dict[int, str] = {}
        self.usernames: dict[int, str] = {}  # from getMe at start

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
        """The bot behind a key; None when that bot is no longer configured."""
        return self._by_key.get(key)

    def telegram_id(self, key: int) -> int:
        """The Telegram id of the bot behind a key."""
        return self.primary.id if key == PRIMARY else key

    def chat(self, bot: Bot | None, chat: Chat) -> ChatKey:
        """The conversation of an update that came to `bot` in `chat`."""
        return ChatKey(PRIMARY if bot is None else self.key_of(bot), chat.id)

    def label(self, key: int) -> str:
        """`@username` once Telegram told it (getMe at start), else the bot's id; no token."""
        username = self.usernames.get(key)
        return f"@{username}" if username else str(self.telegram_id(key))

    def source(self, key: int) -> str:
        """The amoCRM source external id of the bot behind a key."""
        return source_external_id(self.telegram_id(key))

    def key_of_source(self, external_id: object) -> int | None:
        """The bot whose amoCRM source this is, if it is one of ours."""
        for key in self._by_key:
            if self.source(key) == external_id:
                return key
        return None
