"""Whom a manager message is for, and through which bot (and Business connection) it goes."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiogram import Bot

from bot.common import ids
from bot.common.bots import Bots
from bot.common.limits import (
    BUSINESS_REPLY_WINDOW_SECONDS,
)
from bot.common.phones import mask_phone, normalise_phone
from bot.common.texts import Language, language_of, phrase
from bot.manager.mapping import ManagerMessage
from bot.manager.statuses import (
    ERROR_BLOCKED,
    ERROR_NO_CONVERSATION,
    ERROR_NO_RIGHTS,
    ERROR_OTHER,
    Undeliverable,
    window_closed_reason,
)
from storage import ChatKey, Customer, Job, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)


def _hook_of(job: Job) -> Any:
    """The hook a message job carries (read leniently by ManagerMessage.from_hook)."""
    return job.payload.get("hook")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where a manager message goes."""

    chat: ChatKey
    customer: Customer | None
    bind: bool = False


def _cache_key(to: _Target, kind: str | None, url: str) -> str:
    """Where the file_id Telegram gave a file is kept (a file_id is valid for its bot only)."""
    key = f"{kind or 'document'}:{hashlib.sha256(url.encode()).hexdigest()}"
    return f"b{to.bot_key}:{key}" if to.bot_key else key


async def _record_conversation(
    tx: Transaction, recipient: Recipient, message: ManagerMessage
) -> None:
    """What a delivery teaches about the chat: amo's chat id, and a write-first binding."""
    # amo's chat id lets a later gap be recovered from this chat's history.
    if message.conversation_amo_id:
        await tx.set_amo_chat_id(recipient.chat, message.conversation_amo_id)
    if recipient.bind:
        await tx.bind_amo_conversation(
            recipient.chat, message.conversation_amo_id, message.receiver_amo_id
        )


@dataclass(frozen=True, slots=True)
class _Target:
    """The bot that sends, the chat it sends to, and the Business connection it sends through."""

    bot: Bot
    chat: ChatKey
    bot_key: int = 0
    business_connection_id: str | None = None
    language: Language = "en"  # the customer's, for what stands in for a file
    telegram_chat_id: int | None = None  # a group's id now (a supergroup it became)

    @property
    def extra(self) -> dict[str, Any]:
        """What every send into this chat adds: the Business connection, the topic."""
        extra: dict[str, Any] = {}
        if self.business_connection_id is not None:
            extra["business_connection_id"] = self.business_connection_id
        thread = ids.forum_thread(self.chat)
        if thread is not None:
            extra["message_thread_id"] = thread
        topic = ids.direct_messages_topic(self.chat)
        if topic is not None:
            extra["direct_messages_topic_id"] = topic
        return extra

    @property
    def chat_id(self) -> int:
        """The Telegram chat id."""
        return self.telegram_chat_id if self.telegram_chat_id is not None else self.chat.chat_id


def _reads(customer: Customer | None) -> Language:
    """The language a customer reads (their Telegram's, as for the greeting)."""
    return language_of(customer.language_code if customer is not None else None)


class RecipientResolution:
    """Finds a manager message's chat and checks it may be sent there (a part of
    ManagerMessageDelivery)."""

    bots: Bots
    repo: Repository
    sources: bool
    time_window: int

    def _source_bot(self, message: ManagerMessage) -> int | None:
        """The bot whose amoCRM source the hook names (None: no source, or sources are off)."""
        if not self.sources or message.source_external_id is None:
            return None
        key = self.bots.key_of_source(message.source_external_id)
        if key is None:
            logger.warning(
                "message %s names source %r, which is none of our bots'",
                message.amo_id,
                message.source_external_id,
            )
        return key

    async def _recipient(self, message: ManagerMessage) -> Recipient:
        client_id = message.conversation_client_id
        source_bot = self._source_bot(message)
        if client_id is not None:
            chat = ids.chat_from_conversation(client_id)
            if chat is None:
                raise Undeliverable(
                    ERROR_NO_CONVERSATION, phrase("amo.not_our_chat", conversation=client_id)
                )
            if source_bot is not None and source_bot != chat.bot:
                raise Undeliverable(
                    ERROR_NO_CONVERSATION,
                    phrase("amo.source_mismatch", source=message.source_external_id),
                )
            chat = self.bots.current(chat)  # a group upgraded to a supergroup is there now
            return Recipient(chat, await self.repo.get_customer(chat))
        if not message.conversation_amo_id:
            raise Undeliverable(ERROR_NO_CONVERSATION, phrase("amo.no_conversation"))
        # Write-first (spec §3.3): no client_id; amo gives the phone the manager picked.
        bound = await self.repo.customer_by_amo_conversation(message.conversation_amo_id)
        if bound is not None:
            if source_bot is not None and source_bot != bound.bot:
                raise Undeliverable(
                    ERROR_NO_CONVERSATION,
                    phrase("amo.source_mismatch", source=message.source_external_id),
                )
            return Recipient(bound.key, bound)
        if source_bot is not None and source_bot < 0:
            raise Undeliverable(ERROR_NO_CONVERSATION, phrase("amo.business_write_first"))
        if self.sources and message.source_external_id is not None and source_bot is None:
            raise Undeliverable(
                ERROR_NO_CONVERSATION,
                phrase("amo.source_unknown", source=message.source_external_id),
            )
        phone = normalise_phone(message.receiver_phone)
        # With sources, the manager picked the bot by its source: only its customers match.
        matches = await self.repo.customers_with_phone(phone, bot=source_bot) if phone else []
        if not matches and phone and await self.repo.customers_with_phone(phone, accounts=True):
            raise Undeliverable(ERROR_NO_CONVERSATION, phrase("amo.business_write_first"))
        if not matches:
            logger.info(
                "write-first to %s: no customer shared this phone",
                mask_phone(message.receiver_phone),
            )
            raise Undeliverable(ERROR_NO_CONVERSATION, phrase("amo.phone_unknown"))
        if len(matches) > 1:
            logger.warning(
                "write-first to %s: %d customers shared this phone; not guessing",
                mask_phone(message.receiver_phone),
                len(matches),
            )
            raise Undeliverable(ERROR_NO_CONVERSATION, phrase("amo.phone_shared"))
        return Recipient(matches[0].key, matches[0], bind=True)

    def _check_allowed(self, recipient: Recipient, received_at: float) -> None:
        customer = recipient.customer
        if customer is not None and customer.blocked:
            chat = recipient.chat
            group = self.bots.group(chat) if chat.chat_id < 0 else None
            if group is not None:
                reason = phrase("amo.group_gone", title=group.title, why=group.reason or "")
                raise Undeliverable(ERROR_NO_RIGHTS, reason)
            raise Undeliverable(ERROR_BLOCKED, phrase("amo.blocked"))
        if ids.is_business(recipient.chat):
            self._target(recipient.chat)  # a removed or read-only connection: 902 first
            # Telegram lets an account's bot answer only within 24 h of the customer's last
            # message, whatever TIME_WINDOW_SECONDS says.
            last = customer.last_message_at if customer is not None else None
            ago = time.time() - last if last is not None else None
            if ago is None or ago > BUSINESS_REPLY_WINDOW_SECONDS:
                window = window_closed_reason(ago, BUSINESS_REPLY_WINDOW_SECONDS)
                raise Undeliverable(ERROR_OTHER, window)
            return
        if self.time_window > 0:
            last = customer.last_message_at if customer is not None else None
            ago = received_at - last if last is not None else None
            if ago is None or ago > self.time_window:
                raise Undeliverable(ERROR_OTHER, window_closed_reason(ago, self.time_window))

    def _target(self, chat: ChatKey, customer: Customer | None = None) -> _Target:
        """Who sends to a chat: its bot, or the bot of its Business account's connection.

        Undeliverable when the bot is no longer configured (904), or the account's connection
        is removed, disabled or may not reply (902).
        """
        if ids.is_business(chat):
            connection = self.bots.connection_of(-chat.bot)
            if connection is None or not connection.enabled:
                raise Undeliverable(ERROR_NO_RIGHTS, phrase("amo.business_disconnected"))
            if not connection.can_reply:
                raise Undeliverable(ERROR_NO_RIGHTS, phrase("amo.business_cannot_reply"))
            bot = self.bots.get(connection.bot)
            if bot is None:
                gone = phrase("amo.bot_gone", bot=connection.bot)
                raise Undeliverable(ERROR_NO_CONVERSATION, gone)
            return _Target(bot, chat, connection.bot, connection.id, _reads(customer))
        bot = self.bots.get(chat.bot)
        if bot is None:
            raise Undeliverable(ERROR_NO_CONVERSATION, phrase("amo.bot_gone", bot=chat.bot))
        return _Target(
            bot, chat, chat.bot, None, _reads(customer), self.bots.telegram_chat_id(chat)
        )
