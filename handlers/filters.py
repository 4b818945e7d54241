"""Filters shared by the routers.

They are coroutines on purpose: aiogram runs a plain callable filter (such as
`F.chat.type == "private"`) through `asyncio.to_thread`, one thread-pool round trip per
update and router, which was a visible share of the CPU per customer message.
"""

from __future__ import annotations

from aiogram.filters import Filter
from aiogram.types import Message, TelegramObject

from bot.customer.updates import AUTHORSHIP_FIELDS, dropped_fields


class PrivateChat(Filter):
    """The event happened in a private chat."""

    async def __call__(self, event: TelegramObject) -> bool:
        """True for private chats."""
        chat = getattr(event, "chat", None)
        return chat is not None and chat.type == "private"


class PrivateOrGroupChat(Filter):
    """The event happened in a private chat or a group (a reaction to a bridged message)."""

    async def __call__(self, event: TelegramObject) -> bool:
        """True for private chats, groups and supergroups."""
        chat = getattr(event, "chat", None)
        return chat is not None and chat.type in ("private", "group", "supergroup")


class HasContact(Filter):
    """The message shares a contact."""

    async def __call__(self, message: Message) -> bool:
        """True when the message carries a contact."""
        return message.contact is not None


class OwnNewMessage(Filter):
    """The sender wrote the message themselves (not a forward of someone else's)."""

    async def __call__(self, message: Message) -> bool:
        """True unless the message is forwarded, or what says who wrote it was unreadable."""
        if AUTHORSHIP_FIELDS.intersection(dropped_fields(message)):
            return False
        return message.forward_origin is None and not message.is_automatic_forward
