"""Bot's own replies to a customer (greeting, confirmations), sent by the Telegram worker."""

from __future__ import annotations

import base64
import logging
from typing import Any

from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import BufferedInputFile, Message, ReplyKeyboardMarkup, ReplyKeyboardRemove

from bot.common import ids
from bot.common.bots import Bots
from bot.common.telegram_text import split_text
from bot.jobs.queues import TELEGRAM_QUEUE
from bot.jobs.throttle import TelegramThrottle
from bot.jobs.worker import Done, GiveUp, JobKind
from storage import ChatKey, Job, NewJob, Repository
from storage.groups import REMOVED

logger = logging.getLogger(__name__)

KIND_NOTICE = "bot.notice"
KIND_CALLBACK_ANSWER = "bot.callback_answer"
KIND_LEAVE = "bot.leave_group"

Markup = ReplyKeyboardMarkup | ReplyKeyboardRemove


def notice_job(
    chat: ChatKey, key: str, text: str, markup: Markup | None = None, photo: bytes | None = None
) -> NewJob:
    """A job that sends the bot's own text to a customer once (through the chat's bot); with
    `photo` (a small picture, such as a QR code), the text is its caption."""
    return NewJob(
        queue=TELEGRAM_QUEUE,
        kind=KIND_NOTICE,
        lane=ids.chat_lane(chat),
        dedup_key=f"notice:{ids.key_text(chat)}:{key}",
        payload={
            **ids.chat_fields(chat),
            "text": text,
            "markup": markup.model_dump(mode="json", exclude_none=True) if markup else None,
            "markup_type": type(markup).__name__ if markup else None,
            "photo": base64.b64encode(photo).decode() if photo else None,
        },
    )


def leave_job(bot: int, chat_id: int, text: str, occasion: str) -> NewJob:
    """A job that says `text` in a group and leaves it (once per `occasion`: each time the
    bot is added, or once for a group it was in before)."""
    return NewJob(
        queue=TELEGRAM_QUEUE,
        kind=KIND_LEAVE,
        lane=f"group:{bot}:{chat_id}",
        dedup_key=f"leave:{bot}:{chat_id}:{occasion}",
        payload={"bot": bot, "chat_id": chat_id, "text": text},
    )


def callback_answer_job(bot: int, callback_id: str) -> NewJob:
    """A job that answers a button press (ends its spinner), once, through the bot it came to."""
    return NewJob(
        queue=TELEGRAM_QUEUE,
        kind=KIND_CALLBACK_ANSWER,
        lane=f"callback:{callback_id}",
        dedup_key=f"callback:{callback_id}",
        payload={"bot": bot, "callback_id": callback_id},
    )


async def answer_later(repo: Repository, bots: Bots, message: Message, text: str) -> None:
    """Queue the bot's answer to a message for the Telegram worker (paced, retried, once).

    A direct `message.answer` is neither paced nor retried: flood control (429) loses it.
    A text over Telegram's limit becomes several messages, each its own job (retry-safe).
    """
    chat = bots.chat(message.bot, message.chat)
    await repo.enqueue(*answer_jobs(chat, message.message_id, text))


def answer_jobs(chat: ChatKey, message_id: int | str, text: str) -> list[NewJob]:
    """The notice jobs that answer message `message_id` in `chat` (one per part)."""
    return [
        notice_job(chat, f"answer:{message_id}:{number}", part)
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

    def __init__(self, bots: Bots, throttle: TelegramThrottle | None = None) -> None:
        self.bots = bots
        self.throttle = throttle

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this sender runs."""
        return {
            KIND_NOTICE: JobKind(run=self.send_notice),
            KIND_CALLBACK_ANSWER: JobKind(run=self.answer_callback),
            KIND_LEAVE: JobKind(run=self.leave_group),
        }

    async def leave_group(self, job: Job) -> Done:
        """Say once why the bot goes, then leave a group nobody on the staff added it to."""
        key = int(job.payload["bot"])
        bot = self.bots.get(key)
        if bot is None:
            return Done()
        chat_id = int(job.payload["chat_id"])
        known = self.bots.groups.get((key, chat_id))
        if known is not None and known.state != REMOVED:
            # Connected meanwhile (staff added the bot after a client's message of the same
            # batch), or a supergroup a bridged group became: staying.
            logger.info("group %d: not left, it is bridged now", chat_id)
            return Done()
        for step in ("say", "leave"):
            try:
                if step == "say":
                    await bot.send_message(chat_id, str(job.payload["text"]))
                else:
                    await bot.leave_chat(chat_id)
            except (TelegramForbiddenError, TelegramBadRequest) as exc:
                logger.info("group %d: %s not done: %s", chat_id, step, exc.message)
        logger.warning("left group %d: no staff member added the bot there", chat_id)
        return Done()

    async def answer_callback(self, job: Job) -> Done:
        """Answer a button press; one Telegram no longer takes (too old) is only logged."""
        bot = self.bots.get(int(job.payload["bot"]))
        if bot is None:
            return Done()
        try:
            await bot.answer_callback_query(str(job.payload["callback_id"]))
        except TelegramBadRequest as exc:
            logger.info("button press not answered: %s", exc.message)
        return Done()

    async def send_notice(self, job: Job) -> Done:
        """Send one notice."""
        chat = ids.chat_of(job.payload)
        bot = self.bots.get(chat.bot)
        if bot is None:
            raise GiveUp(f"bot {chat.bot} is no longer in TELEGRAM_BOT_TOKEN")
        if self.throttle is not None:
            await self.throttle.wait(chat)
        try:
            if job.payload.get("photo"):
                picture = BufferedInputFile(base64.b64decode(job.payload["photo"]), "picture.png")
                await bot.send_photo(chat.chat_id, picture, caption=job.payload["text"])
            else:
                await bot.send_message(
                    chat.chat_id, job.payload["text"], reply_markup=_markup(job.payload)
                )
        except (TelegramForbiddenError, TelegramBadRequest) as exc:
            logger.info("notice to chat %d not sent: %s", chat.chat_id, exc.message)
        return Done()
