"""Factories of Telegram update payloads (plain dicts as the Bot API sends them)."""

import time
from typing import Any, Literal

UpdateKind = Literal[
    "message",
    "edited_message",
    "message_reaction",
    "my_chat_member",
    "callback_query",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
]


def make_user(
    user_id: int,
    *,
    first_name: str = "Ivan",
    last_name: str | None = "Petrov",
    username: str | None = None,
    language_code: str | None = "ru",
    is_bot: bool = False,
) -> dict[str, Any]:
    """A Telegram User object."""
    user: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
    if last_name is not None:
        user["last_name"] = last_name
    user["username"] = username if username is not None else f"user{user_id}"
    if language_code is not None:
        user["language_code"] = language_code
    return user


def make_private_chat(user: dict[str, Any]) -> dict[str, Any]:
    """The private Chat object of a user."""
    chat: dict[str, Any] = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
    for key in ("last_name", "username"):
        if key in user:
            chat[key] = user[key]
    return chat


def make_message(
    chat_id: int,
    message_id: int,
    *,
    user: dict[str, Any] | None = None,
    date: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A Message in a private chat from the user chat_id, plus the given fields."""
    sender = user if user is not None else make_user(chat_id)
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": sender,
        "chat": make_private_chat({**sender, "id": chat_id}),
        "date": date if date is not None else int(time.time()),
    }
    message.update({key: value for key, value in fields.items() if value is not None})
    return message


def make_photo(file_id: str, file_unique_id: str, file_size: int) -> list[dict[str, Any]]:
    """A PhotoSize list (thumbnail first, largest last) for a photo message."""
    return [
        {
            "file_id": f"{file_id}-s",
            "file_unique_id": f"{file_unique_id}-s",
            "file_size": max(1, file_size // 10),
            "width": 90,
            "height": 67,
        },
        {
            "file_id": file_id,
            "file_unique_id": file_unique_id,
            "file_size": file_size,
            "width": 1280,
            "height": 960,
        },
    ]


def make_document(
    file_id: str,
    file_unique_id: str,
    file_size: int,
    *,
    file_name: str = "document.pdf",
    mime_type: str = "application/pdf",
) -> dict[str, Any]:
    """A Document object."""
    return {
        "file_id": file_id,
        "file_unique_id": file_unique_id,
        "file_size": file_size,
        "file_name": file_name,
        "mime_type": mime_type,
    }


def make_contact(
    phone_number: str, *, user_id: int | None, first_name: str = "Ivan"
) -> dict[str, Any]:
    """A Contact object (user_id is set when the user shared their own contact)."""
    contact: dict[str, Any] = {"phone_number": phone_number, "first_name": first_name}
    if user_id is not None:
        contact["user_id"] = user_id
    return contact


def make_reaction(
    chat_id: int,
    message_id: int,
    *,
    new: list[str],
    old: list[str] | None = None,
    user: dict[str, Any] | None = None,
    date: int | None = None,
) -> dict[str, Any]:
    """A MessageReactionUpdated object (emoji reactions only)."""
    sender = user if user is not None else make_user(chat_id)
    return {
        "chat": make_private_chat({**sender, "id": chat_id}),
        "message_id": message_id,
        "user": sender,
        "date": date if date is not None else int(time.time()),
        "old_reaction": [{"type": "emoji", "emoji": emoji} for emoji in old or []],
        "new_reaction": [{"type": "emoji", "emoji": emoji} for emoji in new],
    }


def make_my_chat_member(
    chat_id: int, *, new_status: str = "kicked", old_status: str = "member"
) -> dict[str, Any]:
    """A ChatMemberUpdated about the bot itself (kicked = the user blocked the bot)."""
    user = make_user(chat_id)
    bot = make_user(42, first_name="Bridge", last_name=None, username="bridge_bot", is_bot=True)
    bot.pop("language_code", None)
    return {
        "chat": make_private_chat(user),
        "from": user,
        "date": int(time.time()),
        "old_chat_member": {"status": old_status, "user": bot, "until_date": 0}
        if old_status == "kicked"
        else {"status": old_status, "user": bot},
        "new_chat_member": {"status": new_status, "user": bot, "until_date": 0}
        if new_status == "kicked"
        else {"status": new_status, "user": bot},
    }


def make_update(kind: UpdateKind, payload: dict[str, Any]) -> dict[str, Any]:
    """An Update without update_id (FakeTelegram.push_update assigns it)."""
    return {kind: payload}


def private_message_update(
    chat_id: int,
    message_id: int,
    *,
    text: str | None = None,
    caption: str | None = None,
    user: dict[str, Any] | None = None,
    edited: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """A message (or edited_message) update in a private chat."""
    message = make_message(chat_id, message_id, user=user, text=text, caption=caption, **fields)
    if edited:
        message["edit_date"] = message["date"] + 1
        return make_update("edited_message", message)
    return make_update("message", message)


def staff_message_update(
    chat_id: int, message_id: int, *, text: str, language_code: str | None = "en", **fields: Any
) -> dict[str, Any]:
    """An operator's message in their private chat with the bot (English Telegram unless told)."""
    user = make_user(chat_id, language_code=language_code)
    return private_message_update(chat_id, message_id, text=text, user=user, **fields)


def make_file(
    file_id: str, file_unique_id: str, file_size: int | None, **fields: Any
) -> dict[str, Any]:
    """A Video, Animation, VideoNote, Voice, Audio or Sticker object: ids, size and `fields`."""
    media: dict[str, Any] = {"file_id": file_id, "file_unique_id": file_unique_id}
    if file_size is not None:
        media["file_size"] = file_size
    media.update(fields)
    return media


def make_location(latitude: float, longitude: float) -> dict[str, Any]:
    """A Location object."""
    return {"latitude": latitude, "longitude": longitude}


def make_venue(latitude: float, longitude: float, title: str, address: str) -> dict[str, Any]:
    """A Venue object."""
    return {"location": make_location(latitude, longitude), "title": title, "address": address}


def make_group(
    chat_id: int, title: str, *, kind: str = "supergroup", forum: bool = False
) -> dict[str, Any]:
    """A group or supergroup Chat (a forum: a supergroup with topics)."""
    chat: dict[str, Any] = {"id": chat_id, "type": kind, "title": title}
    if forum:
        chat["is_forum"] = True
    return chat


def group_message_update(
    chat: dict[str, Any],
    message_id: int,
    user: dict[str, Any],
    *,
    text: str | None = None,
    thread: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A message in a group by `user`; with `thread`, in that forum topic."""
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": user,
        "chat": chat,
        "date": int(time.time()),
    }
    if text is not None:
        message["text"] = text
    if thread is not None:
        message["message_thread_id"] = thread
        message["is_topic_message"] = True
    message.update({key: value for key, value in fields.items() if value is not None})
    return make_update("message", message)


def group_membership_update(
    chat: dict[str, Any], by: dict[str, Any], *, new_status: str, old_status: str = "left"
) -> dict[str, Any]:
    """`my_chat_member`: `by` added the bot to the group (or removed it)."""
    bot = make_user(42, first_name="Bridge", last_name=None, username="bridge_bot", is_bot=True)
    bot.pop("language_code", None)

    def member(status: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"status": status, "user": bot}
        if status == "kicked":
            entry["until_date"] = 0
        return entry

    return make_update(
        "my_chat_member",
        {
            "chat": chat,
            "from": by,
            "date": int(time.time()),
            "old_chat_member": member(old_status),
            "new_chat_member": member(new_status),
        },
    )
