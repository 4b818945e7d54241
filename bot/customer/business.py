"""Telegram Business: a staff member's own account connected to a bot, as its own amoCRM source.

A connection is stored (and the owner told what is bridged) on every `business_connection`
update. A customer's `business_message` becomes a customer message in the account's chat
(`tg-a{owner}-{chat}`, distinct from the same person's chat with the bot); what the owner
types by hand is imported as an outgoing message; deletions are shown by editing the amoCRM
message. Like every handler, this only stores: the workers do the network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import BusinessConnection as TelegramConnection
from aiogram.types import BusinessMessagesDeleted, CallbackQuery, Message

from bot.amocrm.sources import KV_SOURCES, SourceBook, account_source_job, refused_key
from bot.chat.notices import notice_job
from bot.common import ids
from bot.common.bots import Bots
from bot.common.ids import account_source_external_id
from bot.common.texts import Language, staff_language, text
from bot.customer import mapping
from bot.customer.intake import Intake
from storage import BusinessConnection, ChatKey, Repository

logger = logging.getLogger(__name__)
REFUSED_REMEMBERED = 10_000  # strangers' connection ids kept in memory (a bound, not a list)


def _rights(connection: TelegramConnection) -> tuple[bool, bool]:
    """May the bot reply, and may it mark messages read (Bot API 9.0 `rights`, else 7.2)."""
    rights = connection.rights
    if rights is not None:
        return bool(rights.can_reply), bool(rights.can_read_messages)
    return bool(connection.can_reply), False


def connection_notice(
    connection: BusinessConnection, before: BusinessConnection | None, language: Language
) -> str:
    """What the owner reads in their chat with the bot when the connection is made, changed or
    removed: what is bridged, and which rights are missing."""
    if not connection.enabled:
        return text("business.notice.removed", language)
    head = (
        "business.notice.connected"
        if before is None or not before.enabled
        else ("business.notice.changed")
    )
    lines = [text(head, language)]
    if not connection.can_reply:
        lines.append(text("business.notice.no_reply", language))
    if not connection.can_read:
        lines.append(text("business.notice.no_read", language))
    return "\n".join(lines)


class BusinessAccounts:
    """The Business connections of every bot, and the intake of their chats."""

    def __init__(
        self,
        repo: Repository,
        bots: Bots,
        intake: Intake,
        language: Language,
        sources: SourceBook | None = None,
        *,
        staff: frozenset[int] = frozenset(),
    ) -> None:
        self.repo = repo
        self.bots = bots
        self.intake = intake
        self.language = language  # for owners whose Telegram is neither Russian nor English
        self.sources = sources or SourceBook(False)
        # Whose accounts are served: OPERATOR_IDS and BUSINESS_OWNER_USERS (anyone may connect
        # a bot to their Premium account; a stranger's must never speak for the company).
        self.staff = staff
        self.refused: dict[str, int] = {}  # connection id → its owner, refused since start

    def serves(self, owner_id: int) -> bool:
        """Whether the bridge serves this person's Business account (they are staff)."""
        return owner_id in self.staff

    async def load(self) -> None:
        """Every stored connection, as the bots' registry knows them (at start); with
        AMOCRM_SOURCES, the accounts whose source exists, and a job for any that lacks one."""
        connections = await self.repo.business_connections()
        strangers = [c for c in connections if c.enabled and not self.serves(c.owner_id)]
        if strangers:
            # Stored before the bridge checked owners (or the owner left the staff lists).
            async with self.repo.transaction() as tx:
                for stranger in strangers:
                    await tx.save_business_connection(replace(stranger, enabled=False))
            for stranger in strangers:
                logger.warning(
                    "business connection %s of user %d disabled: the owner is in neither "
                    "OPERATOR_IDS nor BUSINESS_OWNER_USERS",
                    stranger.id,
                    stranger.owner_id,
                )
            connections = await self.repo.business_connections()
        for connection in connections:
            self.bots.remember(connection)
        if not self.sources.enabled:
            return
        stored = json.loads(await self.repo.get_kv(KV_SOURCES) or "{}")
        jobs = []
        for connection in connections:
            if not connection.enabled or not self.serves(connection.owner_id):
                continue  # a source is named after its owner: a stranger names none of ours
            if account_source_external_id(connection.owner_id) in stored:
                self.sources.accounts[connection.owner_id] = True
            elif await self.repo.get_kv(refused_key(connection.owner_id)) is not None:
                self.sources.accounts[connection.owner_id] = False  # `/retry` its job to redo
            else:
                jobs.append(account_source_job(connection.owner_id, connection.owner_name))
        if jobs:
            async with self.repo.transaction() as tx:
                await tx.insert_jobs(jobs)

    async def connection_changed(
        self, update: TelegramConnection, bot: Bot, update_id: int
    ) -> BusinessConnection | None:
        """Store a connection as Telegram describes it now, and tell its owner (one notice per
        update: a repeated update is not told twice). A stranger's connection is refused:
        nothing of it is stored, and None is returned."""
        if not self.serves(update.user.id):
            await self._refuse(update, bot)
            return None
        can_reply, can_read = _rights(update)
        connection = BusinessConnection(
            id=update.id,
            bot=self.bots.key_of(bot),
            owner_id=update.user.id,
            owner_name=mapping.sender_name(update.user),
            user_chat_id=update.user_chat_id,
            can_reply=can_reply,
            can_read=can_read,
            enabled=update.is_enabled,
            updated_at=time.time(),
        )
        before = self.bots.connections.get(update.id)
        language = staff_language(update.user.language_code, self.language)
        notice = notice_job(
            ChatKey(connection.bot, connection.user_chat_id),
            f"business:{update.id}:u{update_id}",
            connection_notice(connection, before, language),
        )
        await self.intake.flush()  # messages through the old state are stored under it
        jobs = [notice]
        if self.sources.enabled and connection.enabled:
            # Its own source, named after the owner (a rename renames it).
            jobs.append(account_source_job(connection.owner_id, connection.owner_name))
        async with self.repo.transaction() as tx:
            await tx.save_business_connection(connection)
            await tx.insert_jobs(jobs)
        self.bots.remember(connection)
        logger.info(
            "business connection %s of %s (bot %s): %s, reply %s, read %s",
            connection.id,
            connection.owner_id,
            self.bots.label(connection.bot),
            "enabled" if connection.enabled else "removed",
            connection.can_reply,
            connection.can_read,
        )
        return connection

    async def _refuse(self, update: TelegramConnection, bot: Bot) -> None:
        """A stranger connected the bot to their account: one polite notice, nothing else."""
        owner = update.user.id
        first = update.id not in self.refused
        if first and len(self.refused) >= REFUSED_REMEMBERED:
            del self.refused[next(iter(self.refused))]  # the oldest: asked of Telegram again
        self.refused[update.id] = owner
        if first:
            logger.warning(
                "business connection %s of user %d refused: the owner is in neither "
                "OPERATOR_IDS nor BUSINESS_OWNER_USERS; nothing of it is bridged",
                update.id,
                owner,
            )
        if not update.is_enabled:
            return  # they removed the bot: nothing to say
        language = staff_language(update.user.language_code, self.language)
        notice = notice_job(
            ChatKey(self.bots.key_of(bot), update.user_chat_id),
            f"business-refused:{update.id}",  # once per connection, however often it comes
            text("business.notice.refused", language),
        )
        async with self.repo.transaction() as tx:
            await tx.insert_jobs([notice])

    async def served(
        self, bot: Bot, connection_id: str, update_id: int
    ) -> BusinessConnection | None:
        """The connection an update came through when the bridge serves it now (a staff
        member's, enabled); None for a stranger's, a removed one, or one Telegram denies."""
        connection = await self.known(bot, connection_id, update_id)
        if connection is None or not connection.enabled or not self.serves(connection.owner_id):
            if connection is not None:
                logger.info(
                    "update %d of business connection %s not bridged: it is %s",
                    update_id,
                    connection_id,
                    "removed" if not connection.enabled else "not a staff member's",
                )
            return None
        return connection

    async def known(
        self, bot: Bot, connection_id: str, update_id: int
    ) -> BusinessConnection | None:
        """The connection an update came through; asked of Telegram when the bridge was never
        told of it (getBusinessConnection). While Telegram cannot answer, polling waits (the
        update stays unconfirmed); None when Telegram says there is no such connection, or
        when it is a stranger's."""
        if connection_id in self.refused:
            return None
        connection = self.bots.connections.get(connection_id)
        delay = 0.5
        while connection is None:
            try:
                update = await bot.get_business_connection(connection_id)
            except TelegramRetryAfter as exc:
                await asyncio.sleep(exc.retry_after)
                continue
            except (TelegramNetworkError, TelegramServerError) as exc:
                logger.warning("business connection %s not known yet: %s", connection_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except TelegramAPIError as exc:  # Telegram refuses to tell: it will not change
                logger.warning(
                    "update %d names business connection %s, which Telegram does not give "
                    "(%s): not bridged",
                    update_id,
                    connection_id,
                    exc.message,
                )
                return None
            connection = await self.connection_changed(update, bot, update_id)
            if connection is None:
                return None
        return connection

    async def _author(
        self, message: Message, update_id: int
    ) -> tuple[BusinessConnection | None, str]:
        """The connection a message came through, and who wrote it: `customer`, `owner`, or
        `bot` (sent by a bot on the account's behalf: the bridge's own answers are linked
        already, and nothing else speaks for the account)."""
        assert message.business_connection_id is not None and message.bot is not None
        connection = await self.served(message.bot, message.business_connection_id, update_id)
        sender = message.from_user
        if connection is None or sender is None or sender.id != connection.owner_id:
            return connection, "customer"
        return connection, "owner" if message.sender_business_bot is None else "bot"

    async def message(self, message: Message, update_id: int) -> None:
        """A new message in an account's chat: the customer's, or what the owner typed."""
        connection, author = await self._author(message, update_id)
        if connection is None or author == "bot":
            return
        if author == "owner":
            await self.intake.record_owner_message(message, connection.owner_name)
        else:
            await self.intake.record_message(message)

    async def edit(self, message: Message, update_id: int) -> None:
        """An edited message in an account's chat (bridged when its text really changed)."""
        connection, author = await self._author(message, update_id)
        if connection is None or author == "bot":
            return
        if author == "owner":
            await self.intake.record_owner_edit(message, update_id, connection.owner_name)
        else:
            await self.intake.record_edit(message, update_id)

    async def deleted(self, deleted: BusinessMessagesDeleted, bot: Bot, update_id: int) -> None:
        """Messages deleted in an account's chat: amoCRM is shown that they were."""
        connection = await self.served(bot, deleted.business_connection_id, update_id)
        if connection is None:
            return
        key = ids.business_key(connection.owner_id, deleted.chat.id)
        await self.intake.record_deletions(key, list(deleted.message_ids), update_id)

    async def button(self, callback: CallbackQuery, update_id: int) -> bool:
        """A customer pressed a manager's button in an account's chat: the button's text comes
        back as the customer's message. False when the press is none of ours."""
        message = callback.message
        data = callback.data or ""
        if not isinstance(message, Message) or not data.startswith(ids.BUTTON_DATA):
            return False
        if message.business_connection_id is None or message.bot is None:
            return False
        label = _pressed(message, data)
        if label is None:
            return False
        connection = await self.served(message.bot, message.business_connection_id, update_id)
        if connection is None:
            return False
        key = ids.business_key(connection.owner_id, message.chat.id)
        if callback.from_user.id != message.chat.id:
            # The owner (or anyone but the customer of this chat) pressed it: not the
            # customer's words. Only its spinner is ended.
            logger.info(
                "a press in %s by %d, not its customer: ignored", key, callback.from_user.id
            )
            await self.intake.record_button_press(key, callback, None)
            return True
        await self.intake.record_button_press(key, callback, label)
        return True


def _pressed(message: Message, data: str) -> str | None:
    """The text of the pressed button, read back from the message's own keyboard."""
    markup = message.reply_markup
    if markup is None:
        return None
    for row in markup.inline_keyboard:
        for button in row:
            if button.callback_data == data:
                return button.text
    return None
