"""The one place that builds and parses ids shared with amojo (README, "Customers → amoCRM").

A conversation is a Telegram chat as one bot sees it (`ChatKey`). The primary bot (bot key 0)
keeps the ids it had before there were several bots: `tg-{chat}`, `tg-{chat}-{message}`; every
other bot's ids carry its Telegram id: `tg-b{bot}-{chat}`, `tg-b{bot}-{chat}-{message}`. A
sender is one person in every bot: `tg-{user}`.

A chat of a Telegram Business account (a staff member's own account connected to a bot) has
the bot key `-owner_id` and the ids `tg-a{owner}-{chat}`, `tg-a{owner}-{chat}-{message}`: the
account, not the connection id (which Telegram may issue anew), keeps the conversation.

A group's chat id is negative (`tg--100123…`); a topic is its own conversation with the
topic after the chat: `-t{message_thread_id}` for a forum's topic or a private chat's,
`-d{topic_id}` for a channel's direct-messages topic (one per person writing). A supergroup a
group became is a chat of its own for the bridge (its message ids start again at 1), but its
conversation id stays the group's (`alias_chat`): amoCRM sees one conversation.
"""

from __future__ import annotations

import re
from typing import Any

from storage import ChatKey

PREFIX = "tg-"
PRIMARY = 0
BUTTON_DATA = "amo:"  # callback data of a manager's text button made inline (Business chats)
_CONVERSATION = re.compile(
    r"tg-(?:([ab])([1-9]\d{0,18})-)?(-?[1-9]\d{0,18})(?:-([td])([1-9]\d{0,18}))?"
)


def primary_chat(chat_id: int) -> ChatKey:
    """A chat of the primary bot."""
    return ChatKey(PRIMARY, chat_id)


def business_key(owner_id: int, chat_id: int) -> ChatKey:
    """A chat of the Business account of `owner_id` (the bot key is the owner, negated)."""
    return ChatKey(-owner_id, chat_id)


def is_business(key: ChatKey) -> bool:
    """Whether a chat is one of a Business account's (not a chat with a bot)."""
    return key.bot < 0


# Supergroups a group became: (bot key, supergroup id) → the group's id, which names their
# conversation. Filled at start from the stored groups and by each migration.
_CONVERSATION_CHAT: dict[tuple[int, int], int] = {}


def alias_chat(bot: int, tg_chat_id: int, conversation_chat_id: int) -> None:
    """From now on chat `tg_chat_id` of `bot` is in the conversation of `conversation_chat_id`."""
    if tg_chat_id != conversation_chat_id:
        _CONVERSATION_CHAT[(bot, tg_chat_id)] = conversation_chat_id


def conversation_chat(key: ChatKey) -> int:
    """The chat id that names a chat's conversation (a supergroup's: the group it was)."""
    return _CONVERSATION_CHAT.get((key.bot, key.chat_id), key.chat_id)


def _tag(key: ChatKey) -> str:
    if key.bot == PRIMARY:
        tag = f"{key.chat_id}"
    elif key.bot < 0:
        tag = f"a{-key.bot}-{key.chat_id}"
    else:
        tag = f"b{key.bot}-{key.chat_id}"
    if key.thread > 0:
        return f"{tag}-t{key.thread}"
    if key.thread < 0:
        return f"{tag}-d{-key.thread}"
    return tag


def forum_thread(key: ChatKey) -> int | None:
    """The `message_thread_id` sends into this conversation carry (a topic's), if any."""
    return key.thread if key.thread > 0 else None


def direct_messages_topic(key: ChatKey) -> int | None:
    """The `direct_messages_topic_id` sends into this conversation carry, if any."""
    return -key.thread if key.thread < 0 else None


def conversation_id(key: ChatKey) -> str:
    """Our amojo conversation id for a bot's Telegram chat (or topic of it)."""
    return f"{PREFIX}{_tag(ChatKey(key.bot, conversation_chat(key), key.thread))}"


def user_id(telegram_user_id: int) -> str:
    """Our amojo user id for a Telegram user (the same in every bot: one person, one contact)."""
    return f"{PREFIX}{telegram_user_id}"


def message_id(key: ChatKey, telegram_message_id: int) -> str:
    """Our deterministic amojo msgid for a Telegram message (safe to resend); a supergroup's
    carry its own id, as its message ids start again at 1."""
    return f"{PREFIX}{_tag(key)}-{telegram_message_id}"


def chat_from_conversation(value: object) -> ChatKey | None:
    """The chat behind one of our conversation ids, or None (also for non-strings)."""
    if not isinstance(value, str):
        return None
    match = _CONVERSATION.fullmatch(value)
    if match is None:
        return None
    kind, number, chat, topic_kind, topic = match.groups()
    thread = 0 if topic is None else int(topic) if topic_kind == "t" else -int(topic)
    if kind is None:
        return ChatKey(PRIMARY, int(chat), thread)
    return ChatKey(int(number) if kind == "b" else -int(number), int(chat), thread)


def chat_lane(key: ChatKey) -> str:
    """Ordering lane of everything that concerns one chat."""
    return f"chat:{key_text(key)}"


def key_text(key: ChatKey) -> str:
    """The chat in dedup keys and lanes: `{chat}` for the primary bot, `b{bot}-{chat}` else."""
    return _tag(key)


def chat_fields(key: ChatKey) -> dict[str, int]:
    """The chat as stored in a job payload (`bot` and `thread` are left out when 0)."""
    fields = {"chat_id": key.chat_id}
    if key.bot != PRIMARY:
        fields["bot"] = key.bot
    if key.thread:
        fields["thread"] = key.thread
    return fields


def chat_of(payload: dict[str, Any]) -> ChatKey:
    """The chat a job payload names (payloads from before several bots name no bot)."""
    return ChatKey(
        int(payload.get("bot") or PRIMARY),
        int(payload["chat_id"]),
        int(payload.get("thread") or 0),
    )


def call_uniq(key: ChatKey, telegram_message_id: int) -> str:
    """`uniq` of a call logged by a `/call` message (a retried command logs nothing new)."""
    return f"{PREFIX}call-{_tag(key)}-{telegram_message_id}"


def source_external_id(bot_id: int) -> str:
    """The amoCRM source of a bot (≤ 36 printable ASCII; never changes for a bot)."""
    return f"tg-bot-{bot_id}"


def account_source_external_id(owner_id: int) -> str:
    """The amoCRM source of a Business account (≤ 36 printable ASCII)."""
    return f"tg-acc-{owner_id}"
