"""Mapping of every kind of customer message to the amojo `message` object (spec §4.2)."""

from __future__ import annotations

from typing import Any

from aiogram.types import Message

from bot.common.ids import primary_chat
from bot.common.limits import TELEGRAM_DOWNLOAD_LIMIT
from bot.customer.mapping import content_hash, message_content, new_message_payload, reply_reference
from simulators.factories import (
    make_contact,
    make_document,
    make_file,
    make_location,
    make_message,
    make_photo,
    make_user,
    make_venue,
)

CHAT = 501


def message(message_id: int = 10, **fields: Any) -> Message:
    """A customer's private message parsed by aiogram, as a handler receives it."""
    return Message.model_validate(make_message(CHAT, message_id, **fields))


def test_text() -> None:
    mapped = message_content(message(text="Добрый день 👋"))
    assert mapped.message == {"type": "text", "text": "Добрый день 👋"}
    assert mapped.media is None


def test_photo_uses_the_largest_size() -> None:
    mapped = message_content(message(photo=make_photo("PHOTO", "UNIQ", 123_456)))

    assert mapped.message["type"] == "picture"
    assert mapped.message["file_name"] == "photo_UNIQ.jpg"
    assert mapped.message["file_size"] == 123_456
    assert mapped.media is not None
    assert mapped.media.file_id == "PHOTO"
    assert mapped.media.mime_type == "image/jpeg"


def test_document_keeps_its_original_name() -> None:
    document = make_document(
        "DOC", "DUNIQ", 2048, file_name="Договор №5 (финал).docx", mime_type="application/msword"
    )
    mapped = message_content(message(document=document))

    assert mapped.message == {
        "type": "file",
        "text": "",
        "file_name": "Договор №5 (финал).docx",
        "file_size": 2048,
    }
    assert mapped.media is not None
    assert mapped.media.mime_type == "application/msword"


def test_caption_becomes_the_text() -> None:
    mapped = message_content(message(caption="Смета", document=make_document("D", "U", 10)))
    assert mapped.message["text"] == "Смета"


def test_video() -> None:
    video = make_file(
        "VID", "VUNIQ", 5000, width=640, height=480, duration=12, mime_type="video/mp4"
    )
    mapped = message_content(message(video=video))

    assert mapped.message["type"] == "video"
    assert mapped.message["media_duration"] == 12
    assert mapped.message["file_name"] == "video_VUNIQ.mp4"
    assert mapped.media is not None and mapped.media.file_id == "VID"


def test_animation_is_a_video_not_its_document_twin() -> None:
    # Telegram sends an animation with a `document` field describing the same file.
    animation = make_file("GIF", "GUNIQ", 900, width=320, height=240, duration=3, file_name="a.mp4")
    mapped = message_content(
        message(animation=animation, document=make_document("GIF", "GUNIQ", 900))
    )

    assert mapped.message["type"] == "video"
    assert mapped.message["file_name"] == "a.mp4"


def test_video_note_is_a_video() -> None:
    note = make_file("NOTE", "NUNIQ", 700, length=240, duration=7)
    mapped = message_content(message(video_note=note))

    assert mapped.message["type"] == "video"
    assert mapped.message["media_duration"] == 7
    assert mapped.media is not None and mapped.media.mime_type == "video/mp4"


def test_voice() -> None:
    voice = make_file("VOICE", "OUNIQ", 3000, duration=4, mime_type="audio/ogg")
    mapped = message_content(message(voice=voice))

    assert mapped.message["type"] == "voice"
    assert mapped.message["media_duration"] == 4
    assert mapped.message["file_name"].endswith(".ogg")


def test_audio_is_named_after_performer_and_title() -> None:
    audio = make_file("AUD", "AUNIQ", 4000, duration=180, performer="Кино", title="Группа крови")
    mapped = message_content(message(audio=audio))

    assert mapped.message["type"] == "audio"
    assert mapped.message["file_name"] == "Кино - Группа крови.mp3"
    assert mapped.message["media_duration"] == 180


def test_sticker() -> None:
    sticker = make_file(
        "STK",
        "SUNIQ",
        1500,
        type="regular",
        width=512,
        height=512,
        is_animated=False,
        is_video=False,
        emoji="😀",
    )
    mapped = message_content(message(sticker=sticker))

    assert mapped.message["type"] == "sticker"
    assert mapped.message["text"] == "😀"
    assert mapped.media is not None and mapped.media.mime_type == "image/webp"


def test_location() -> None:
    mapped = message_content(message(location=make_location(55.75, 37.62)))
    assert mapped.message == {
        "type": "location",
        "text": "",
        "location": {"lon": 37.62, "lat": 55.75},
    }


def test_venue_carries_its_title_and_address() -> None:
    venue = make_venue(59.93, 30.31, "Эрмитаж", "Дворцовая пл., 2")
    mapped = message_content(message(venue=venue, location=venue["location"]))

    assert mapped.message == {
        "type": "location",
        "text": "Эрмитаж\nДворцовая пл., 2",
        "location": {"lon": 30.31, "lat": 59.93},
    }


def test_contact() -> None:
    contact = make_contact("+7 999 123-45-67", user_id=None, first_name="Мария")
    mapped = message_content(message(contact=contact))

    assert mapped.message == {
        "type": "contact",
        "text": "",
        "contact": {"name": "Мария", "phone": "+7 999 123-45-67"},
    }


def test_file_over_20_mb_becomes_a_readable_text() -> None:
    size = TELEGRAM_DOWNLOAD_LIMIT + 5 * 1024 * 1024
    document = make_document("BIG", "BUNIQ", size, file_name="video-report.zip")
    mapped = message_content(message(caption="Отчёт", document=document))

    assert mapped.media is None
    assert mapped.message["type"] == "text"
    text = mapped.message["text"]
    assert text.startswith("Отчёт\n\n")
    assert "video-report.zip" in text
    assert "20 MB" in text


def test_poll_is_shown_as_text() -> None:
    poll = {
        "id": "1",
        "question": "Когда удобно?",
        "options": [
            {"persistent_id": "1", "text": "Утром", "voter_count": 0},
            {"persistent_id": "2", "text": "Вечером", "voter_count": 0},
        ],
        "total_voter_count": 0,
        "is_closed": False,
        "is_anonymous": True,
        "type": "regular",
        "allows_multiple_answers": False,
        "allows_revoting": False,
        "members_only": False,
    }
    mapped = message_content(message(poll=poll))

    assert mapped.message == {
        "type": "text",
        "text": "[Poll] Когда удобно?\n• Утром\n• Вечером",
    }


def test_dice_is_shown_as_text() -> None:
    mapped = message_content(message(dice={"emoji": "🎲", "value": 4}))
    assert mapped.message == {"type": "text", "text": "[Dice 🎲: 4]"}


def test_stand_ins_are_in_the_accounts_language_and_name_the_kind_plainly() -> None:
    dice = message_content(message(dice={"emoji": "🎲", "value": 4}), "ru")
    assert dice.message == {"type": "text", "text": "[Кубик 🎲: 4]"}
    game = {"title": "g", "description": "d", "photo": []}
    assert message_content(message(game=game)).message["text"] == (
        "[The customer sent a Telegram game that amoCRM chats cannot show]"
    )
    assert (
        message_content(message(game=game), "ru")
        .message["text"]
        .startswith("[Клиент отправил в Telegram game;")
    )
    big = {**make_document("d", "u", 30 * 1024 * 1024), "file_name": "scan.pdf"}
    assert (
        message_content(message(document=big), "ru")
        .message["text"]
        .startswith("[файл «scan.pdf», 30.0 MB: Telegram не даёт ботам")
    )


def test_forwarded_message_names_its_origin() -> None:
    origin = {
        "type": "user",
        "date": 1_700_000_000,
        "sender_user": make_user(777, first_name="Олег"),
    }
    mapped = message_content(message(text="Посмотрите", forward_origin=origin))
    assert mapped.message["text"] == "↪ Forwarded from Олег Petrov\nПосмотрите"


def test_forward_from_a_hidden_user() -> None:
    origin = {"type": "hidden_user", "date": 1_700_000_000, "sender_user_name": "Аноним"}
    mapped = message_content(message(text="Текст", forward_origin=origin))
    assert mapped.message["text"] == "↪ Forwarded from Аноним\nТекст"


def test_reply_refers_to_the_earlier_message() -> None:
    earlier = make_message(CHAT, 9, text="Первое")
    reply = message(11, text="Ответ", reply_to_message=earlier)

    by_amo_id = reply_reference("tg-501-9", "amo-uuid-9")
    payload = new_message_payload(primary_chat(CHAT), reply, message_content(reply), by_amo_id)
    assert payload["reply_to"] == {"message": {"id": "amo-uuid-9"}}
    assert payload["msgid"] == "tg-501-11"
    assert reply_reference("tg-501-9", None) == {"message": {"msgid": "tg-501-9"}}


def test_payload_identities_are_deterministic() -> None:
    first = message(42, text="раз")
    payload = new_message_payload(primary_chat(CHAT), first, message_content(first), None)

    assert payload["msgid"] == "tg-501-42"
    assert payload["conversation_id"] == "tg-501"
    assert payload["sender"]["id"] == "tg-501"
    assert "reply_to" not in payload
    assert new_message_payload(primary_chat(CHAT), first, message_content(first), None) == payload


def test_content_hash_follows_text_or_caption_only() -> None:
    assert content_hash(message(text="a")) == content_hash(message(caption="a"))
    assert content_hash(message(text="a")) != content_hash(message(text="b"))
