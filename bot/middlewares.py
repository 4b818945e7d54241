"""Update middlewares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

from bot.metrics import Metrics
from storage import StorageError

logger = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class DurableIntakeMiddleware(BaseMiddleware):
    """Hold the update until its job is stored: a storage error is retried, never swallowed.

    aiogram confirms an update (the next getUpdates offset) once its handler returns, even
    when the handler raised; retrying here keeps an update we could not store unconfirmed.
    Handlers are idempotent (jobs carry dedup keys), so a retry never duplicates.
    """

    def __init__(self, metrics: Metrics, max_delay: float = 5.0) -> None:
        self.metrics = metrics
        self.max_delay = max_delay

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        """Run the handler until storage accepts the update."""
        if isinstance(event, Update):
            self.metrics.updates_received.labels(event.event_type).inc()
        delay = 0.05
        while True:
            try:
                return await handler(event, data)
            except StorageError:
                update_id = event.update_id if isinstance(event, Update) else "?"
                logger.exception("update %s not stored yet; retrying in %.2fs", update_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
