"""A signed hook is read leniently: an odd field is dropped, never a reason to lose the message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bot.amocrm.hook_model import MessageHook, UnusableHook
from bot.manager.mapping import ManagerMessage

HOOK: dict[str, Any] = {
    "account_id": "account",
    "time": 1700000001,
    "message": {
        "receiver": {"id": "r1", "client_id": "tg-5", "phone": "79161234567"},
        "sender": {"id": "manager"},
        "conversation": {"id": "amo-conv", "client_id": "tg-5"},
        "source": {"external_id": "tg-bot-1"},
        "timestamp": 1700000000,
        "msec_timestamp": 1700000000500,
        "message": {
            "id": "amo-1",
            "type": "picture",
            "text": "Фото",
            "media": "https://amojo.amocrm.ru/attachments/a.jpg",
            "file_name": "a.jpg",
            "file_size": 2048,
            "markup": {
                "mode": "inline",
                "buttons": [[{"text": "Да"}, {"text": "Сайт", "url": "https://x.ru"}]],
            },
            "reply_to": {
                "message": {"id": "amo-0", "msgid": "tg-5-9", "type": "text", "text": "q"}
            },
            "media_group_id": "g1",
        },
    },
}


def test_a_documented_hook_is_read_whole_and_round_trips() -> None:
    read = MessageHook.parse(HOOK)
    assert read.dropped == ()
    assert (read.amo_id, read.type, read.file_size, read.sent_at) == (
        "amo-1",
        "picture",
        2048,
        1700000000.5,
    )
    assert read.reply_to == {"id": "amo-0", "msgid": "tg-5-9", "type": "text", "text": "q"}
    assert MessageHook.parse(read.as_hook()) == read
    message = ManagerMessage.from_hook(read.as_hook())
    assert (message.conversation_client_id, message.source_external_id) == ("tg-5", "tg-bot-1")


@pytest.mark.parametrize(
    ("path", "value", "dropped", "check"),
    [
        (("message", "file_size"), "12 KB", "message.message.file_size", ("file_size", 0)),
        (("message", "file_size"), "4096", None, ("file_size", 4096)),
        (("message", "text"), 12345, None, ("text", "12345")),
        (("message", "text"), {"deep": [1, 2]}, "message.message.text", ("text", "")),
        (("message", "type"), "hologram", "message.message.type", ("type", "file")),
        (("message", "markup"), "buttons!", "message.message.markup", ("markup", None)),
        (("message", "reply_to"), [1], "message.message.reply_to", ("reply_to", None)),
        (("receiver",), "a string", "message.receiver", ("receiver_phone", "")),
        (("conversation",), None, None, ("conversation_client_id", None)),
        (("timestamp",), True, "message.timestamp", ("amo_id", "amo-1")),
        (("msec_timestamp",), float("inf"), "message.msec_timestamp", ("amo_id", "amo-1")),
    ],
)
def test_an_odd_field_is_dropped_and_named(
    path: tuple[str, ...], value: Any, dropped: str | None, check: tuple[str, Any]
) -> None:
    hook = copy.deepcopy(HOOK)
    parent = hook["message"]
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    read = MessageHook.parse(hook)
    assert getattr(read, check[0]) == check[1]
    if dropped is not None:
        assert dropped in read.dropped
    stored = json.loads(json.dumps(read.as_hook()))  # what the listener stores
    assert MessageHook.parse(stored).dropped == read.dropped


@pytest.mark.parametrize(
    "hook", [{}, {"message": "x"}, {"message": {"message": {"type": "text"}}}, []]
)
def test_only_a_hook_naming_no_message_is_unusable(hook: Any) -> None:
    with pytest.raises(UnusableHook):
        MessageHook.parse(hook)


def test_an_id_sent_as_a_number_is_still_the_id() -> None:
    assert MessageHook.parse({"message": {"message": {"id": 17}}}).amo_id == "17"


def test_free_form_parts_are_bounded() -> None:
    hook = copy.deepcopy(HOOK)
    hook["message"]["message"]["markup"] = {"buttons": [[{"text": "b"}] * 500] * 500}
    hook["message"]["message"]["text"] = "x" * 1_000_000
    read = MessageHook.parse(hook)
    assert read.markup is not None
    assert len(read.markup["buttons"]) == 100 and len(read.markup["buttons"][0]) == 20
    assert len(read.text) == 64 * 1024


def test_a_number_too_long_for_any_field_is_dropped_not_fatal() -> None:
    hook = copy.deepcopy(HOOK)
    hook["message"]["message"]["file_size"] = "9" * 400
    hook["message"]["msec_timestamp"] = "9" * 400
    read = MessageHook.parse(hook)
    assert read.file_size == 0
    assert "message.message.file_size" in read.dropped
    assert MessageHook.parse(read.as_hook()).file_size == 0
