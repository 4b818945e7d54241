"""getUpdates answers aiogram cannot read: read update by update, never logged with content."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.exceptions import ClientDecodeError
from aiogram.methods import GetUpdates, SendMessage

from bot.customer.updates import Unreadable, UpdateReadingSession, dropped_fields

TOKEN = "123456:TEST-token-not-real"
SECRET = "Ivan Petrov +79161234567"


@pytest.fixture
async def session() -> AsyncIterator[tuple[UpdateReadingSession, list[Unreadable], Bot]]:
    seen: list[Unreadable] = []
    reading = UpdateReadingSession(on_unreadable=lambda bot, unreadable: seen.append(unreadable))
    bot = Bot(TOKEN, session=reading)
    try:
        yield reading, seen, bot
    finally:
        await reading.close()


def message(update_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1700000000,
            "chat": {"id": 5, "type": "private", "first_name": SECRET},
            "from": {"id": 5, "is_bot": False, "first_name": SECRET},
            **fields,
        },
    }


async def test_one_unreadable_update_loses_only_its_odd_field(
    session: tuple[UpdateReadingSession, list[Unreadable], Bot],
) -> None:
    reading, seen, bot = session
    answer = {
        "ok": True,
        "result": [
            message(1, text="hi"),
            message(2, text=SECRET, forward_origin={"type": "hologram", "date": 1}),
            message(3, poll={"id": "p", "question": SECRET, "options": []}),
            {"update_id": 4, "message": {"chat": 5}},
            {"update_id": 5, "brand_new_kind": {"x": SECRET}},
            "not an update",
        ],
    }
    response = reading.check_response(bot, GetUpdates(), 200, json.dumps(answer))
    updates = response.result
    assert updates is not None
    assert [u.update_id for u in updates] == [1, 2, 3, 4, 5]
    assert dropped_fields(updates[1].message) == ["forward_origin"]
    assert updates[1].message is not None and updates[1].message.text == SECRET
    assert dropped_fields(updates[2].message) == ["poll"]
    assert updates[3].message is None  # nothing readable: confirmed, not bridged
    assert [(u.update_id, u.dropped) for u in seen] == [
        (2, ("message.forward_origin",)),
        (3, ("message.poll",)),
        (4, ()),
    ]


@pytest.mark.parametrize(
    ("method", "content"),
    [
        (GetUpdates(), f"<html>{SECRET}</html>"),
        (GetUpdates(), json.dumps({"ok": True, "result": {"not": SECRET}})),
        (SendMessage(chat_id=5, text="x"), json.dumps({"ok": True, "result": {"text": SECRET}})),
    ],
)
async def test_an_unreadable_answer_is_an_error_without_its_content(
    session: tuple[UpdateReadingSession, list[Unreadable], Bot], method: Any, content: str
) -> None:
    reading, _, bot = session
    with pytest.raises(ClientDecodeError) as caught:
        reading.check_response(bot, method, 200, content)
    assert SECRET not in str(caught.value)
    assert "Ivan" not in str(caught.value) and "+7916" not in str(caught.value)
