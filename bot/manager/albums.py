"""A manager's files sent together (one hook each) go out as Telegram albums, each part with
its own delivery status."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiogram.exceptions import (
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
    ReplyParameters,
)

from bot.amocrm.hook_model import UnusableHook
from bot.amocrm.hooks import KIND_AMO_MESSAGE, KIND_AMO_TYPING
from bot.common.bots import Bots
from bot.common.limits import (
    ALBUM_MAX_WAIT_SECONDS,
    ALBUM_QUIET_SECONDS,
    MEDIA_CONCURRENCY,
    TELEGRAM_ALBUM_MAX,
)
from bot.common.texts import Phrase, phrase
from bot.jobs.throttle import TelegramThrottle
from bot.jobs.worker import Done, RetryLater
from bot.manager.mapping import ManagerMessage, plan_parts
from bot.manager.media import (
    MediaRefused,
)
from bot.manager.recipients import Recipient, _cache_key, _hook_of, _record_conversation, _Target
from bot.manager.spool import _discard, sent_file_id
from bot.manager.statuses import DELIVERED, ERROR_NO_CONVERSATION, Undeliverable, status_job
from bot.manager.typing_indicator import TypingIndicator
from storage import ChatKey, Customer, Job, MessageLink, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)


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


class AlbumDelivery:
    """Albums (a part of ManagerMessageDelivery)."""

    repo: Repository
    throttle: TelegramThrottle
    typing: TypingIndicator | None
    bots: Bots
    _media_slots: asyncio.Semaphore

    if TYPE_CHECKING:

        def _failed(self, message: ManagerMessage, error_code: int, reason: Phrase) -> NewJob: ...

        async def _send(self, message: ManagerMessage, recipient: Recipient) -> Done: ...

        async def _mark_read(self, to: _Target) -> None: ...

        async def _reply_target(self, message: ManagerMessage, chat: ChatKey) -> int | None: ...

        def _target(self, chat: ChatKey, customer: Customer | None = None) -> _Target: ...

        async def _download(self, message: ManagerMessage, kind: str) -> FSInputFile | None: ...

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
