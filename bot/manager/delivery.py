"""Worker side of amoCRM → Telegram: send stored manager messages (single sends and their parts;
albums, recipients, media spool and statuses have rooms of their own beside this one)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
)
from aiogram.types import (
    InputFile,
    Message,
    ReplyParameters,
)

from bot.amocrm.hooks import KIND_AMO_MESSAGE
from bot.common import ids
from bot.common.bots import Bots
from bot.common.group_moves import record_migration
from bot.common.limits import (
    AMOJO_MEDIA_TIMEOUT_SECONDS,
    DELIVERY_GIVE_UP_SECONDS,
    MEDIA_CONCURRENCY,
    RECONCILE_HOLD_SECONDS,
)
from bot.common.metrics import Metrics
from bot.common.texts import Language, Phrase, phrase
from bot.jobs.queues import AMOJO_QUEUE, KIND_OWNER_MESSAGE, RECOVERY_QUEUE
from bot.jobs.throttle import TelegramThrottle
from bot.jobs.worker import Done, JobKind, RetryLater
from bot.manager.albums import AlbumDelivery, album_class
from bot.manager.gaps import GAPS_LANE
from bot.manager.mapping import Keyboard, ManagerMessage, Part, keyboard_for, plan_parts
from bot.manager.media import (
    MediaPolicy,
    MediaRefused,
)
from bot.manager.recipients import (
    Recipient,
    RecipientResolution,
    _cache_key,
    _hook_of,
    _number,
    _record_conversation,
    _Target,
)
from bot.manager.recovery import recover_lane
from bot.manager.spool import MediaDownloading, MediaSpool, _discard, sent_file_id
from bot.manager.statuses import (
    DELIVERED,
    ERROR_BLOCKED,
    ERROR_NO_CONVERSATION,
    ERROR_NO_RIGHTS,
    ERROR_OTHER,
    FAILED,
    Undeliverable,
    refusal_key,
    status_job,
)
from bot.manager.typing_indicator import TypingIndicator
from storage import ChatKey, Job, MessageLink, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)


class ManagerMessageDelivery(AlbumDelivery, RecipientResolution, MediaDownloading):
    """Delivers `amo.message` jobs to Telegram and enqueues their delivery status atomically."""

    def __init__(
        self,
        bots: Bots,
        repo: Repository,
        throttle: TelegramThrottle,
        *,
        time_window: int = 0,
        media_transport: httpx.AsyncBaseTransport | None = None,
        typing: TypingIndicator | None = None,
        media_policy: MediaPolicy | None = None,
        spool_dir: Path | None = None,
        sources: bool = False,
        language: Language = "en",
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.bots = bots
        self.language = language  # of the error texts managers read in amoCRM
        self.sources = sources  # route by the hook's source (AMOCRM_SOURCES)
        self.typing = typing
        self.repo = repo
        self.throttle = throttle
        self.time_window = time_window
        self.media_policy = media_policy or MediaPolicy((), ())
        self._spool = MediaSpool(spool_dir)
        self.spool_dir = self._spool.path
        self._media_slots = asyncio.Semaphore(MEDIA_CONCURRENCY)
        self._transfers: set[str] = set()  # media URLs being downloaded and uploaded now
        # Redirects are followed by hand: each hop is checked against the media policy.
        self._http = httpx.AsyncClient(
            transport=media_transport,
            timeout=AMOJO_MEDIA_TIMEOUT_SECONDS,
            follow_redirects=False,
            # Raw bytes: a compressed body is decoded here, a bounded piece at a time.
            headers={"User-Agent": "tg-amocrm-bridge", "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        """Close the media download pool and give the spool folder back."""
        await self._http.aclose()
        self._spool.close()

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this sender runs (queue "telegram")."""
        return {
            KIND_AMO_MESSAGE: JobKind(
                run=self.deliver,
                on_dead=self.on_dead,
                give_up_after=DELIVERY_GIVE_UP_SECONDS,
            )
        }

    async def on_dead(self, job: Job, reason: str) -> list[NewJob]:
        """Still undeliverable (an hour of retries, or an unexpected error): report 905."""
        message = ManagerMessage.from_hook(_hook_of(job))
        return [self._failed(message, ERROR_OTHER, phrase("amo.not_delivered", reason=reason))]

    def _failed(self, message: ManagerMessage, error_code: int, reason: Phrase) -> NewJob:
        """The -1 status of a message, with its reason in the account's language."""
        return status_job(message.amo_id, FAILED, error_code, reason.render(self.language))

    async def deliver(self, job: Job) -> Done:
        """Send one manager message (all its parts) to the customer's Telegram chat."""
        message = ManagerMessage.from_hook(_hook_of(job))
        received_at = _number(job.payload.get("received_at")) or job.created_at
        try:
            recipient = await self._recipient(message)
            await self._in_order(job, message, recipient.chat, received_at)
            if ids.is_business(recipient.chat):
                await self._after_imports(recipient.chat)
                if await self._is_echo(message):
                    return Done()
            self._check_allowed(recipient, received_at)
            if message.media_group_id is not None and album_class(message) is not None:
                return await self._deliver_album(job, message, recipient, received_at)
            return await self._send(message, recipient)
        except Undeliverable as exc:
            logger.info("message %s not delivered (%d): %s", message.amo_id, exc.error_code, exc)
            return Done(followups=[self._failed(message, exc.error_code, exc.reason)])

    async def _in_order(
        self, job: Job, message: ManagerMessage, chat: ChatKey, received_at: float
    ) -> None:
        """Go out only in the chat's order: RetryLater while older messages may be missing.

        While a gap is being looked into, or this chat's history is being read for messages
        whose hook never came, a live message waits (at most RECONCILE_HOLD_SECONDS): what
        is found is placed before it in the lane. And a job that is no longer its lane's head
        (something was placed before it meanwhile) lets that go first.
        """
        if not message.recovered and time.time() - received_at < RECONCILE_HOLD_SECONDS:
            if await self.repo.pending_in_lane(RECOVERY_QUEUE, GAPS_LANE, 1):
                raise RetryLater("a gap in hook intake is being looked into", delay=0.5)
            if await self.repo.pending_in_lane(RECOVERY_QUEUE, recover_lane(chat), 1):
                raise RetryLater("older messages of this chat are being recovered", delay=0.5)
        head = await self.repo.pending_in_lane(job.queue, job.lane, 1)
        if head and head[0].id != job.id:
            raise RetryLater("an older message was placed before this one", delay=0.01)

    async def _after_imports(self, chat: ChatKey) -> None:
        """Wait while an owner's message of this chat is being imported: until amoCRM's answer
        is recorded, its echo could not be told from a manager's message."""
        for pending in await self.repo.pending_in_lane(AMOJO_QUEUE, ids.chat_lane(chat)):
            if pending.kind == KIND_OWNER_MESSAGE:
                raise RetryLater("an owner's message of this chat is being imported", delay=1.0)

    async def _is_echo(self, message: ManagerMessage) -> bool:
        """Whether a hook is amoCRM echoing a Business owner's message the bridge imported."""
        for link in await self.repo.links_for_amo_message(message.amo_id):
            if link.direction == "out" and link.our_msgid is not None:
                logger.info(
                    "message %s is an imported owner message: not sent back", message.amo_id
                )
                return True
        return False

    async def _mark_read(self, to: _Target) -> None:
        """In a Business chat whose account lets the bot read messages, mark the customer's
        messages read: staff answered them, so the owner's app need not list them unread."""
        if to.business_connection_id is None:
            return
        connection = self.bots.connections.get(to.business_connection_id)
        latest = await self.repo.last_incoming_message(to.chat)
        if connection is None or not connection.can_read or latest is None:
            return
        try:
            await to.bot.read_business_message(to.business_connection_id, to.chat_id, latest)
        except TelegramAPIError as exc:  # cosmetic: the answer itself went out
            logger.info("messages of %s not marked read: %s", to.chat, exc.message)

    async def _reply_target(self, message: ManagerMessage, chat: ChatKey) -> int | None:
        quoted = message.reply_to or {}
        for key in ("id", "msgid"):
            value = quoted.get(key)
            if not isinstance(value, str) or not value:
                continue
            for link in await self.repo.links_for_amo_message(value):
                if link.key == chat:
                    return link.tg_message_id
        return None

    async def _send(self, message: ManagerMessage, recipient: Recipient) -> Done:
        chat = recipient.chat
        to = self._target(chat, recipient.customer)
        if self.typing is not None:
            self.typing.stop(chat)
        # A Business chat takes no reply keyboard: its text buttons become inline buttons.
        buttons = keyboard_for(message.markup, inline=to.business_connection_id is not None)
        parts = plan_parts(message, buttons.extra_lines)
        if not parts:
            raise Undeliverable(ERROR_OTHER, phrase("amo.empty"))
        done = [
            link
            for link in await self.repo.links_for_amo_message(message.amo_id)
            if link.direction == "out" and link.key == chat
        ]
        reply_to = await self._reply_target(message, chat)
        for index in range(len(done), len(parts)):
            markup = buttons.keyboard if index == len(parts) - 1 else None
            reply = reply_to if index == 0 else None
            try:
                sent, refused = await self._send_part(to, message, parts[index], markup, reply)
            except TelegramForbiddenError as exc:
                return self._failed_blocked(message, chat, exc.message)
            except TelegramMigrateToChat as exc:
                await record_migration(
                    self.repo, self.bots, chat.bot, to.chat_id, exc.migrate_to_chat_id
                )
                raise RetryLater("the group became a supergroup", delay=1.0) from None
            except TelegramBadRequest as exc:
                if (
                    "topic_closed" in exc.message.lower()
                    or "thread not found" in exc.message.lower()
                ):
                    raise Undeliverable(
                        ERROR_NO_CONVERSATION,
                        phrase("amo.telegram_refused", description=exc.message),
                    ) from None
                if "chat not found" in exc.message.lower():
                    raise Undeliverable(
                        ERROR_NO_CONVERSATION, phrase("amo.chat_not_found")
                    ) from None
                raise Undeliverable(
                    ERROR_OTHER, phrase("amo.telegram_refused", description=exc.message)
                ) from None
            async with self.repo.transaction() as tx:
                await tx.save_links(
                    [
                        MessageLink(
                            key=chat,
                            tg_message_id=sent.message_id,
                            direction="out",
                            amo_message_id=message.amo_id,
                        )
                    ]
                )
                if refused is not None:
                    # Kept with the part: a retry of a later part must still report it.
                    await tx.set_kv(refusal_key(message.amo_id), refused)
        await self._mark_read(to)
        if message.recovered and message.sent_at and self.metrics is not None:
            self.metrics.reconcile_age.observe(max(0.0, time.time() - message.sent_at))
        logger.info(
            "message %s delivered to chat %d of bot %s in %d part(s)",
            message.amo_id,
            chat.chat_id,
            self.bots.label(chat.bot),
            len(parts),
        )

        async def record(tx: Transaction) -> None:
            if media_refused is not None:
                await tx.delete_kv(refusal_key(message.amo_id))  # reported with the status
            await _record_conversation(tx, recipient, message)

        status = status_job(message.amo_id, DELIVERED)
        media_refused = await self.repo.get_kv(refusal_key(message.amo_id))
        if media_refused is not None:
            status = self._failed(
                message, ERROR_OTHER, phrase("amo.file_not_sent", reason=media_refused)
            )
        return Done(followups=[status], record=record)

    def _failed_blocked(self, message: ManagerMessage, chat: ChatKey, description: str) -> Done:
        if ids.is_business(chat):
            # For an account, a 403 is about the account's chat or rights, not a block of the
            # bot (no update would ever lift it): reported, nothing remembered.
            refused = phrase("amo.telegram_refused", description=description)
            return Done(followups=[self._failed(message, ERROR_NO_RIGHTS, refused)])
        if chat.chat_id < 0:  # a group: the bot was removed, or may not write there
            refused = phrase("amo.telegram_refused", description=description)

            async def removed(tx: Transaction) -> None:
                await tx.set_customer_blocked(chat, True)

            failed = self._failed(message, ERROR_NO_RIGHTS, refused)
            return Done(followups=[failed], record=removed)
        blocked = "blocked" in description.lower()

        async def record(tx: Transaction) -> None:
            if blocked:
                await tx.set_customer_blocked(chat, True)

        reason = (
            phrase("amo.blocked")
            if blocked
            else phrase("amo.telegram_refused", description=description)
        )
        logger.info("message %s not delivered to chat %d: %s", message.amo_id, chat.chat_id, reason)
        return Done(followups=[self._failed(message, ERROR_BLOCKED, reason)], record=record)

    async def _send_part(
        self,
        to: _Target,
        message: ManagerMessage,
        part: Part,
        markup: Keyboard | None,
        reply_to: int | None,
    ) -> tuple[Message, str | None]:
        """The sent message, and why its media was refused (None: it was not)."""
        common: dict[str, Any] = {"reply_markup": markup, **to.extra}
        if reply_to is not None:
            common["reply_parameters"] = ReplyParameters(
                message_id=reply_to, allow_sending_without_reply=True
            )
        if part.media_kind is None:
            await self.throttle.wait(to.chat)
            return await to.bot.send_message(to.chat_id, part.text, **common), None
        sent = await self._send_media_part(to, message, part, common)
        if sent is not None:
            return sent
        await self.throttle.wait(to.chat)
        link = message.link_text(part.text, to.language)
        return await to.bot.send_message(to.chat_id, link, **common), None

    async def _send_media_part(
        self, to: _Target, message: ManagerMessage, part: Part, common: dict[str, Any]
    ) -> tuple[Message, str | None] | None:
        """Send a media part; None when only its link can go (too big, gone, refused by Telegram).

        A file Telegram has already is re-sent by its file_id (a broadcast downloads it once:
        the same URL's sends wait for the first upload). Downloads are spooled to disk, and at
        most MEDIA_CONCURRENCY run at once, so memory does not grow with file sizes.
        """
        assert part.media_kind is not None
        url = message.media
        cache_key = _cache_key(to, part.media_kind, url)
        file_id = await self.repo.media_file_id(cache_key)
        if file_id is not None:
            try:
                await self.throttle.wait(to.chat)
                return await self._send_media(to, part, file_id, common), None
            except TelegramBadRequest as exc:
                if "chat not found" in exc.message.lower():
                    raise
                logger.info("file_id of %s refused (%s); uploading", url, exc.message)
        # Waiting here would hold one of the worker's slots (other chats' messages queue behind
        # it): when the file is being fetched already, or 4 are in transfer, come back shortly.
        if url in self._transfers:
            raise RetryLater("the same file is being uploaded for another chat", delay=1.0)
        if self._media_slots.locked():
            raise RetryLater(f"{MEDIA_CONCURRENCY} media transfers under way", delay=1.0)
        self._transfers.add(url)
        try:
            async with self._media_slots:
                return await self._upload(to, message, part, common, cache_key)
        finally:
            self._transfers.discard(url)

    async def _upload(
        self,
        to: _Target,
        message: ManagerMessage,
        part: Part,
        common: dict[str, Any],
        cache_key: str,
    ) -> tuple[Message, str | None] | None:
        assert part.media_kind is not None
        try:
            spooled = await self._download(message, part.media_kind)
        except MediaRefused as exc:
            logger.warning("media of %s refused: %s", message.amo_id, exc)
            await self.throttle.wait(to.chat)
            text = message.refused_text(part.text, to.language)
            refusal = exc.reason.render(self.language)  # reported with the status
            return await to.bot.send_message(to.chat_id, text, **common), refusal
        if spooled is None:
            return None
        try:
            await self.throttle.wait(to.chat)
            sent = await self._send_media(to, part, spooled, common)
        except (TelegramBadRequest, TelegramEntityTooLarge) as exc:
            if "chat not found" in exc.message.lower():
                raise
            logger.info(
                "Telegram refused %s of message %s (%s); sending the link instead",
                part.media_kind,
                message.amo_id,
                exc.message,
            )
            return None
        finally:
            _discard(str(spooled.path))
        file_id = sent_file_id(sent)
        if file_id is not None:
            async with self.repo.transaction() as tx:
                await tx.remember_media_file(cache_key, file_id)
        return sent, None

    async def _send_media(
        self, to: _Target, part: Part, upload: InputFile | str, common: dict[str, Any]
    ) -> Message:
        caption = part.text or None
        bot, chat_id = to.bot, to.chat_id
        match part.media_kind:
            case "photo":
                return await bot.send_photo(chat_id, upload, caption=caption, **common)
            case "video":
                return await bot.send_video(chat_id, upload, caption=caption, **common)
            case "voice":
                return await bot.send_voice(chat_id, upload, caption=caption, **common)
            case "audio":
                return await bot.send_audio(chat_id, upload, caption=caption, **common)
            case "sticker":
                return await bot.send_sticker(chat_id, upload, **common)
        return await bot.send_document(chat_id, upload, caption=caption, **common)
