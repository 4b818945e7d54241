"""Durable intake of customer updates: map, store the job, return (no network here)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiogram.types import CallbackQuery, Contact, Message

from bot.chat.notices import Markup, callback_answer_job, notice_job
from bot.common import ids
from bot.common.bots import GROUP_TYPES, Bots
from bot.common.deeplinks import Touch, is_deep_link, read_payload, readable
from bot.common.phones import mask_phone, normalise_phone
from bot.common.texts import Language, text
from bot.customer import mapping
from bot.customer.attribution import attribution_job
from bot.jobs.queues import AMOJO_QUEUE, KIND_OWNER_MESSAGE
from storage import ChatKey, CustomerProfile, MessageLink, NewJob, Repository

logger = logging.getLogger(__name__)

KIND_NEW_MESSAGE = "customer.message"
KIND_EDIT_MESSAGE = "customer.edit"


def is_own_contact(message: Message) -> bool:
    """A shared contact is the customer's own only when Telegram says it is theirs."""
    contact = message.contact
    user = message.from_user
    return bool(contact and user and contact.user_id is not None and contact.user_id == user.id)


def amojo_job(
    kind: str, key: ChatKey, dedup_key: str, payload: dict[str, Any], content: mapping.Content
) -> NewJob:
    """A job that sends one amojo event for a chat (its media link is made at send time)."""
    return NewJob(
        queue=AMOJO_QUEUE,
        kind=kind,
        lane=ids.chat_lane(key),
        dedup_key=dedup_key,
        payload={
            **ids.chat_fields(key),
            "payload": payload,
            "media": content.media.as_dict() if content.media else None,
        },
    )


@dataclass(slots=True)
class _Batch:
    """Customer updates handled since the last commit (one getUpdates batch)."""

    customers: dict[ChatKey, CustomerProfile] = field(default_factory=dict)
    phones: dict[ChatKey, str] = field(default_factory=dict)
    jobs: list[NewJob] = field(default_factory=list)
    # The message pair each job records, by the job's dedup key: stored only when the job is
    # new, so a repeated update never rewrites what amoCRM was last told.
    links: dict[str, MessageLink] = field(default_factory=dict)
    # Deep-link touches: (conversation, the /start message, what its payload says).
    touches: list[tuple[ChatKey, int, Touch]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.customers or self.jobs or self.touches)

    def then(self, later: _Batch) -> _Batch:
        """This batch followed by a later one."""
        return _Batch(
            customers={**self.customers, **later.customers},
            phones={**self.phones, **later.phones},
            jobs=self.jobs + later.jobs,
            links={**self.links, **later.links},
            touches=self.touches + later.touches,
        )


class Intake:
    """Turns customer messages into durable jobs for the amojo worker.

    Handlers only add to a batch in memory; `flush` commits it in one transaction. The bridge
    flushes before every getUpdates call, so Telegram is told "done" (the next offset) only
    for updates already committed — one commit per batch instead of one per message.
    """

    def __init__(self, repo: Repository, bots: Bots, language: Language = "en") -> None:
        self.repo = repo
        self.bots = bots
        self.language = language  # of what amoCRM is told on the bridge's own behalf
        self._batch = _Batch()
        self._flushing = asyncio.Lock()

    async def flush(self) -> None:
        """Commit everything recorded so far (kept for the next try when it fails)."""
        async with self._flushing:
            batch, self._batch = self._batch, _Batch()
            if not batch:
                return
            try:
                async with self.repo.transaction() as tx:
                    await tx.upsert_customers(batch.customers.values())
                    for key, phone in batch.phones.items():
                        await tx.set_customer_phone(key, phone)
                    new = await tx.insert_jobs(batch.jobs)
                    await tx.save_links(
                        [
                            batch.links[job.dedup_key]
                            for job, is_new in zip(batch.jobs, new, strict=True)
                            if is_new and job.dedup_key in batch.links
                        ]
                    )
                    for key, telegram_id, touch in batch.touches:
                        stored = await tx.add_touch(key, telegram_id, touch.raw, touch.values)
                        if stored is None:
                            logger.info("deep link of %s not recorded again", key)
                        else:
                            touch_id, first = stored
                            await tx.insert_jobs([attribution_job(key, touch_id, first, touch)])
            except BaseException:
                self._batch = batch.then(self._batch)
                raise

    def chat_of(self, message: Message) -> ChatKey:
        """The conversation a message belongs to (the bot or Business account, its chat, the
        topic of it)."""
        return self.bots.message_chat(message)

    def _touch_customer(self, message: Message) -> None:
        user = message.from_user
        key = self.chat_of(message)
        topic = message.direct_messages_topic
        if topic is not None and topic.user is not None:
            user = topic.user  # a channel's direct messages: the person is the client
        elif message.chat.type in GROUP_TYPES:
            # The client side of a group's conversation is the group, whoever wrote.
            self._batch.customers[key] = CustomerProfile(
                key=key,
                user_id=ids.conversation_chat(key),
                name=mapping.group_name(message, key),
                username=message.chat.username,
                language_code=user.language_code if user else None,
                message_at=message.date.timestamp(),
            )
            return
        if user is None:
            return
        self._batch.customers[key] = CustomerProfile(
            key=key,
            user_id=user.id,
            name=mapping.sender_name(user),
            username=user.username,
            language_code=user.language_code,
            message_at=message.date.timestamp(),
        )

    async def record_start(self, message: Message, payload: str) -> None:
        """A `/start <payload>` (a deep link): bridged as a short readable line, and its touch
        stored with a job that carries it onto the chat's lead. Anything that cannot be a deep
        link (a caption, a long typed text) is bridged as the message it is."""
        if message.text is None or not is_deep_link(payload):
            await self.record_message(message)
            return
        touch = read_payload(payload)
        line = text("start.from_link", self.language, source=readable(touch) or payload)
        await self.record_message(message, text_instead=line)
        self._batch.touches.append((self.chat_of(message), message.message_id, touch))

    async def record_message(self, message: Message, text_instead: str | None = None) -> None:
        """Record a new customer message for delivery (a repeat of a stored one is ignored)."""
        key = self.chat_of(message)
        reply_to = None
        if message.reply_to_message is not None:
            await self.flush()  # the quoted message may be in this very batch
            quoted = message.reply_to_message.message_id
            link = await self.repo.get_link(key, quoted)
            if link is not None:
                reply_to = mapping.reply_reference(link.our_msgid, link.amo_message_id)
            else:
                reply_to = mapping.reply_reference(ids.message_id(key, quoted), None)
        content = mapping.message_content(message, self.language)
        if text_instead is not None:
            content = mapping.Content({"type": "text", "text": text_instead})
        payload = mapping.new_message_payload(key, message, content, reply_to)
        if message.chat.type in GROUP_TYPES and message.direct_messages_topic is None:
            mapping.as_group_message(payload, message, key)
        job = amojo_job(
            KIND_NEW_MESSAGE,
            key,
            f"in:{ids.key_text(key)}:{message.message_id}",
            payload,
            content,
        )
        self._touch_customer(message)
        # Only a private chat's phone makes write-first possible: a contact shared in a group
        # must not let a manager start a chat in front of the whole group.
        if message.chat.type == "private" and is_own_contact(message) and message.contact:
            own_phone = self._own_phone(message.contact)
            if own_phone is not None:
                self._batch.phones[key] = own_phone
        self._batch.jobs.append(job)
        self._batch.links[job.dedup_key] = MessageLink(
            key=key,
            tg_message_id=message.message_id,
            direction="in",
            our_msgid=payload["msgid"],
            content_hash=mapping.content_hash(message),
        )

    @staticmethod
    def _own_phone(contact: Contact) -> str | None:
        phone = normalise_phone(contact.phone_number)
        if phone is None:
            logger.warning(
                "ignoring a shared phone that is too short: %s", mask_phone(contact.phone_number)
            )
        return phone

    async def record_notice(
        self, message: Message, key: str, text: str, markup: Markup | None = None
    ) -> None:
        """Record a reply of the bot itself (the Telegram worker sends it)."""
        self._touch_customer(message)
        self._batch.jobs.append(notice_job(self.chat_of(message), key, text, markup))

    async def record_owner_edit(self, message: Message, update_id: int, owner_name: str) -> None:
        """An edit of what a Business account's owner typed: the imported message is edited
        (when its text really changed); one the bridge never saw is imported as the owner's.
        The customer's profile and last-message time are not the owner's to change."""
        await self.flush()
        key = self.chat_of(message)
        link = await self.repo.get_link(key, message.message_id)
        if link is None:
            await self.record_owner_message(message, owner_name)
            return
        new_hash = mapping.content_hash(message)
        if link.content_hash == new_hash or link.our_msgid is None:
            return  # unchanged, or a message the bridge sent for the account (not ours to edit)
        self._record_edit_job(key, message, update_id, "out", new_hash)

    async def record_edit(self, message: Message, update_id: int) -> None:
        """Record an edit of a customer message when its text or caption really changed.

        The job is keyed on the update: a repeat of this update is a duplicate, but an edit back
        to an earlier text (A→B→A→B) is new work each time.
        """
        if (message.text or "").startswith("/start"):
            return  # bridged as a deep link's readable line: an edit does not change the link
        await self.flush()  # the edited message may be in this very batch
        key = self.chat_of(message)
        link = await self.repo.get_link(key, message.message_id)
        new_hash = mapping.content_hash(message)
        if link is not None and link.content_hash == new_hash:
            return
        if link is None:
            logger.info(
                "edit of message %d in chat %d that the bridge never saw: sent as new",
                message.message_id,
                message.chat.id,
            )
            await self.record_message(message)
            return
        self._touch_customer(message)
        self._record_edit_job(key, message, update_id, "in", new_hash)

    def _record_edit_job(
        self, key: ChatKey, message: Message, update_id: int, direction: str, new_hash: str
    ) -> None:
        """The `edit_message` job of an edited message, and the pair's new fingerprint."""
        content = mapping.message_content(message, self.language)
        job = amojo_job(
            KIND_EDIT_MESSAGE,
            key,
            f"edit:{ids.key_text(key)}:{message.message_id}:u{update_id}",
            mapping.edit_message_payload(key, message, content),
            content,
        )
        self._batch.jobs.append(job)
        self._batch.links[job.dedup_key] = MessageLink(
            key=key, tg_message_id=message.message_id, direction=direction, content_hash=new_hash
        )

    async def record_owner_message(self, message: Message, owner_name: str) -> None:
        """Record what a Business account's owner typed in Telegram, for amoCRM as outgoing.

        A message the bridge itself sent on the account's behalf is linked already (delivery
        records it when Telegram accepts it), so it is not imported back.
        """
        await self.flush()  # the quoted or the linked message may be in this very batch
        key = self.chat_of(message)
        if await self.repo.get_link(key, message.message_id) is not None:
            logger.debug("message %d of %s is bridged already", message.message_id, key)
            return
        content = mapping.message_content(message, self.language)
        payload = mapping.owner_message_payload(key, message, content, owner_name)
        if message.reply_to_message is not None:
            link = await self.repo.get_link(key, message.reply_to_message.message_id)
            if link is not None:
                reply_to = mapping.reply_reference(link.our_msgid, link.amo_message_id)
                if reply_to is not None:
                    payload["reply_to"] = reply_to
        job = amojo_job(
            KIND_OWNER_MESSAGE,
            key,
            f"owner:{ids.key_text(key)}:{message.message_id}",
            payload,
            content,
        )
        job.payload["owner_id"] = message.from_user.id if message.from_user else -key.bot
        self._batch.jobs.append(job)
        self._batch.links[job.dedup_key] = MessageLink(
            key=key,
            tg_message_id=message.message_id,
            direction="out",
            our_msgid=payload["msgid"],
            content_hash=mapping.content_hash(message),
        )

    async def record_deletions(self, key: ChatKey, message_ids: list[int], update_id: int) -> None:
        """Show in amoCRM that messages were deleted in Telegram (amojo cannot delete): each
        bridged one is edited to say so. Messages the bridge never carried are only logged."""
        await self.flush()  # a deleted message may be in this very batch
        for telegram_id in message_ids:
            link = await self.repo.get_link(key, telegram_id)
            if link is None or (link.our_msgid is None and link.direction == "out"):
                # Never bridged, or a manager's message the bridge delivered: amoCRM has it as
                # the manager wrote it, and only its author's side could change it.
                logger.info(
                    "deleted message %d of %s: not one amoCRM got from us", telegram_id, key
                )
                continue
            who = "business.deleted_by_customer" if link.direction == "in" else "business.deleted"
            payload = mapping.deleted_message_payload(key, telegram_id, text(who, self.language))
            self._batch.jobs.append(
                amojo_job(
                    KIND_EDIT_MESSAGE,
                    key,
                    f"deleted:{ids.key_text(key)}:{telegram_id}:u{update_id}",
                    payload,
                    mapping.Content(payload["message"]),
                )
            )

    async def record_button_press(
        self, key: ChatKey, callback: CallbackQuery, label: str | None
    ) -> None:
        """A customer's press of a manager's inline button (Business chats): its text, as the
        customer's message (spec §3.2: a press sends the button's text back). A repeated
        callback is one message. Without a label, only the press is answered."""
        if callback.bot is not None:  # the press's spinner ends once it is stored
            self._batch.jobs.append(
                callback_answer_job(self.bots.key_of(callback.bot), callback.id)
            )
        if label is None:
            return
        moment = int(time.time())
        msgid = f"{ids.conversation_id(key)}-cb{callback.id}"
        payload: dict[str, Any] = {
            "timestamp": moment,
            "msec_timestamp": moment * 1000,
            "msgid": msgid,
            "conversation_id": ids.conversation_id(key),
            "sender": mapping.sender(callback.from_user),
            "message": {"type": "text", "text": label},
            "silent": False,
        }
        content = mapping.Content(payload["message"])
        dedup = f"in:{ids.key_text(key)}:cb{callback.id}"
        self._batch.jobs.append(amojo_job(KIND_NEW_MESSAGE, key, dedup, payload, content))
