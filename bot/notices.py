"""Bot's own replies to a customer (greeting, confirmations), sent by the Telegram worker."""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import Message, ReplyKeyboardMarkup, ReplyKeyboardRemove

from bot import ids
from bot.jobs.queues import TELEGRAM_QUEUE
from bot.jobs.throttle import TelegramThrottle
from bot.jobs.worker import Done, JobKind
from bot.telegram_text import split_text
from storage import Job, NewJob, Repository

logger = logging.getLogger(__name__)

KIND_NOTICE = "bot.notice"

Markup = ReplyKeyboardMarkup | ReplyKeyboardRemove


def notice_job(chat_id: int, key: str, text: str, markup: Markup | None = None) -> NewJob:
    """A job that sends the bot's own text to a customer once."""
    return NewJob(
        queue=TELEGRAM_QUEUE,
        kind=KIND_NOTICE,
        lane=ids.chat_lane(chat_id),
        dedup_key=f"notice:{chat_id}:{key}",
        payload={
            "chat_id": chat_id,
            "text": text,
            "markup": markup.model_dump(mode="json", exclude_none=True) if markup else None,
            "markup_type": type(markup).__name__ if markup else None,
        },
    )


async def answer_later(repo: Repository, message: Message, text: str) -> None:
    """Queue the bot's answer to a message for the Telegram worker (paced, retried, once).

    A direct `message.answer` is neither paced nor retried: flood control (429) loses it.
    A text over Telegram's limit becomes several messages, each its own job (retry-safe).
    """
    await repo.enqueue(*answer_jobs(message.chat.id, message.message_id, text))


def answer_jobs(chat_id: int, message_id: int, text: str) -> list[NewJob]:
    """The notice jobs that answer message `message_id` in `chat_id` (one per part)."""
    return [
        notice_job(chat_id, f"answer:{message_id}:{number}", part)
        for number, part in enumerate(split_text(text))
    ]


def _markup(payload: dict[str, Any]) -> Markup | None:
    data = payload.get("markup")
    if not data:
        return None
    if payload.get("markup_type") == "ReplyKeyboardRemove":
        return ReplyKeyboardRemove.model_validate(data)
    return ReplyKeyboardMarkup.model_validate(data)


class NoticeSender:
    """Sends notices; a customer who blocked the bot simply does not get them."""

    def __init__(self, bot: Bot, throttle: TelegramThrottle | None = None) -> None:
        self.bot = bot
        self.throttle = throttle

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this sender runs."""
        return {KIND_NOTICE: JobKind(run=self.send_notice)}

    async def send_notice(self, job: Job) -> Done:
        """Send one notice."""
        chat_id = int(job.payload["chat_id"])
        if self.throttle is not None:
            await self.throttle.wait(chat_id)
        try:
            await self.bot.send_message(
                chat_id, job.payload["text"], reply_markup=_markup(job.payload)
            )
        except (TelegramForbiddenError, TelegramBadRequest) as exc:
            logger.info("notice to chat %d not sent: %s", chat_id, exc.message)
        return Done()
