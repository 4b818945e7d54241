"""Durable intake of customer updates: map, store the job, return (no network here)."""

from __future__ import annotations

import logging

from aiogram.types import Contact, Message

from bot import ids, inbound
from bot.notices import Markup, notice_job
from bot.phones import mask_phone, match_key, normalise_phone
from storage import MessageLink, NewJob, Repository
from storage.repository import Transaction

logger = logging.getLogger(__name__)

AMOJO_QUEUE = "amojo"
KIND_NEW_MESSAGE = "customer.message"
KIND_EDIT_MESSAGE = "customer.edit"


def is_own_contact(message: Message) -> bool:
    """A shared contact is the customer's own only when Telegram says it is theirs."""
    contact = message.contact
    user = message.from_user
    return bool(contact and user and contact.user_id is not None and contact.user_id == user.id)


class Intake:
    """Turns customer messages into durable jobs for the amojo worker."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def _touch_customer(self, tx: Transaction, message: Message) -> None:
        user = message.from_user
        if user is None:
            return
        await tx.upsert_customer(
            chat_id=message.chat.id,
            user_id=user.id,
            name=inbound.sender_name(user),
            username=user.username,
            language_code=user.language_code,
            message_at=message.date.timestamp(),
        )

    async def record_message(self, message: Message) -> bool:
        """Store a new customer message for delivery; False when it was already stored."""
        chat_id = message.chat.id
        reply_to = None
        if message.reply_to_message is not None:
            link = await self.repo.get_link(chat_id, message.reply_to_message.message_id)
            if link is not None:
                reply_to = inbound.reply_reference(link.our_msgid, link.amo_message_id)
            else:
                reply_to = inbound.reply_reference(
                    ids.message_id(chat_id, message.reply_to_message.message_id), None
                )
        content = inbound.message_content(message)
        payload = inbound.new_message_payload(message, content, reply_to)
        job = NewJob(
            queue=AMOJO_QUEUE,
            kind=KIND_NEW_MESSAGE,
            lane=ids.chat_lane(chat_id),
            dedup_key=f"in:{chat_id}:{message.message_id}",
            payload={
                "chat_id": chat_id,
                "payload": payload,
                "media": content.media.as_dict() if content.media else None,
            },
        )
        own_phone = None
        if is_own_contact(message) and message.contact is not None:
            own_phone = self._own_phone(message.contact)
        async with self.repo.transaction(urgent=True) as tx:
            await self._touch_customer(tx, message)
            if own_phone is not None:
                await tx.set_customer_phone(chat_id, *own_phone)
            inserted = await tx.enqueue([job])
            if inserted:
                await tx.save_links(
                    [
                        MessageLink(
                            chat_id=chat_id,
                            tg_message_id=message.message_id,
                            direction="in",
                            our_msgid=payload["msgid"],
                            content_hash=inbound.content_hash(message),
                        )
                    ]
                )
        return bool(inserted)

    @staticmethod
    def _own_phone(contact: Contact) -> tuple[str, str] | None:
        phone = normalise_phone(contact.phone_number)
        key = match_key(contact.phone_number)
        if phone is None or key is None:
            logger.warning("ignoring a shared phone that is too short: %s", mask_phone(phone or ""))
            return None
        return phone, key

    async def record_notice(
        self, message: Message, key: str, text: str, markup: Markup | None = None
    ) -> None:
        """Store a reply of the bot itself (the Telegram worker sends it)."""
        async with self.repo.transaction(urgent=True) as tx:
            await self._touch_customer(tx, message)
            await tx.enqueue([notice_job(message.chat.id, key, text, markup)])

    async def record_edit(self, message: Message) -> bool:
        """Store an edit of a customer message; False when the text did not really change."""
        chat_id = message.chat.id
        link = await self.repo.get_link(chat_id, message.message_id)
        new_hash = inbound.content_hash(message)
        if link is not None and link.content_hash == new_hash:
            return False
        if link is None:
            logger.info(
                "edit of message %d in chat %d that the bridge never saw: sent as new",
                message.message_id,
                chat_id,
            )
            return await self.record_message(message)
        payload = inbound.edit_message_payload(message, inbound.message_content(message))
        media = inbound.message_content(message).media
        job = NewJob(
            queue=AMOJO_QUEUE,
            kind=KIND_EDIT_MESSAGE,
            lane=ids.chat_lane(chat_id),
            dedup_key=f"edit:{chat_id}:{message.message_id}:{new_hash}",
            payload={
                "chat_id": chat_id,
                "payload": payload,
                "media": media.as_dict() if media else None,
            },
        )
        async with self.repo.transaction(urgent=True) as tx:
            await self._touch_customer(tx, message)
            inserted = await tx.enqueue([job])
            await tx.save_links(
                [
                    MessageLink(
                        chat_id=chat_id,
                        tg_message_id=message.message_id,
                        direction="in",
                        content_hash=new_hash,
                    )
                ]
            )
        return bool(inserted)
