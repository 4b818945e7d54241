"""The one place that builds and parses ids shared with amojo (README, "Customers → amoCRM")."""

from __future__ import annotations

PREFIX = "tg-"


def conversation_id(chat_id: int) -> str:
    """Our amojo conversation id for a Telegram private chat."""
    return f"{PREFIX}{chat_id}"


def user_id(telegram_user_id: int) -> str:
    """Our amojo user id for a Telegram user."""
    return f"{PREFIX}{telegram_user_id}"


def message_id(chat_id: int, telegram_message_id: int) -> str:
    """Our deterministic amojo msgid for a Telegram message (safe to resend)."""
    return f"{PREFIX}{chat_id}-{telegram_message_id}"


def chat_id_from_conversation(value: object) -> int | None:
    """The Telegram chat id behind one of our conversation ids, or None (also for non-strings)."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return None
    try:
        return int(value[len(PREFIX) :])
    except ValueError:
        return None


def chat_lane(chat_id: int) -> str:
    """Ordering lane of everything that concerns one chat."""
    return f"chat:{chat_id}"


def call_uniq(chat_id: int, telegram_message_id: int) -> str:
    """`uniq` of a call logged by a `/call` message (a retried command logs nothing new)."""
    return f"{PREFIX}call-{chat_id}-{telegram_message_id}"
