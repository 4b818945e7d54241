"""Hooks taken while Telegram is down survive `kill -9` and are delivered exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from simulators.factories import private_message_update
from tests.harness import Fakes, spawn_bridge

CHATS = (701, 702, 703, 704)
PER_CHAT = 5


async def test_hooks_survive_sigkill_while_telegram_is_down(fakes: Fakes, tmp_path: Path) -> None:
    db_path = tmp_path / "bridge.sqlite3"
    first = await spawn_bridge(fakes, db_path, tmp_path / "first.log")
    try:
        await first.wait_healthy()
        for chat_id in CHATS:
            fakes.telegram.push_update(private_message_update(chat_id, 1, text="привет"))
        await fakes.amojo.wait_for(
            lambda: len(fakes.amojo.messages) == len(CHATS), timeout=15, what="customers"
        )
        fakes.telegram.set_down(True)
        hooks = [
            fakes.amojo.message_hook(f"tg-{chat_id}", text=f"{chat_id}: сообщение {n}")
            for n in range(PER_CHAT)
            for chat_id in CHATS
        ]
        for hook in hooks:
            status, body = await fakes.amojo.post_hook(first.url, None, hook)
            assert status == 200, body
    finally:
        await first.kill()
    assert fakes.telegram.sent_messages() == []

    second = await spawn_bridge(fakes, db_path, tmp_path / "second.log")
    try:
        await second.wait_healthy()  # the listener is up although Telegram is still down
        fakes.telegram.set_down(False)
        amo_ids = [hook["message"]["message"]["id"] for hook in hooks]
        await fakes.amojo.wait_for(
            lambda: all(fakes.amojo.statuses_for(amo_id) for amo_id in amo_ids),
            timeout=60,
            what="every delivery status",
        )
    finally:
        await second.kill()

    sent = Counter(call.params["text"] for call in fakes.telegram.sent_messages())
    expected = [hook["message"]["message"]["text"] for hook in hooks]
    assert sent == Counter(expected)  # each exactly once
    for chat_id in CHATS:
        texts = [c.params["text"] for c in fakes.telegram.sent_messages(chat_id)]
        assert texts == [f"{chat_id}: сообщение {n}" for n in range(PER_CHAT)]  # in order
    assert all([s["status"] for s in fakes.amojo.statuses_for(amo_id)] == [1] for amo_id in amo_ids)
