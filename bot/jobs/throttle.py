"""Pacing of outgoing Telegram calls: ~30 messages/s per bot and ~1/s per chat sustained."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from bot.common.limits import (
    TELEGRAM_PER_CHAT_BURST,
    TELEGRAM_PER_CHAT_INTERVAL,
    TELEGRAM_SEND_RATE,
)
from storage import ChatKey

_PRUNE_ABOVE = 10_000
HOOK_PRIORITY_SECONDS = 0.05


class HookTraffic:
    """Hooks being answered right now; paced Telegram sends step aside for them briefly.

    amojo waits at most 5 s for an answer and never resends a hook, while a send that starts
    50 ms later loses nothing, so during a burst of hooks the answers go first.
    """

    def __init__(self) -> None:
        self._active = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Mark one hook as being answered."""
        self._active += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._quiet.set()

    async def quiet(self, at_most: float) -> None:
        """Return when no hook is being answered, or after `at_most` seconds."""
        if self._quiet.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), timeout=at_most)


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the bridge sends to Telegram: its limits, unless a test needs only behaviour."""

    global_rate: float = TELEGRAM_SEND_RATE
    per_chat_interval: float = TELEGRAM_PER_CHAT_INTERVAL
    per_chat_burst: int = TELEGRAM_PER_CHAT_BURST


class TelegramThrottle:
    """Waits before each send so normal traffic never trips Telegram's flood control.

    Telegram counts each bot's messages apart: every bot has its own overall pace.

    https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this
    """

    def __init__(
        self,
        global_rate: float = TELEGRAM_SEND_RATE,
        per_chat_interval: float = TELEGRAM_PER_CHAT_INTERVAL,
        per_chat_burst: int = TELEGRAM_PER_CHAT_BURST,
        hooks: HookTraffic | None = None,
    ) -> None:
        self.hooks = hooks
        self._global_rate = global_rate
        self._bots: dict[int, AsyncLimiter] = {}
        self._per_chat_interval = per_chat_interval
        self._per_chat_burst = per_chat_burst
        self._chats: dict[ChatKey, AsyncLimiter] = {}

    def _bot(self, bot: int) -> AsyncLimiter:
        limiter = self._bots.get(bot)
        if limiter is None:
            # Capacity 1: sends are spaced evenly, so no one-second window holds more than the
            # rate.
            limiter = self._bots[bot] = AsyncLimiter(1, 1 / self._global_rate)
        return limiter

    def _chat(self, chat_id: ChatKey) -> AsyncLimiter:
        limiter = self._chats.get(chat_id)
        if limiter is None:
            if len(self._chats) > _PRUNE_ABOVE:
                self._chats = {
                    key: value
                    for key, value in self._chats.items()
                    if not value.has_capacity(self._per_chat_burst)
                }
            limiter = AsyncLimiter(
                self._per_chat_burst, self._per_chat_burst * self._per_chat_interval
            )
            self._chats[chat_id] = limiter
        return limiter

    async def wait(self, chat: ChatKey) -> None:
        """Return when one more message may go to this chat (from its bot)."""
        await self._chat(chat).acquire()
        await self._bot(chat.bot).acquire()
        if self.hooks is not None:
            await self.hooks.quiet(HOOK_PRIORITY_SECONDS)
