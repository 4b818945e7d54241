"""Pacing of outgoing Telegram calls: ~30 messages/s per bot and ~1/s per chat sustained."""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from bot.limits import TELEGRAM_PER_CHAT_BURST, TELEGRAM_PER_CHAT_INTERVAL, TELEGRAM_SEND_RATE

_PRUNE_ABOVE = 10_000


class TelegramThrottle:
    """Waits before each send so normal traffic never trips Telegram's flood control.

    https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this
    """

    def __init__(
        self,
        global_rate: float = TELEGRAM_SEND_RATE,
        per_chat_interval: float = TELEGRAM_PER_CHAT_INTERVAL,
        per_chat_burst: int = TELEGRAM_PER_CHAT_BURST,
    ) -> None:
        # Capacity 1: sends are spaced evenly, so no one-second window holds more than the rate.
        self._global = AsyncLimiter(1, 1 / global_rate)
        self._per_chat_interval = per_chat_interval
        self._per_chat_burst = per_chat_burst
        self._chats: dict[int, AsyncLimiter] = {}

    def _chat(self, chat_id: int) -> AsyncLimiter:
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

    async def wait(self, chat_id: int) -> None:
        """Return when one more message may go to this chat."""
        await self._chat(chat_id).acquire()
        await self._global.acquire()
