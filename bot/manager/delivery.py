"""Worker side of amoCRM → Telegram: deliver stored manager messages, report delivery statuses."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
)
from aiogram.types import (
    FSInputFile,
    InputFile,
    InputMediaAudio,
    InputMediaDocument,
    InputMediaPhoto,
    InputMediaVideo,
    Message,
    ReplyParameters,
)

from bot import ids
from bot.amocrm.amojo import AmojoClient
from bot.amocrm.channel import Channel
from bot.amocrm.hook_model import UnusableHook
from bot.amocrm.hooks import KIND_AMO_MESSAGE, KIND_AMO_TYPING
from bot.bots import Bots
from bot.jobs.queues import AMOJO_QUEUE, KIND_OWNER_MESSAGE, RECOVERY_QUEUE
from bot.jobs.throttle import TelegramThrottle
from bot.jobs.worker import Done, JobKind, RetryLater
from bot.limits import (
    ALBUM_MAX_WAIT_SECONDS,
    ALBUM_QUIET_SECONDS,
    AMOJO_DELIVERY_ERROR_MAX_CHARS,
    AMOJO_MEDIA_TIMEOUT_SECONDS,
    BUSINESS_REPLY_WINDOW_SECONDS,
    DELIVERY_GIVE_UP_SECONDS,
    MEDIA_CHUNK_BYTES,
    MEDIA_CONCURRENCY,
    MEDIA_DOWNLOAD_DEADLINE_SECONDS,
    RECONCILE_HOLD_SECONDS,
    TELEGRAM_ALBUM_MAX,
    TELEGRAM_PHOTO_UPLOAD_LIMIT,
    TELEGRAM_UPLOAD_LIMIT,
)
from bot.manager.gaps import GAPS_LANE
from bot.manager.mapping import Keyboard, ManagerMessage, Part, keyboard_for, plan_parts
from bot.manager.media import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    MediaPolicy,
    MediaRefused,
    MediaUnresolved,
)
from bot.manager.recovery import recover_lane
from bot.manager.typing_indicator import TypingIndicator
from bot.metrics import Metrics
from bot.phones import mask_phone, normalise_phone
from bot.texts import Language, Phrase, language_of, phrase
from storage import ChatKey, Customer, Job, MessageLink, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)

KIND_AMO_STATUS = "amo.status"

DELIVERED = 1
FAILED = -1
ERROR_BLOCKED = 901
ERROR_NO_RIGHTS = 902
ERROR_NO_CONVERSATION = 904
ERROR_OTHER = 905


def _hook_of(job: Job) -> Any:
    """The hook a message job carries (read leniently by ManagerMessage.from_hook)."""
    return job.payload.get("hook")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def refusal_key(amo_id: str) -> str:
    """Where a delivery remembers that its media was refused (reported with its status)."""
    return f"media.refused:{amo_id}"


def status_job(amo_id: str, status: int, error_code: int | None = None, error: str = "") -> NewJob:
    """A job reporting a manager message's delivery status to amojo (spec §5.4)."""
    if len(error) > AMOJO_DELIVERY_ERROR_MAX_CHARS:
        error = error[: AMOJO_DELIVERY_ERROR_MAX_CHARS - 1] + "…"
    return NewJob(
        queue=AMOJO_QUEUE,
        kind=KIND_AMO_STATUS,
        lane=f"status:{amo_id}",
        # The status is part of the key: a dead-lettered message reports -1, and when an operator
        # re-drives it and it gets through, the later 1 must still be reported.
        dedup_key=f"status:{amo_id}:{status}",
        payload={"amo_id": amo_id, "status": status, "error_code": error_code, "error": error},
    )


def _duration(seconds: float) -> Phrase:
    seconds = int(seconds)
    if seconds < 120:
        return phrase("units.seconds", n=seconds)
    if seconds < 2 * 3600:
        return phrase("units.minutes", n=seconds // 60)
    if seconds < 2 * 86400:
        return phrase("units.hours", n=seconds // 3600)
    return phrase("units.days", n=seconds // 86400)


def window_closed_reason(ago: float | None, window: int) -> Phrase:
    """What a manager reads when the time window has closed."""
    since = (
        phrase("amo.window.never") if ago is None else phrase("amo.window.last", ago=_duration(ago))
    )
    return phrase("amo.window.closed", since=since, window=_duration(window))


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


# Which parts Telegram lets share one album: photos with videos, documents, audio.
ALBUM_CLASSES = {"photo": "visual", "video": "visual", "document": "document", "audio": "audio"}


def album_class(message: ManagerMessage) -> str | None:
    """The album class of a manager message, or None when it can only go on its own."""
    kind = message.media_kind
    if kind is None or message.markup or message.reply_to:
        return None  # buttons cannot hang on an album; a quote goes with its own message
    parts = plan_parts(message, [])
    if len(parts) != 1:
        return None  # a caption too long for one item
    return ALBUM_CLASSES.get(kind)


def album_runs(messages: list[ManagerMessage]) -> list[list[ManagerMessage]]:
    """Consecutive parts of one class, at most TELEGRAM_ALBUM_MAX each, in their order."""
    runs: list[list[ManagerMessage]] = []
    for message in messages:
        kind = album_class(message)
        last = runs[-1] if runs else None
        if (
            last is not None
            and kind is not None
            and album_class(last[0]) == kind
            and len(last) < TELEGRAM_ALBUM_MAX
        ):
            last.append(message)
        else:
            runs.append([message])
    return runs


def _album_part(job: Job, group: str | None) -> ManagerMessage | None:
    """The manager message of a pending job when it is a part of album `group`."""
    if job.kind != KIND_AMO_MESSAGE:
        return None
    try:
        message = ManagerMessage.from_hook(_hook_of(job))
    except UnusableHook:
        return None
    return message if message.media_group_id == group else None


def _album_item(
    message: ManagerMessage, upload: InputFile | str
) -> InputMediaPhoto | InputMediaVideo | InputMediaDocument | InputMediaAudio:
    caption = message.text.strip() or None
    match message.media_kind:
        case "photo":
            return InputMediaPhoto(media=upload, caption=caption)
        case "video":
            return InputMediaVideo(media=upload, caption=caption)
        case "audio":
            return InputMediaAudio(media=upload, caption=caption)
    return InputMediaDocument(media=upload, caption=caption)


class _NotAnAlbum(Exception):
    """These parts cannot go as one album; they are sent one by one."""


@dataclass(frozen=True, slots=True)
class _Target:
    """The bot that sends, the chat it sends to, and the Business connection it sends through."""

    bot: Bot
    chat: ChatKey
    bot_key: int = 0
    business_connection_id: str | None = None
    language: Language = "en"  # the customer's, for what stands in for a file

    @property
    def extra(self) -> dict[str, Any]:
        """What every send into this chat adds (the Business connection)."""
        if self.business_connection_id is None:
            return {}
        return {"business_connection_id": self.business_connection_id}

    @property
    def chat_id(self) -> int:
        """The Telegram chat id."""
        return self.chat.chat_id


def _reads(customer: Customer | None) -> Language:
    """The language a customer reads (their Telegram's, as for the greeting)."""
    return language_of(customer.language_code if customer is not None else None)


class Undeliverable(Exception):
    """A message that must not or cannot reach Telegram; reported as -1 with this code."""

    def __init__(self, error_code: int, reason: Phrase) -> None:
        super().__init__(str(reason))
        self.error_code = error_code
        self.reason = reason  # worded in the account's language when it is reported


class ManagerMessageDelivery:
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

    async def _deliver_album(
        self, job: Job, head: ManagerMessage, recipient: Recipient, received_at: float
    ) -> Done:
        """The parts of a manager's album (one hook each) as Telegram albums, in order.

        The first part waits (durably: the job is retried later, nothing is held in memory)
        until no further part came for ALBUM_QUIET_SECONDS. It then sends every part that
        follows it in its lane, and finishes their jobs with its own; each part keeps its own
        delivery status. A part Telegram cannot take in an album goes on its own.
        """
        members: list[tuple[Job, ManagerMessage]] = [(job, head)]
        moot: list[int] = []  # typing between the parts: the parts themselves end it
        skipped: list[int] = []
        for later in (await self.repo.pending_in_lane(job.queue, job.lane))[1:]:
            if later.kind == KIND_AMO_TYPING:
                skipped.append(later.id)
                continue
            message = _album_part(later, head.media_group_id)
            if message is None:
                break  # a message between the parts keeps its place: the album stops there
            members.append((later, message))
            moot += skipped
            skipped = []
        arrivals = [float(j.payload.get("received_at") or j.created_at) for j, _ in members]
        now = time.time()
        quiet, waited = now - max(arrivals), now - min(arrivals)
        if quiet < ALBUM_QUIET_SECONDS and waited < ALBUM_MAX_WAIT_SECONDS:
            delay = min(ALBUM_QUIET_SECONDS - quiet, ALBUM_MAX_WAIT_SECONDS - waited)
            raise RetryLater("waiting for the album's other parts", delay=delay + 0.05)
        done: list[Done] = []
        decided = 0  # the parts, in order, whose outcome (sent, or its own -1) is in `done`
        try:
            for run in album_runs([message for _, message in members]):
                if len(run) > 1:
                    try:
                        done.append(await self._send_album(run, recipient))
                        decided += len(run)
                        continue
                    except _NotAnAlbum as exc:
                        logger.info("album %s sent part by part: %s", head.media_group_id, exc)
                    except Undeliverable as exc:  # the chat itself refuses: every part says so
                        statuses = [self._failed(m, exc.error_code, exc.reason) for m in run]
                        done.append(Done(followups=statuses))
                        decided += len(run)
                        continue
                for message in run:
                    try:
                        done.append(await self._send(message, recipient))
                    except Undeliverable as exc:  # this part's own failure, reported as its own
                        statuses = [self._failed(message, exc.error_code, exc.reason)]
                        done.append(Done(followups=statuses))
                    decided += 1
        except Exception as exc:
            if decided == 0:
                raise  # nothing went out: this job is retried (or dead-lettered) as a whole
            # What went out is recorded; the parts after it stay pending in their own jobs
            # (the next one gathers the rest), so one failing part holds no other part back.
            logger.info(
                "album %s: %d part(s) done, the rest later: %s", head.media_group_id, decided, exc
            )
        siblings = [later.id for later, _ in members[1:decided]]

        async def record(tx: Transaction) -> None:
            for part in done:
                if part.record is not None:
                    await part.record(tx)
            for sibling in siblings:
                await tx.finish_job(sibling)
            for typing in moot if decided == len(members) else []:
                await tx.finish_job(typing)

        return Done(followups=[f for part in done for f in part.followups], record=record)

    async def _send_album(self, run: list[ManagerMessage], recipient: Recipient) -> Done:
        """One sendMediaGroup for 2–10 parts; _NotAnAlbum when they must go one by one."""
        chat = recipient.chat
        to = self._target(chat)
        sent_before = {
            link.amo_message_id
            for message in run
            for link in await self.repo.links_for_amo_message(message.amo_id)
            if link.direction == "out" and link.key == chat
        }
        todo = [message for message in run if message.amo_id not in sent_before]
        if len(todo) == 1:
            raise _NotAnAlbum("one part left after a restart")
        if todo:
            await self._send_album_items(to, todo)
            await self._mark_read(to)
        if self.typing is not None:
            self.typing.stop(chat)
        head = run[0]

        async def record(tx: Transaction) -> None:
            await _record_conversation(tx, recipient, head)

        logger.info(
            "album of %d part(s) delivered to chat %d of bot %s",
            len(run),
            chat.chat_id,
            self.bots.label(chat.bot),
        )
        return Done(followups=[status_job(m.amo_id, DELIVERED) for m in run], record=record)

    async def _send_album_items(self, to: _Target, todo: list[ManagerMessage]) -> None:
        """Upload (or reuse) every part's file and send them as one album; record each link."""
        if self._media_slots.locked():
            raise RetryLater(f"{MEDIA_CONCURRENCY} media transfers under way", delay=1.0)
        spooled: list[str] = []
        media: list[Any] = []  # aiogram's union of album items
        async with self._media_slots:
            try:
                for message in todo:
                    upload = await self._album_upload(to, message, spooled)
                    media.append(_album_item(message, upload))
                reply_to = await self._reply_target(todo[0], to.chat)
                extra: dict[str, Any] = dict(to.extra)
                if reply_to is not None:
                    extra["reply_parameters"] = ReplyParameters(
                        message_id=reply_to, allow_sending_without_reply=True
                    )
                for _ in todo:  # an album counts as one message per item
                    await self.throttle.wait(to.chat)
                try:
                    sent = await to.bot.send_media_group(to.chat_id, media, **extra)
                except TelegramBadRequest as exc:
                    if "chat not found" in exc.message.lower():
                        raise Undeliverable(
                            ERROR_NO_CONVERSATION, phrase("amo.chat_not_found")
                        ) from None
                    raise _NotAnAlbum(f"Telegram refused the album: {exc.message}") from None
                except TelegramForbiddenError as exc:  # each part then reports it (901)
                    raise _NotAnAlbum(f"Telegram refused the album: {exc.message}") from None
                except TelegramEntityTooLarge as exc:  # the parts together are too big
                    raise _NotAnAlbum(f"Telegram refused the album: {exc.message}") from None
            finally:
                for path in spooled:
                    _discard(path)
        if len(sent) != len(todo):
            raise _NotAnAlbum(f"Telegram answered {len(sent)} messages for {len(todo)} parts")
        async with self.repo.transaction() as tx:
            await tx.save_links(
                [
                    MessageLink(
                        key=to.chat,
                        tg_message_id=answer.message_id,
                        direction="out",
                        amo_message_id=part.amo_id,
                    )
                    for part, answer in zip(todo, sent, strict=True)
                ]
            )
            for part, answer in zip(todo, sent, strict=True):
                file_id = sent_file_id(answer)
                if file_id is not None:
                    await tx.remember_media_file(
                        _cache_key(to, part.media_kind, part.media), file_id
                    )

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
        return _Target(bot, chat, chat.bot, None, _reads(customer))

    async def _album_upload(
        self, to: _Target, message: ManagerMessage, spooled: list[str]
    ) -> InputFile | str:
        """A part's file: Telegram's file_id when it has it, else downloaded to the spool."""
        file_id = await self.repo.media_file_id(_cache_key(to, message.media_kind, message.media))
        if file_id is not None:
            return file_id
        try:
            upload = await self._download(message, message.media_kind or "document")
        except MediaRefused as exc:
            raise _NotAnAlbum(f"the media of {message.amo_id} is refused: {exc}") from None
        except RetryLater as exc:  # its file cannot be had now: the others need not wait
            raise _NotAnAlbum(f"the media of {message.amo_id}: {exc.reason}") from None
        if upload is None:
            raise _NotAnAlbum(f"the media of {message.amo_id} cannot be uploaded")
        spooled.append(str(upload.path))
        return upload

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
            except TelegramBadRequest as exc:
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

    async def _download(self, message: ManagerMessage, kind: str) -> FSInputFile | None:
        """The hook's media as an upload, or None when it cannot be uploaded (too big, gone).

        MediaRefused when the URL (or a redirect) points anywhere but amoCRM's file hosts.
        """
        try:
            fetch = await self.media_policy.resolve(message.media)
        except MediaUnresolved as exc:
            raise RetryLater(str(exc)) from None
        limit = TELEGRAM_PHOTO_UPLOAD_LIMIT if kind == "photo" else TELEGRAM_UPLOAD_LIMIT
        if message.file_size > limit:
            return None
        try:
            # A whole download, however slowly its bytes drip in, gets this long.
            async with asyncio.timeout(MEDIA_DOWNLOAD_DEADLINE_SECONDS):
                for _ in range(MAX_REDIRECTS + 1):
                    url, headers, extensions = fetch.request()
                    async with self._http.stream(
                        "GET", url, headers=headers, extensions=extensions
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status_code not in REDIRECT_STATUSES or not location:
                            return await self._read_upload(message, response, limit)
                    fetch = await self.media_policy.resolve(fetch.url.join(location))
        except TimeoutError:
            raise RetryLater(
                f"media download took over {MEDIA_DOWNLOAD_DEADLINE_SECONDS:.0f} s"
            ) from None
        except MediaUnresolved as exc:
            raise RetryLater(str(exc)) from None
        raise MediaRefused(phrase("media.redirects", count=MAX_REDIRECTS))

    async def _read_upload(
        self, message: ManagerMessage, response: httpx.Response, limit: int
    ) -> FSInputFile | None:
        """The body of a media answer spooled to disk as an upload (None: unusable)."""
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryLater(f"media download: HTTP {response.status_code}")
        if response.status_code >= 300:
            logger.warning(
                "media of %s: HTTP %d, sending the link", message.amo_id, response.status_code
            )
            return None
        name = message.file_name or _default_name(message)
        size = 0
        try:
            spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - handed on to the upload
                dir=self.spool_dir, prefix="media-", delete=False
            )
        except OSError as exc:
            logger.error("media of %s not spooled (%s); sending the link", message.amo_id, exc)
            return None
        try:
            with spool:
                async for chunk in bounded_body(response, MEDIA_CHUNK_BYTES):
                    size += len(chunk)
                    if size > limit:
                        _discard(spool.name)
                        return None
                    spool.write(chunk)
        except UnknownEncoding as exc:
            _discard(spool.name)
            logger.warning("media of %s: body in %s, sending the link", message.amo_id, exc)
            return None
        except OSError as exc:  # the disk is full, a quota: the customer still gets the link
            _discard(spool.name)
            logger.error("media of %s not spooled (%s); sending the link", message.amo_id, exc)
            return None
        except BaseException:
            _discard(spool.name)
            raise
        if size == 0:
            _discard(spool.name)
            return None
        return FSInputFile(spool.name, filename=name, chunk_size=MEDIA_CHUNK_BYTES)


class UnknownEncoding(Exception):
    """A body in a Content-Encoding the bridge does not decode."""


async def bounded_body(response: httpx.Response, piece: int) -> AsyncIterator[bytes]:
    """The decoded body in pieces of at most `piece` bytes, however well it is compressed.

    httpx decodes a whole received chunk at once: a small gzip'd chunk could expand to many
    megabytes before a size limit sees it. Decoded here, at most `piece` bytes at a time.
    """
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        async for chunk in response.aiter_raw(piece):
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnknownEncoding(encoding)
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, told by its header
    try:
        async for chunk in response.aiter_raw(piece):
            data = decoder.decompress(chunk, piece)
            while True:
                if data:
                    yield data
                if not decoder.unconsumed_tail:
                    break
                data = decoder.decompress(decoder.unconsumed_tail, piece)
        tail = decoder.flush()
    except zlib.error as exc:
        raise UnknownEncoding(f"{encoding} that does not decode: {exc}") from None
    if tail:
        yield tail


class MediaSpool:
    """This process's folder for media in transfer, under `root` (a lock marks it in use).

    At start, folders of processes that are gone (killed mid-upload) are removed; a folder
    another running bridge holds is left alone.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root or Path(tempfile.gettempdir()) / "tg-amocrm-bridge-media"
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in self.root.glob("spool-*"):
            self._remove_if_abandoned(folder)
        self.path = Path(tempfile.mkdtemp(prefix="spool-", dir=self.root))
        self._lock = (self.path / ".lock").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    @staticmethod
    def _remove_if_abandoned(folder: Path) -> None:
        try:
            with (folder / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # held by a running bridge (or unreadable): not ours to remove

    def close(self) -> None:
        """Remove the folder (nothing is in transfer any more)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.close()


def _discard(path: str) -> None:
    """Remove a spooled file (a fast local unlink; a missing one is fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def sent_file_id(sent: Message) -> str | None:
    """The file_id Telegram gave the file of a sent media message."""
    if sent.photo:
        return sent.photo[-1].file_id
    for media in (sent.video, sent.voice, sent.audio, sent.sticker, sent.animation, sent.document):
        if media is not None:
            return str(media.file_id)
    return None


def _default_name(message: ManagerMessage) -> str:
    tail = message.media.rsplit("/", 1)[-1].split("?", 1)[0]
    if "." in tail:
        return tail
    extension = {
        "picture": "jpg",
        "video": "mp4",
        "voice": "ogg",
        "audio": "mp3",
        "sticker": "webp",
    }.get(message.type, "bin")
    return f"{message.type}.{extension}"


class DeliveryStatusReporter:
    """Runs `amo.status` jobs (queue "amojo"): the delivery_status call, retried like any job."""

    def __init__(self, amojo: AmojoClient, channel: Channel) -> None:
        self.amojo = amojo
        self.channel = channel

    def kinds(self) -> dict[str, JobKind]:
        """Job kinds this reporter runs."""
        return {KIND_AMO_STATUS: JobKind(run=self.report)}

    async def report(self, job: Job) -> Done:
        """POST /{scope_id}/{msgid}/delivery_status."""
        payload = job.payload
        started = time.perf_counter()
        await self.amojo.delivery_status(
            self.channel.scope_id,
            str(payload["amo_id"]),
            int(payload["status"]),
            payload.get("error_code"),
            payload.get("error") or None,
        )
        logger.info(
            "delivery status %s of %s reported in %.0f ms",
            payload["status"],
            payload["amo_id"],
            (time.perf_counter() - started) * 1000,
        )
        return Done()
