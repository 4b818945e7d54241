"""The one place that builds and parses ids shared with amojo (README, "Customers → amoCRM").

A conversation is a Telegram chat as one bot sees it (`ChatKey`). The primary bot (bot key 0)
keeps the ids it had before there were several bots: `tg-{chat}`, `tg-{chat}-{message}`; every
other bot's ids carry its Telegram id: `tg-b{bot}-{chat}`, `tg-b{bot}-{chat}-{message}`. A
sender is one person in every bot: `tg-{user}`.

A chat of a Telegram Business account (a staff member's own account connected to a bot) has
the bot key `-owner_id` and the ids `tg-a{owner}-{chat}`, `tg-a{owner}-{chat}-{message}`: the
account, not the connection id (which Telegram may issue anew), keeps the conversation.
"""

from __future__ import annotations

import re
from typing import Any

from storage import ChatKey

PREFIX = "tg-"
PRIMARY = 0
BUTTON_DATA = "amo:"  # callback data of a manager's text button made inline (Business chats)
_CONVERSATION = re.compile(r"tg-(?:([ab])([1-9]\d{0,18})-)?(-?[1-9]\d{0,18})")


def primary_chat(chat_id: int) -> ChatKey:
    """A chat of the primary bot."""
    return ChatKey(PRIMARY, chat_id)


def business_key(owner_id: int, chat_id: int) -> ChatKey:
    """A chat of the Business account of `owner_id` (the bot key is the owner, negated)."""
    return ChatKey(-owner_id, chat_id)


def is_business(key: ChatKey) -> bool:
    """Whether a chat is one of a Business account's (not a chat with a bot)."""
    return key.bot < 0


def _tag(key: ChatKey) -> str:
    if key.bot == PRIMARY:
        return f"{key.chat_id}"
    if key.bot < 0:
        return f"a{-key.bot}-{key.chat_id}"
    return f"b{key.bot}-{key.chat_id}"


def conversation_id(key: ChatKey) -> str:
    """Our amojo conversation id for a bot's Telegram private chat."""
    return f"{PREFIX}{_tag(key)}"


def user_id(telegram_user_id: int) -> str:
    """Our amojo user id for a Telegram user (the same in every bot: one person, one contact)."""
    return f"{PREFIX}{telegram_user_id}"


def message_id(key: ChatKey, telegram_message_id: int) -> str:
    """Our deterministic amojo msgid for a Telegram message (safe to resend)."""
    return f"{conversation_id(key)}-{telegram_message_id}"


def chat_from_conversation(value: object) -> ChatKey | None:
    """The chat behind one of our conversation ids, or None (also for non-strings)."""
    if not isinstance(value, str):
        return None
    match = _CONVERSATION.fullmatch(value)
    if match is None:
        return None
    kind, number, chat = match.groups()
    if kind is None:
        return ChatKey(PRIMARY, int(chat))
    return ChatKey(int(number) if kind == "b" else -int(number), int(chat))


def chat_lane(key: ChatKey) -> str:
    """Ordering lane of everything that concerns one chat."""
    return f"chat:{key_text(key)}"


def key_text(key: ChatKey) -> str:
    """The chat in dedup keys and lanes: `{chat}` for the primary bot, `b{bot}-{chat}` else."""
    return _tag(key)


def chat_fields(key: ChatKey) -> dict[str, int]:
    """The chat as stored in a job payload (`bot` is left out for the primary bot)."""
    return (
        {"chat_id": key.chat_id} if key.bot == PRIMARY else {"bot": key.bot, "chat_id": key.chat_id}
    )


def chat_of(payload: dict[str, Any]) -> ChatKey:
    """The chat a job payload names (payloads from before several bots name no bot)."""
    return ChatKey(int(payload.get("bot") or PRIMARY), int(payload["chat_id"]))


def call_uniq(key: ChatKey, telegram_message_id: int) -> str:
    """`uniq` of a call logged by a `/call` message (a retried command logs nothing new)."""
    return f"{PREFIX}call-{_tag(key)}-{telegram_message_id}"


def source_external_id(bot_id: int) -> str:
    """The amoCRM source of a bot (≤ 36 printable ASCII; never changes for a bot)."""
    return f"tg-bot-{bot_id}"


def account_source_external_id(owner_id: int) -> str:
    """The amoCRM source of a Business account (≤ 36 printable ASCII)."""
    return f"tg-acc-{owner_id}"
