"""The manager's typing indicator in the customer's chat (spec §3.4 → sendChatAction)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError

from bot.amocrm.hooks import KIND_AMO_TYPING
from bot.common import ids
from bot.common.bots import Bots
from bot.common.limits import (
    TELEGRAM_CHAT_ACTION_SECONDS,
    TELEGRAM_TYPING_MAX_SECONDS,
    TELEGRAM_TYPING_REPEAT_SECONDS,
)
from bot.common.tasks import cancel_and_wait
from bot.jobs.worker import Done, JobKind
from storage import ChatKey, Job, Repository

logger = logging.getLogger(__name__)


class TypingIndicator:
    """One task per chat re-sends `typing` until its deadline; later hooks only move it."""

    def __init__(
        self,
        bots: Bots,
        *,
        repeat_every: float = TELEGRAM_TYPING_REPEAT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bots = bots
        self.repeat_every = repeat_every
        self.clock = clock
        self._deadlines: dict[ChatKey, float] = {}
        self._tasks: dict[ChatKey, asyncio.Task[None]] = {}

    def is_active(self, chat_id: ChatKey) -> bool:
        """True while the indicator is shown (or about to be re-sent) in this chat."""
        return chat_id in self._tasks

    def start(self, chat_id: ChatKey, until: float) -> None:
        """Show `typing` in the chat until `until` (unix time), extending a running indicator."""
        if until <= self.clock():
            return
        self._deadlines[chat_id] = max(until, self._deadlines.get(chat_id, 0.0))
        if chat_id not in self._tasks:
            self._tasks[chat_id] = asyncio.create_task(
                self._keep_typing(chat_id), name=f"typing-{ids.key_text(chat_id)}"
            )

    def stop(self, chat_id: ChatKey) -> None:
        """Stop at once (the manager's message was delivered, which hides it in Telegram too)."""
        self._deadlines.pop(chat_id, None)
        task = self._tasks.pop(chat_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every indicator and wait for the tasks to end (shutdown)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._deadlines.clear()
        await cancel_and_wait(tasks)

    async def _keep_typing(self, chat_id: ChatKey) -> None:
        try:
            while self.clock() < self._deadlines.get(chat_id, 0.0):
                # Asked each round: a Business chat types through its connection only while it
                # is enabled and may reply (it may be removed meanwhile).
                route = self.bots.route(chat_id.bot)
                if route is None:
                    logger.info("typing in %s stopped: nothing may be sent there", chat_id)
                    return
                if ids.direct_messages_topic(chat_id) is not None:
                    return  # a channel's direct messages show no typing (Bot API)
                try:
                    await route.bot.send_chat_action(
                        self.bots.telegram_chat_id(chat_id),
                        ChatAction.TYPING,
                        business_connection_id=route.business_connection_id,
                        message_thread_id=ids.forum_thread(chat_id),
                    )
                except (TelegramForbiddenError, TelegramBadRequest) as exc:
                    logger.info("typing in chat %d stopped: %s", chat_id.chat_id, exc.message)
                    return
                except TelegramAPIError as exc:
                    # Best effort: the indicator is cosmetic, the next round may get through.
                    logger.debug("typing in chat %d not shown: %s", chat_id.chat_id, exc.message)
                await asyncio.sleep(self.repeat_every)
        finally:
            if self._tasks.get(chat_id) is asyncio.current_task():
                del self._tasks[chat_id]
                self._deadlines.pop(chat_id, None)


def _typing_action(hook: dict[str, Any]) -> dict[str, Any]:
    action = hook.get("action")
    typing = action.get("typing") if isinstance(action, dict) else None
    return typing if isinstance(typing, dict) else {}


def typing_deadline(hook: dict[str, Any], received_at: float) -> float:
    """When the manager's typing ends: the hook's `expired_at` (unix seconds)."""
    expired_at = _typing_action(hook).get("expired_at")
    if isinstance(expired_at, int | float) and not isinstance(expired_at, bool):
        return float(expired_at)
    return received_at + TELEGRAM_CHAT_ACTION_SECONDS


class TypingRunner:
    """Runs `amo.typing` jobs: schedule the indicator and finish at once."""

    def __init__(self, repo: Repository, indicator: TypingIndicator) -> None:
        self.repo = repo
        self.indicator = indicator

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds of the Telegram queue."""
        return {KIND_AMO_TYPING: JobKind(run=self.show_typing)}

    async def _chat_of(self, conversation: dict[str, Any]) -> ChatKey | None:
        chat = ids.chat_from_conversation(conversation.get("client_id"))
        if chat is not None:
            return chat
        amo_id = conversation.get("id")
        if isinstance(amo_id, str) and amo_id:
            customer = await self.repo.customer_by_amo_conversation(amo_id)
            if customer is not None:
                return customer.key
        return None

    async def show_typing(self, job: Job) -> Done:
        """Show the manager typing in the customer's chat until the hook expires."""
        hook: dict[str, Any] = job.payload["hook"]
        now = self.indicator.clock()
        until = typing_deadline(hook, float(job.payload.get("received_at", now)))
        if until <= now:
            return Done()
        conversation = _typing_action(hook).get("conversation")
        chat_id = await self._chat_of(conversation if isinstance(conversation, dict) else {})
        if chat_id is None:
            logger.info("typing hook for an amo chat the bridge does not know: ignored")
            return Done()
        # expired_at comes from amoCRM's clock; a cap keeps a skewed clock from typing forever.
        self.indicator.start(chat_id, min(until, now + TELEGRAM_TYPING_MAX_SECONDS))
        return Done()
