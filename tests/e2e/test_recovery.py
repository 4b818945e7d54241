"""Manager messages sent while the bridge was down come back from amojo's history, once."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import bot.manager.recovery
from simulators.factories import staff_message_update
from storage import JobState
from tests.e2e.test_manager_to_telegram import customer_says, status_of
from tests.harness import BridgeFactory, Fakes, RunningBridge, spawn_bridge, wait_until

CHATS = (2101, 2102, 2103)


def texts_in(fakes: Fakes, chat_id: int) -> list[str]:
    """Texts the customer of a chat received, in order."""
    return [str(c.params.get("text")) for c in fakes.telegram.sent_messages(chat_id)]


async def managers_write_while_down(
    fakes: Fakes, url: str, chats: tuple[int, ...], per_chat: int, tag: str = "down"
) -> list[str]:
    """Managers answer in every chat; each hook fails (the bridge is down). Returns amo ids."""
    amo_ids = []
    for number in range(1, per_chat + 1):
        for chat in chats:
            hook = fakes.amojo.message_hook(f"tg-{chat}", text=f"{tag} {chat} #{number}")
            status, _ = await fakes.amojo.post_hook(url, fakes.amojo.scope_id, hook, timeout=1)
            assert status != 200
            amo_ids.append(hook["message"]["message"]["id"])
    return amo_ids


async def assert_recovered_once(
    fakes: Fakes, chats: tuple[int, ...], per_chat: int, amo_ids: list[str], tag: str = "down"
) -> None:
    for amo_id in amo_ids:
        assert (await status_of(fakes, amo_id, wait=30))["status"] == 1
    for chat in chats:
        expected = [f"{tag} {chat} #{n}" for n in range(1, per_chat + 1)]
        assert [t for t in texts_in(fakes, chat) if t.startswith(tag)] == expected


async def test_a_planned_restart_recovers_what_managers_wrote_meanwhile(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    for chat in CHATS:
        await customer_says(fakes, chat, 1)
    before = await post_live(fakes, first, CHATS[0], "before the outage")
    await first.stop()

    amo_ids = await managers_write_while_down(fakes, first.url, CHATS, per_chat=2)
    second = await bridges.start()

    await assert_recovered_once(fakes, CHATS, 2, amo_ids)
    assert texts_in(fakes, CHATS[0]).count("before the outage") == 1  # not sent again
    assert len(fakes.amojo.statuses_for(before)) == 1
    gap = await second.bridge.repo.last_gap()
    assert gap is not None and gap.reason == "restart"

    await wait_until(lambda: gap_finished(second), what="the gap's recovery to finish")
    gap = await second.bridge.repo.last_gap()
    assert gap is not None and (gap.scanned, gap.recovered) == (3, 6)


async def gap_finished(bridge: RunningBridge) -> bool:
    """Whether the bridge's last gap in hook intake has been recovered completely."""
    gap = await bridge.bridge.repo.last_gap()
    return gap is not None and gap.finished_at is not None


async def post_live(fakes: Fakes, bridge: RunningBridge, chat: int, text: str) -> str:
    hook = fakes.amojo.message_hook(f"tg-{chat}", text=text)
    status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    assert status == 200
    amo_id = str(hook["message"]["message"]["id"])
    assert (await status_of(fakes, amo_id))["status"] == 1
    return amo_id


async def test_history_older_than_the_gap_is_never_sent(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    await customer_says(fakes, 2201, 1)
    await first.stop()
    # Sent an hour ago (before this bridge knew of it): history has it, the gap does not.
    hook = fakes.amojo.message_hook("tg-2201", text="an hour old")
    envelope = hook["message"]
    envelope["timestamp"] = int(time.time()) - 3600
    envelope["msec_timestamp"] = envelope["timestamp"] * 1000
    await fakes.amojo.post_hook(first.url, first.scope_id, hook, timeout=1)
    fresh = await managers_write_while_down(fakes, first.url, (2201,), per_chat=1)

    await bridges.start()
    await assert_recovered_once(fakes, (2201,), 1, fresh)
    assert "an hour old" not in texts_in(fakes, 2201)


async def test_a_message_that_comes_by_hook_and_by_history_is_delivered_once(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    await customer_says(fakes, 2301, 1)
    await first.stop()
    fakes.amojo.delay(0.3, before=True)  # history is slow: the live hook gets in first
    hook = fakes.amojo.message_hook("tg-2301", text="twice offered")
    await fakes.amojo.post_hook(first.url, first.scope_id, hook, timeout=1)

    second = await bridges.start()
    fakes.amojo.delay(0)
    status, _ = await fakes.amojo.post_hook(second.url, second.scope_id, hook)
    assert status == 200
    assert (await status_of(fakes, hook["message"]["message"]["id"]))["status"] == 1

    await wait_until(lambda: gap_finished(second), timeout=15, what="recovery finished")
    assert texts_in(fakes, 2301).count("twice offered") == 1


async def test_many_missed_messages_page_through_a_flaky_history(
    fakes: Fakes, bridges: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 10 (not amojo's 50): three pages, without 60 paced sends to wait out.
    monkeypatch.setattr(bot.manager.recovery, "AMOJO_HISTORY_PAGE_LIMIT", 10)
    first = await bridges.start()
    await customer_says(fakes, 2401, 1)
    await first.stop()
    amo_ids = await managers_write_while_down(fakes, first.url, (2401,), per_chat=25)
    fakes.amojo.fail("/history", 503, times=2)
    fakes.amojo.fail("/history", 429, times=1, retry_after=1)

    await bridges.start()
    for amo_id in amo_ids:
        assert (await status_of(fakes, amo_id, wait=60))["status"] == 1
    got = [t for t in texts_in(fakes, 2401) if t.startswith("down")]
    assert got == [f"down 2401 #{n}" for n in range(1, 26)]
    offsets = sorted({offset for _, offset, _ in fakes.amojo.history_reads})
    assert offsets[:3] == [0, 10, 20]


async def test_a_hook_that_could_not_be_stored_is_recovered(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start()
    await customer_says(fakes, 2501, 1)
    holder = sqlite3.connect(bridges.db_path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        hook = fakes.amojo.message_hook("tg-2501", text="stored later")
        # The insert waits for the lock (busy_timeout, 5 s), then fails: the hook gets a 503.
        status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook, timeout=40)
        assert status == 503
    finally:
        await asyncio.to_thread(holder.rollback)
        holder.close()

    assert (await status_of(fakes, hook["message"]["message"]["id"], wait=30))["status"] == 1
    assert texts_in(fakes, 2501).count("stored later") == 1
    gap = await bridge.bridge.repo.last_gap()
    assert gap is not None and gap.reason == "hook not stored"


async def test_a_hook_with_a_trailing_newline_outside_its_signature_is_taken(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 2601, 1)
    hook = fakes.amojo.message_hook("tg-2601", text="from a live account")
    body = json.dumps(hook).encode()
    fakes.amojo.hook_message_ids.add(hook["message"]["message"]["id"])  # amojo sent it
    status, _ = await fakes.amojo.post_hook(
        bridge.url, bridge.scope_id, body + b"\n", signature=fakes.amojo.sign_hook(body)
    )
    assert status == 200
    forged, _ = await fakes.amojo.post_hook(
        bridge.url, bridge.scope_id, body + b"\n", signature="0" * 40
    )
    assert forged == 401
    assert (await status_of(fakes, hook["message"]["message"]["id"]))["status"] == 1


async def test_kill_9_while_down_and_in_the_middle_of_recovery(
    fakes: Fakes, tmp_path: Path
) -> None:
    db_path = tmp_path / "bridge.sqlite3"
    chats = tuple(range(2701, 2721))
    children = []
    try:
        first = await spawn_bridge(fakes, db_path, tmp_path / "first.log")
        children.append(first)
        await first.wait_healthy()
        for chat in chats:
            await customer_says(fakes, chat, 1)
        await first.kill()

        amo_ids = await managers_write_while_down(fakes, first.url, chats, per_chat=1)
        fakes.amojo.delay(0.2, before=True)  # slow history: the next kill lands mid-recovery
        second = await spawn_bridge(fakes, db_path, tmp_path / "second.log")
        children.append(second)
        await fakes.amojo.wait_for(lambda: len(fakes.amojo.history_reads) >= 3, timeout=60)
        await second.kill()
        assert len(fakes.amojo.statuses) < len(chats)

        fakes.amojo.delay(0)
        third = await spawn_bridge(fakes, db_path, tmp_path / "third.log")
        children.append(third)
        await assert_recovered_once(fakes, chats, 1, amo_ids)
        delivered: list[Any] = [
            c for c in fakes.telegram.sent_messages() if "down" in str(c.params.get("text"))
        ]
        assert len(delivered) == len(chats)
        async with aiohttp.ClientSession() as http, http.get(f"{third.url}/healthz") as r:
            assert r.status in (200, 503)
    finally:
        for child in children:
            await child.kill()
    with sqlite3.connect(db_path) as db:
        dead = db.execute("SELECT count(*) FROM jobs WHERE state = ?", (JobState.DEAD.value,))
        assert dead.fetchone()[0] == 0


async def test_recovered_media_and_buttons_go_out_like_live_hooks(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start(OPERATOR_IDS="900")
    await customer_says(fakes, 2801, 1)
    await first.stop()
    image = b"\x89PNG" + bytes(range(256)) * 10
    url = fakes.amojo.add_media("photo.png", "image/png", image)
    picture = fakes.amojo.message_hook(
        "tg-2801", msg_type="picture", text="Фото", media=url, file_size=len(image)
    )
    buttons = fakes.amojo.message_hook(
        "tg-2801",
        text="Выберите",
        markup={"mode": "inline", "buttons": [[{"text": "Да"}, {"text": "Нет"}]]},
    )
    for hook in (picture, buttons):
        await fakes.amojo.post_hook(first.url, first.scope_id, hook, timeout=1)

    second = await bridges.start(OPERATOR_IDS="900")
    for hook in (picture, buttons):
        assert (await status_of(fakes, hook["message"]["message"]["id"], wait=15))["status"] == 1
    photo, choice = fakes.telegram.sent_messages(2801)
    assert photo.method.lower() == "sendphoto" and photo.files["photo"] == image
    assert photo.params["caption"] == "Фото"
    assert choice.params["text"] == "Выберите" and "reply_markup" in choice.params

    fakes.telegram.push_update(staff_message_update(900, 1, text="/status"))
    await fakes.telegram.wait_for(lambda: bool(fakes.telegram.sent_messages(900)))
    status = str(fakes.telegram.sent_messages(900)[-1].params["text"])
    assert "Last gap in hook intake" in status and "(restart)" in status
    gap = await second.bridge.repo.last_gap()
    assert gap is not None and gap.recovered == 2


async def test_recovery_compares_history_on_amojos_clock(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    fakes.amojo.now = lambda: time.time() + 5 * 60  # amojo's clock is 5 min ahead of ours
    first = await bridges.start()
    await customer_says(fakes, 2901, 1)
    await first.stop()
    amo_ids = await managers_write_while_down(fakes, first.url, (2901,), per_chat=2)

    await bridges.start()
    await assert_recovered_once(fakes, (2901,), 2, amo_ids)


async def test_a_clock_set_back_while_down_still_makes_a_gap(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    await customer_says(fakes, 2902, 1)
    await first.stop()
    # Our clock ran 3 min fast until the bridge stopped; NTP set it back meanwhile.
    with sqlite3.connect(bridges.db_path) as db:
        db.execute(
            "UPDATE kv SET value = ? WHERE key = 'listener.heartbeat'", (repr(time.time() + 180),)
        )
    db.close()
    amo_ids = await managers_write_while_down(fakes, first.url, (2902,), per_chat=1)

    second = await bridges.start()
    await assert_recovered_once(fakes, (2902,), 1, amo_ids)
    gap = await second.bridge.repo.last_gap()
    assert gap is not None and gap.reason == "restart"
