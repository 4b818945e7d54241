"""Pure mapping of manager hooks to Telegram messages: splitting, keyboards, parts, hook jobs."""

from __future__ import annotations

from typing import Any

import pytest
from aiogram.types import InlineKeyboardMarkup, ReplyKeyboardMarkup

from bot.amocrm.hooks import (
    KIND_AMO_MESSAGE,
    KIND_AMO_REACTION,
    KIND_AMO_TYPING,
    HookRejected,
    hook_job,
)
from bot.common.telegram_text import split_text, utf16_length
from bot.manager.mapping import ManagerMessage, keyboard_for, plan_parts
from simulators.amojo import FakeAmojo
from tests.harness import ACCOUNT_ID, CHANNEL_ID, CHANNEL_SECRET

fake = FakeAmojo(CHANNEL_ID, CHANNEL_SECRET, ACCOUNT_ID)


def test_split_prefers_paragraphs_then_lines_then_words() -> None:
    text = "a" * 3000 + "\n\n" + "b" * 3000 + "\n" + "c" * 500
    assert split_text(text) == ["a" * 3000, "b" * 3000 + "\n" + "c" * 500]
    words = " ".join(["слово"] * 2000)
    chunks = split_text(words)
    assert all(len(c) <= 4096 for c in chunks)
    assert " ".join(chunks) == words


def test_split_counts_utf16_and_never_cuts_a_character() -> None:
    text = "😀" * 3000  # 6000 UTF-16 units, no boundaries
    chunks = split_text(text)
    assert "".join(chunks) == text
    assert all(utf16_length(c) <= 4096 for c in chunks)


def test_short_text_is_one_part_and_blank_text_none() -> None:
    assert split_text("hi") == ["hi"]
    assert split_text("  \n ") == []


def message(**fields: Any) -> ManagerMessage:
    return ManagerMessage.from_hook(fake.message_hook("tg-1", **fields))


def test_text_and_url_buttons_map_to_keyboards() -> None:
    text_only = keyboard_for({"buttons": [[{"text": "Да"}, {"text": "Нет"}]]})
    assert isinstance(text_only.keyboard, ReplyKeyboardMarkup)
    assert text_only.keyboard.one_time_keyboard is True
    links = keyboard_for({"buttons": [[{"text": "Сайт", "url": "https://a.example"}]]})
    assert isinstance(links.keyboard, InlineKeyboardMarkup)
    mixed = keyboard_for({"buttons": [[{"text": "Да"}], [{"text": "Сайт", "url": "https://a"}]]})
    assert isinstance(mixed.keyboard, ReplyKeyboardMarkup)
    assert mixed.extra_lines == ["Сайт: https://a"]
    assert keyboard_for(None).keyboard is None


def test_media_caption_above_1024_follows_as_text() -> None:
    short = message(msg_type="picture", text="caption", media="https://m/1.jpg")
    assert [(p.media_kind, p.text) for p in plan_parts(short, [])] == [("photo", "caption")]
    long = message(msg_type="picture", text="x" * 1500, media="https://m/1.jpg")
    assert [(p.media_kind, len(p.text)) for p in plan_parts(long, [])] == [
        ("photo", 0),
        (None, 1500),
    ]
    sticker = message(msg_type="sticker", text="🙂", media="https://m/s.webp")
    assert [p.media_kind for p in plan_parts(sticker, [])] == ["sticker", None]


def test_hook_jobs_have_kind_lane_and_dedup_key() -> None:
    job = hook_job(fake.message_hook("tg-5", text="x", msg_id="m1"), 1.0)
    assert (job.kind, job.lane, job.dedup_key) == (KIND_AMO_MESSAGE, "chat:5", "hook:m1")
    write_first = fake.message_hook(None, text="x", amo_conversation_id="c9")
    assert hook_job(write_first, 1.0).lane == "amo:c9"
    typing = hook_job(fake.typing_hook("tg-5", user_location="action"), 1.0)
    assert typing.kind == KIND_AMO_TYPING and typing.dedup_key.startswith("typing:")
    for shape in ("msgid", "message"):
        reaction = fake.reaction_hook("tg-5", amo_message_id="a1", shape=shape)
        assert hook_job(reaction, 1.0).kind == KIND_AMO_REACTION


@pytest.mark.parametrize(
    "body",
    [[], {"time": 1}, {"message": {}}, {"action": {"typing": {}}}, {"action": {"other": {}}}],
)
def test_unknown_hooks_are_rejected(body: Any) -> None:
    with pytest.raises(HookRejected) as error:
        hook_job(body, 1.0)
    assert error.value.status == 400
