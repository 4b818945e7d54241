"""Mapping of customer Telegram messages to amojo `new_message` / `edit_message` payloads."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from aiogram.types import Message, User

from bot.common import ids, texts
from bot.common.limits import TELEGRAM_DOWNLOAD_LIMIT
from bot.common.texts import Language
from bot.customer.updates import dropped_fields
from storage import ChatKey

# Message fields that are its content: dropping one leaves a stand-in, not a note.
CONTENT_FIELDS = frozenset(
    {
        "text",
        "caption",
        "photo",
        "animation",
        "video",
        "video_note",
        "voice",
        "audio",
        "document",
        "sticker",
        "venue",
        "location",
        "contact",
        "poll",
        "dice",
        "game",
        "story",
        "invoice",
        "paid_media",
        "giveaway",
        "checklist",
    }
)


@dataclass(frozen=True, slots=True)
class MediaRef:
    """A Telegram file to expose to amoCRM through a signed link."""

    file_id: str
    file_name: str
    mime_type: str
    file_size: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form kept in the job."""
        return {
            "file_id": self.file_id,
            "file_name": self.file_name,
            "mime_type": self.mime_type,
            "file_size": self.file_size,
        }


@dataclass(frozen=True, slots=True)
class Content:
    """The `message` object of an amojo payload, plus the file it links to."""

    message: dict[str, Any]
    media: MediaRef | None = None


def sender_name(user: User) -> str:
    """Display name for amoCRM: the Telegram profile name, else the username."""
    name = " ".join(part for part in (user.first_name, user.last_name) if part).strip()
    return name or (f"@{user.username}" if user.username else f"Telegram user {user.id}")


def sender(user: User) -> dict[str, Any]:
    """amojo `sender` of a customer (phone and ref ids are added at send time)."""
    result: dict[str, Any] = {"id": ids.user_id(user.id), "name": sender_name(user)}
    if user.username:
        result["profile_link"] = f"https://t.me/{user.username}"
    return result


def content_hash(message: Message) -> str:
    """Fingerprint of what an edit can change: the text or caption."""
    text = message.text if message.text is not None else (message.caption or "")
    return hashlib.sha1(text.encode()).hexdigest()


def _human_size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"  # the same in both languages


def _file(
    language: Language,
    kind: str,
    text: str,
    file_id: str,
    file_name: str,
    mime_type: str,
    size: int | None,
    **extra: Any,
) -> Content:
    size = size or 0
    if size > TELEGRAM_DOWNLOAD_LIMIT:
        # https://core.telegram.org/bots/api#getfile: bots can download files of up to 20 MB.
        note = texts.text("amo.too_big", language, name=file_name, size=_human_size(size))
        return Content({"type": "text", "text": f"{text}\n\n{note}" if text else note})
    message = {"type": kind, "text": text, "file_name": file_name, "file_size": size, **extra}
    return Content(message, MediaRef(file_id, file_name, mime_type, size))


def _forward_prefix(message: Message, language: Language) -> str:
    origin = message.forward_origin
    if origin is None:
        return ""
    name = ""
    for attribute in ("sender_user", "chat"):
        entity = getattr(origin, attribute, None)
        if entity is not None:
            name = getattr(entity, "full_name", None) or getattr(entity, "title", None) or ""
    name = (
        name or getattr(origin, "sender_user_name", None) or texts.text("amo.hidden_user", language)
    )
    return texts.text("amo.forwarded", language, name=name) + "\n"


def message_content(message: Message, language: Language = "en") -> Content:
    """The amojo `message` object for a customer's Telegram message (spec §4.2)."""
    content = _readable_content(message, language)
    unread = [field for field in dropped_fields(message) if field not in CONTENT_FIELDS]
    if unread:
        note = texts.text("amo.unreadable_fields", language, fields=", ".join(unread))
        body = str(content.message.get("text") or "")
        content.message["text"] = f"{body}\n\n{note}" if body else note
    return content


def _readable_content(message: Message, language: Language) -> Content:
    text = _forward_prefix(message, language) + (message.text or message.caption or "")
    if message.text is not None:
        return Content({"type": "text", "text": text})
    if message.photo:
        photo = message.photo[-1]
        name = f"photo_{photo.file_unique_id}.jpg"
        return _file(language, "picture", text, photo.file_id, name, "image/jpeg", photo.file_size)
    if message.animation:
        anim = message.animation
        name = anim.file_name or f"animation_{anim.file_unique_id}.mp4"
        mime = anim.mime_type or "video/mp4"
        return _file(
            language,
            "video",
            text,
            anim.file_id,
            name,
            mime,
            anim.file_size,
            media_duration=anim.duration,
        )
    if message.video:
        video = message.video
        name = video.file_name or f"video_{video.file_unique_id}.mp4"
        mime = video.mime_type or "video/mp4"
        return _file(
            language,
            "video",
            text,
            video.file_id,
            name,
            mime,
            video.file_size,
            media_duration=video.duration,
        )
    if message.video_note:
        note = message.video_note
        name = f"video_note_{note.file_unique_id}.mp4"
        return _file(
            language,
            "video",
            text,
            note.file_id,
            name,
            "video/mp4",
            note.file_size,
            media_duration=note.duration,
        )
    if message.voice:
        voice = message.voice
        name = f"voice_{voice.file_unique_id}.ogg"
        mime = voice.mime_type or "audio/ogg"
        return _file(
            language,
            "voice",
            text,
            voice.file_id,
            name,
            mime,
            voice.file_size,
            media_duration=voice.duration,
        )
    if message.audio:
        audio = message.audio
        title = " - ".join(part for part in (audio.performer, audio.title) if part)
        name = audio.file_name or f"{title or 'audio_' + audio.file_unique_id}.mp3"
        mime = audio.mime_type or "audio/mpeg"
        return _file(
            language,
            "audio",
            text,
            audio.file_id,
            name,
            mime,
            audio.file_size,
            media_duration=audio.duration,
        )
    if message.document:
        doc = message.document
        name = doc.file_name or f"document_{doc.file_unique_id}"
        mime = doc.mime_type or "application/octet-stream"
        return _file(language, "file", text, doc.file_id, name, mime, doc.file_size)
    if message.sticker:
        sticker = message.sticker
        extension, mime = "webp", "image/webp"
        if sticker.is_animated:
            extension, mime = "tgs", "application/x-tgsticker"
        elif sticker.is_video:
            extension, mime = "webm", "video/webm"
        name = f"sticker_{sticker.file_unique_id}.{extension}"
        return _file(
            language,
            "sticker",
            sticker.emoji or "",
            sticker.file_id,
            name,
            mime,
            sticker.file_size,
            sticker_id=sticker.file_unique_id,
        )
    if message.venue:
        venue = message.venue
        place = {"lon": venue.location.longitude, "lat": venue.location.latitude}
        label = "\n".join(part for part in (venue.title, venue.address) if part)
        return Content({"type": "location", "text": label, "location": place})
    if message.location:
        loc = message.location
        return Content(
            {
                "type": "location",
                "text": text,
                "location": {"lon": loc.longitude, "lat": loc.latitude},
            }
        )
    if message.contact:
        contact = message.contact
        name = " ".join(part for part in (contact.first_name, contact.last_name) if part)
        return Content(
            {
                "type": "contact",
                "text": text,
                "contact": {"name": name or contact.phone_number, "phone": contact.phone_number},
            }
        )
    return Content({"type": "text", "text": unsupported_text(message, language)})


def unsupported_text(message: Message, language: Language) -> str:
    """A readable stand-in for content amoCRM chats cannot show (in the account's language)."""
    if message.poll:
        options = "\n".join(f"• {option.text}" for option in message.poll.options)
        return texts.text("amo.poll", language, question=message.poll.question, options=options)
    if message.dice:
        return texts.text("amo.dice", language, emoji=message.dice.emoji, value=message.dice.value)
    kind = message.content_type
    what = str(getattr(kind, "value", kind))  # `game`, not `ContentType.GAME`
    dropped = dropped_fields(message)
    if what == "unknown" and dropped:
        what = dropped[0]  # its content is of a kind this bridge's aiogram cannot read
    what = what.replace("_", " ")
    return texts.text("amo.unsupported", language, what=what)


def reply_reference(our_msgid: str | None, amo_message_id: str | None) -> dict[str, Any] | None:
    """`reply_to` for a message quoting an earlier one (spec §4.2, EmbeddedMessage by id)."""
    if amo_message_id:
        return {"message": {"id": amo_message_id}}
    if our_msgid:
        return {"message": {"msgid": our_msgid}}
    return None


def group_name(message: Message, key: ChatKey) -> str:
    """A group conversation's client name: the group's title, and the topic's name or id."""
    title = message.chat.title or f"Telegram group {message.chat.id}"
    if not key.thread:
        return title
    created = message.reply_to_message.forum_topic_created if message.reply_to_message else None
    topic = created.name if created is not None else f"topic {abs(key.thread)}"
    return f"{title} / {topic}"


def as_group_message(payload: dict[str, Any], message: Message, key: ChatKey) -> None:
    """A message written in a group, for amoCRM: the group is the client (one sender, as
    amojo documents one client per conversation), the author's name leads the text."""
    client = ids.user_id(ids.conversation_chat(key))
    payload["sender"] = {"id": client, "name": group_name(message, key)}
    author = sender_name(message.from_user) if message.from_user else None
    if author is None and message.sender_chat is not None:
        author = message.sender_chat.title or "anonymous admin"
    body = payload["message"]
    if author:
        body["text"] = f"{author}: {body.get('text') or ''}".rstrip()


def new_message_payload(
    key: ChatKey, message: Message, content: Content, reply_to: dict[str, Any] | None
) -> dict[str, Any]:
    """The `new_message` payload (without the media link and source, added when it is sent)."""
    chat_id = message.chat.id
    user = message.from_user
    timestamp = int(message.date.timestamp())
    payload: dict[str, Any] = {
        "timestamp": timestamp,
        "msec_timestamp": timestamp * 1000,
        "msgid": ids.message_id(key, message.message_id),
        "conversation_id": ids.conversation_id(key),
        "sender": sender(user) if user else {"id": ids.user_id(chat_id), "name": str(chat_id)},
        "message": content.message,
        "silent": False,
    }
    if reply_to is not None:
        payload["reply_to"] = reply_to
    return payload


def edit_message_payload(key: ChatKey, message: Message, content: Content) -> dict[str, Any]:
    """The `edit_message` payload for an edited customer message."""
    moment = message.edit_date or int(message.date.timestamp())
    return {
        "timestamp": moment,
        "msec_timestamp": moment * 1000,
        "msgid": ids.message_id(key, message.message_id),
        "conversation_id": ids.conversation_id(key),
        "message": content.message,
    }


def chat_name(message: Message) -> str:
    """The display name of a private chat's other person (the customer of a Business chat)."""
    chat = message.chat
    if chat.title:  # a group: the group is the client
        return chat.title
    name = " ".join(part for part in (chat.first_name, chat.last_name) if part).strip()
    return name or (f"@{chat.username}" if chat.username else f"Telegram user {chat.id}")


def _receiver(key: ChatKey, message: Message) -> dict[str, Any]:
    """The client an outgoing message went to: the person of a channel's direct-messages
    topic, else the chat (a private chat's person, a group)."""
    topic = message.direct_messages_topic
    if topic is not None and topic.user is not None:
        return {"id": ids.user_id(topic.user.id), "name": sender_name(topic.user)}
    return {"id": ids.user_id(ids.conversation_chat(key)), "name": chat_name(message)}


def owner_message_payload(
    key: ChatKey, message: Message, content: Content, owner_name: str
) -> dict[str, Any]:
    """`new_message` for what a Business account's owner typed in Telegram: an outgoing
    message from the owner to the customer (spec §4.1). Its `sender.ref_id` (the owner's
    amoCRM user, or the channel's bot) is added when it is sent; it is silent, as the owner
    answered already."""
    timestamp = int(message.date.timestamp())
    owner = message.from_user
    return {
        "timestamp": timestamp,
        "msec_timestamp": timestamp * 1000,
        "msgid": ids.message_id(key, message.message_id),
        "conversation_id": ids.conversation_id(key),
        "sender": {"id": ids.user_id(owner.id if owner else -key.bot), "name": owner_name},
        "receiver": _receiver(key, message),
        "message": content.message,
        "silent": True,
    }


def deleted_message_payload(key: ChatKey, telegram_message_id: int, text: str) -> dict[str, Any]:
    """`edit_message` that shows in amoCRM that a message was deleted in Telegram (amojo has
    no delete)."""
    moment = int(time.time())
    return {
        "timestamp": moment,
        "msec_timestamp": moment * 1000,
        "msgid": ids.message_id(key, telegram_message_id),
        "conversation_id": ids.conversation_id(key),
        "message": {"type": "text", "text": text},
    }
