"""What strangers and odd input cannot do: speak for the company, stop intake, spin a worker."""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.amocrm.hooks import KIND_AMO_MESSAGE
from bot.common.ids import primary_chat
from bot.launch import QUIET_LOGGERS
from simulators.factories import make_message, make_user, staff_message_update
from storage import JobState
from tests.e2e.test_manager_to_telegram import customer_says, post, status_of
from tests.harness import (
    BridgeFactory,
    Fakes,
    RunningBridge,
    spawn_bridge,
    wait_health,
    wait_until,
)

STRANGER = make_user(666, first_name="Mallory", last_name="Evil", language_code="en")
FRIEND = make_user(777, first_name="Frank", last_name="Friend")
STAFF: dict[str, Any] = {
    "OPERATOR_IDS": "900",
    "BUSINESS_OWNER_USERS": "900:123",
    "AMOJO_BOT_ID": "a7d1c1d2-0000-4000-8000-00000000b0b0",
}


def sent_on_behalf(fakes: Fakes) -> list[Any]:
    """Every call the bridge made with any Business connection id."""
    return [c for c in fakes.telegram.calls if "business_connection_id" in c.params]


async def test_a_strangers_business_account_is_refused_and_never_bridged(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(**STAFF)
    fakes.telegram.connect_business("bc-mallory", STRANGER)
    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.sent_messages(666)), what="the polite notice"
    )
    [notice] = fakes.telegram.sent_messages(666)
    assert "only with the Telegram Business accounts of the company's staff" in str(
        notice.params["text"]
    )
    assert "business_connection_id" not in notice.params

    # The friend writes to Mallory, Mallory answers: nothing reaches amoCRM.
    fakes.telegram.business_message("bc-mallory", FRIEND, text="secret plans")
    fakes.telegram.business_message("bc-mallory", FRIEND, from_owner=True, text="as the company")
    fakes.telegram.connect_business("bc-mallory", STRANGER)  # again: no second notice
    marker = await customer_says(fakes, 501, 1, text="a real customer")  # everything before
    assert [m["conversation_id"] for m in fakes.amojo.messages] == [marker["conversation_id"]]
    assert await bridge.bridge.repo.business_connections() == []
    assert len(fakes.telegram.sent_messages(666)) == 1

    # A manager writing into such a chat goes nowhere, and never as Mallory.
    hook = fakes.amojo.message_hook("tg-a666-777", text="answer")
    status = await status_of(fakes, await post(fakes, bridge, hook))
    assert (status["status"], status["error_code"]) == (-1, 902)
    await post(fakes, bridge, fakes.amojo.typing_hook("tg-a666-777"))
    await post(fakes, bridge, fakes.amojo.message_hook("tg-501", text="after the typing"))
    await fakes.telegram.wait_for(lambda: bool(fakes.telegram.sent_messages(501)), what="marker")
    assert sent_on_behalf(fakes) == []
    assert fakes.telegram.calls_of("getBusinessConnection") == []


async def test_an_upgrade_disables_strangers_connections_already_stored(
    fakes: Fakes, bridges: BridgeFactory, tmp_path: Path
) -> None:
    first = await bridges.start(**STAFF)
    await first.stop()
    with sqlite3.connect(tmp_path / "bridge.sqlite3") as db:  # as an older version stored it
        db.execute(
            "INSERT INTO business_connections (id, bot, owner_id, owner_name, user_chat_id, "
            "can_reply, can_read, enabled, updated_at) VALUES ('bc-mallory', 0, 666, 'Mallory', "
            "666, 1, 1, 1, ?)",
            (time.time(),),
        )
    fakes.telegram.business["bc-mallory"] = {
        "id": "bc-mallory",
        "user": STRANGER,
        "user_chat_id": 666,
        "date": int(time.time()),
        "is_enabled": True,
        "rights": {"can_reply": True, "can_read_messages": True},
    }
    bridge = await bridges.start(AMOCRM_SOURCES="true", **STAFF)
    [stored] = await bridge.bridge.repo.business_connections()
    assert (stored.id, stored.enabled) == ("bc-mallory", False)

    fakes.telegram.business_message("bc-mallory", FRIEND, text="hello")
    await customer_says(fakes, 501, 1, text="marker")
    assert [m["conversation_id"] for m in fakes.amojo.messages] == ["tg-501"]
    hook = fakes.amojo.message_hook("tg-a666-777", text="answer")
    status = await status_of(fakes, await post(fakes, bridge, hook))
    assert (status["status"], status["error_code"]) == (-1, 902)
    assert sent_on_behalf(fakes) == []
    # No amoCRM source is named after a stranger (a source takes its owner's name).
    assert not [s for s in fakes.crm.sources.values() if "Mallory" in s["name"]]
    assert [s["external_id"] for s in fakes.crm.sources.values()] == ["tg-bot-123456"]


async def test_typing_and_late_messages_of_a_removed_connection_go_nowhere(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    owner = make_user(900, first_name="Anna", language_code="en")
    bridge = await bridges.start(**STAFF)
    fakes.telegram.connect_business("bc-anna", owner)
    customer = make_user(501)
    fakes.telegram.business_message("bc-anna", customer, text="hi")
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="the customer")
    fakes.telegram.connect_business("bc-anna", owner, enabled=False)
    fakes.telegram.business_message("bc-anna", customer, text="late")
    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages(900)) == 2, what="both notices to Anna"
    )
    await customer_says(fakes, 502, 1, text="marker")
    assert [m["message"]["text"] for m in fakes.amojo.messages] == ["hi", "marker"]

    await post(fakes, bridge, fakes.amojo.typing_hook("tg-a900-501"))
    await post(fakes, bridge, fakes.amojo.message_hook("tg-502", text="after the typing"))
    await fakes.telegram.wait_for(lambda: bool(fakes.telegram.sent_messages(502)), what="marker")
    assert [c for c in fakes.telegram.calls_of("sendChatAction") if c.chat_id == 501] == []


UNREADABLE: list[dict[str, Any]] = [
    # a forward_origin of a type aiogram does not know
    {"forward_origin": {"type": "hologram", "date": 1, "sender": "Mallory"}},
    # a malformed reply_to_story
    {"reply_to_story": {"chat": "not a chat", "id": "x"}},
]


def poll() -> dict[str, Any]:
    """A poll as a newer Bot API sends it, without fields aiogram 3.31 requires."""
    return {
        "poll": {
            "id": "p1",
            "question": "Когда доставка?",
            "options": [{"text": "Завтра", "voter_count": 0}],
            "total_voter_count": 0,
            "is_closed": False,
            "is_anonymous": True,
            "type": "regular",
            "allows_multiple_answers": False,
        }
    }


async def test_updates_aiogram_cannot_read_are_bridged_confirmed_and_never_logged(
    fakes: Fakes, bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the most a bridge logs (LOG_LEVEL=DEBUG)...
    for name in QUIET_LOGGERS:  # ...where libraries stay at WARNING, as bot.launch sets them
        caplog.set_level(logging.WARNING, logger=name)
    secrets = ("Ivan Petrov", "SECRET-TEXT", "+79161234567", "Когда доставка")
    user = make_user(3001, first_name="Ivan", last_name="Petrov")
    contact = {"phone_number": "+79161234567", "first_name": "Ivan"}
    pushed = [
        fakes.telegram.push_update(
            {"message": make_message(3001, 1, user=user, text="SECRET-TEXT 1", **UNREADABLE[0])}
        ),
        fakes.telegram.push_update(
            {"message": make_message(3001, 2, user=user, text="SECRET-TEXT 2", **UNREADABLE[1])}
        ),
        fakes.telegram.push_update({"message": make_message(3001, 3, user=user, **poll())}),
        fakes.telegram.push_update({"message": make_message(3001, 4, user=user, contact=contact)}),
        fakes.telegram.push_update({"brand_new_update": {"secret": "SECRET-TEXT"}}),
        fakes.telegram.push_update({"message": {"chat": "SECRET-TEXT", "message_id": "x"}}),
    ]
    await fakes.telegram.wait_for(
        lambda: fakes.telegram.confirmed_offset > pushed[-1], what="every update confirmed"
    )
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 4, what="four bridged")
    texts = [m["message"].get("text", "") for m in fakes.amojo.messages]
    assert texts[0].startswith("SECRET-TEXT 1") and "forward_origin" in texts[0]
    assert texts[1].startswith("SECRET-TEXT 2") and "reply_to_story" in texts[1]
    assert texts[2] == "[The customer sent a Telegram poll that amoCRM chats cannot show]"
    assert fakes.amojo.messages[3]["message"]["type"] == "contact"

    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
        metrics = await response.text()
    assert 'bridge_telegram_unreadable_updates_total{bot="123456"} 4.0' in metrics
    _, body = await wait_health(
        bridge.url, lambda status, body: bool(body["problems"]), what="a degraded health"
    )
    assert any("could not be read" in problem for problem in body["problems"])

    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert "update 1 (message) of bot 123456: aiogram cannot read" in logged
    for secret in secrets:
        assert secret not in logged

    # Intake goes on as ever.
    after = await customer_says(fakes, 3002, 1, text="next")
    assert after["message"]["text"] == "next"


async def test_an_odd_hook_field_is_dropped_and_the_message_still_delivered(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 3101, 1)
    hook = fakes.amojo.message_hook("tg-3101", text="odd but fine")
    hook["message"]["message"]["file_size"] = "12 KB"
    hook["message"]["receiver"] = "a string"
    hook["message"]["message"]["markup"] = {"buttons": [[{"text": 5}, "x", {"text": "Да"}]]}
    status = await status_of(fakes, await post(fakes, bridge, hook))
    assert status["status"] == 1
    [sent] = fakes.telegram.sent_messages(3101)
    assert sent.params["text"] == "odd but fine"
    assert sent.params["reply_markup"]["keyboard"] == [[{"text": "5"}, {"text": "Да"}]]

    nothing = fakes.amojo.message_hook("tg-3101", msg_type="picture", text="")
    status = await status_of(fakes, await post(fakes, bridge, nothing))
    assert (status["status"], status["error_code"]) == (-1, 905)

    no_chat: dict[str, Any] = {"message": {"message": {"id": "amo-lonely", "type": "text"}}}
    fakes.amojo.hook_message_ids.add("amo-lonely")
    assert (await fakes.amojo.post_hook(bridge.url, bridge.scope_id, no_chat))[0] == 200
    status = await status_of(fakes, "amo-lonely")
    assert (status["status"], status["error_code"]) == (-1, 904)
    assert "named no conversation" in status["error"]


async def test_a_poisoned_job_from_an_older_version_neither_spins_nor_blocks_its_chat(
    fakes: Fakes, bridges: BridgeFactory, tmp_path: Path
) -> None:
    first = await bridges.start()
    await customer_says(fakes, 3201, 1)
    await first.stop()
    poisoned = fakes.amojo.message_hook("tg-3201", text="stored raw")
    poisoned["message"]["message"]["file_size"] = "12 KB"
    poisoned["message"]["receiver"] = "a string"
    fakes.amojo.hook_message_ids.add(poisoned["message"]["message"]["id"])
    with sqlite3.connect(tmp_path / "bridge.sqlite3") as db:
        db.execute(
            "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, next_attempt_at, "
            "created_at, updated_at) VALUES ('telegram', ?, 'chat:3201', 'hook:poisoned', ?, "
            "0, 0, 0)",
            (KIND_AMO_MESSAGE, __import__("json").dumps({"hook": poisoned})),
        )
    bridge = await bridges.start()
    amo_id = poisoned["message"]["message"]["id"]
    assert (await status_of(fakes, amo_id))["status"] == 1
    later = await post(fakes, bridge, fakes.amojo.message_hook("tg-3201", text="later"))
    assert (await status_of(fakes, later))["status"] == 1
    [job] = [
        j
        for j in await bridge.bridge.repo.jobs(kind=KIND_AMO_MESSAGE)
        if j.dedup_key == "hook:poisoned"
    ]
    assert (job.state, job.attempts) == (JobState.DONE, 1)


async def test_a_replayed_hook_older_than_the_dedup_window_is_refused(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 3301, 1)
    old = time.time() - 40 * 86400  # retention 7 + 30 days
    fakes.amojo.now = lambda: old
    hook = fakes.amojo.message_hook("tg-3301", text="captured long ago")
    status, body = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    assert status == 400 and "replay" in body
    assert await bridge.bridge.repo.jobs(kind=KIND_AMO_MESSAGE) == []


async def test_unauthenticated_oddities_are_answered_4xx_without_a_traceback(
    fakes: Fakes, bridges: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = await bridges.start(METRICS_TOKEN="metrics-secret")
    await customer_says(fakes, 3401, 1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{bridge.url}/files/abc.d\u00e9f") as response:
            assert response.status == 404
        raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        writer.write(raw)
        await writer.drain()
        head = await reader.readline()
        writer.close()
        assert head.startswith(b"HTTP/1.1 401"), head
        deep = b"[" * 200_000 + b"]" * 200_000  # 400 kB: under the body limit
        signature = fakes.amojo.sign_hook(deep)
        async with http.post(
            f"{bridge.url}/amojo/{bridge.scope_id}",
            data=io.BytesIO(deep),
            headers={"X-Signature": signature, "Content-Type": "application/json"},
        ) as response:
            assert response.status == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_head_of_a_file_link_fetches_nothing_from_telegram(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    file_id, _ = fakes.telegram.add_file(b"x" * 5000)
    url = bridge.bridge.files.url(file_id, "doc.pdf", "application/pdf", 5000)
    before = len(fakes.telegram.calls)
    async with aiohttp.ClientSession() as http, http.head(url) as response:
        assert response.status == 200
        assert response.headers["Content-Length"] == "5000"
        assert response.headers["Content-Disposition"].startswith("attachment")
    assert fakes.telegram.calls[before:] == [] and fakes.telegram.downloads == []


async def test_slow_clients_do_not_keep_hooks_out(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 3501, 1)
    guard = bridge.bridge.listener.guard
    guard.limit = 40
    slow = []
    for _ in range(120):  # three times the limit, each sending one header line and no more
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        writer.write(b"POST /amojo/x HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        slow.append((reader, writer))
    started = time.monotonic()
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-3501", text="through"))
    assert time.monotonic() - started < 2.0
    assert (await status_of(fakes, amo_id))["status"] == 1
    closed = [reader for reader, _ in slow if reader.at_eof() or await _closed(reader)]
    assert len(closed) >= 120 - guard.limit
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
        assert "bridge_listener_connections_closed_total" in await response.text()
    for _, writer in slow:
        writer.close()


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(100), timeout=0.05)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


async def test_a_slow_head_is_cut_off_after_the_header_timeout(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    from bot.common.metrics import Metrics  # noqa: PLC0415
    from bot.jobs.throttle import HookTraffic  # noqa: PLC0415
    from bot.listener.routes import Listener  # noqa: PLC0415
    from storage import open_repository  # noqa: PLC0415
    from tests.harness import free_port  # noqa: PLC0415

    settings = bridges.settings(free_port())
    repo = await open_repository(bridges.db_path)
    listener = Listener(settings, repo, Metrics(), HookTraffic())
    listener.header_timeout = 0.5
    await listener.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port or 0)
        started = time.monotonic()
        for _ in range(20):  # a header line every 0.1 s never completes the head
            writer.write(b"X-Slow: 1\r\n" if _ else b"GET /healthz HTTP/1.1\r\n")
            await writer.drain()
            if await _closed(reader):
                break
            await asyncio.sleep(0.1)
        await wait_until(lambda: _closed(reader), timeout=3, what="the slow client cut off")
        assert time.monotonic() - started < 2.5
        writer.close()
    finally:
        await listener.stop()
        await repo.close()


async def test_idle_connections_that_sent_a_request_do_not_keep_a_hook_out(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 3601, 1)
    bridge.bridge.listener.guard.limit = 20
    held = []
    for _ in range(20):  # each asks something, gets its 404 and keeps the connection
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        writer.write(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 404")
        held.append(writer)
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-3601", text="room made"))
    assert (await status_of(fakes, amo_id))["status"] == 1
    for writer in held:
        writer.close()


async def test_a_sent_message_whose_answer_aiogram_cannot_read_counts_as_delivered(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 3701, 1)
    fakes.telegram.newer_fields = {"forward_origin": {"type": "hologram", "date": 1}}
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-3701", text="sent once"))
    status = await status_of(fakes, amo_id)
    assert status["status"] == 1, status
    [sent] = fakes.telegram.sent_messages(3701)
    link = await bridge.bridge.repo.get_link(primary_chat(3701), sent.result["message_id"])
    assert link is not None and link.amo_message_id == amo_id


async def test_a_forwarded_command_whose_origin_is_unreadable_is_not_run(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start(OPERATOR_IDS="900")
    fakes.crm.add_talk(118)
    forwarded = staff_message_update(
        900, 5, text="/close 118", forward_origin={"type": "paid_post", "date": 1}
    )
    fakes.telegram.push_update(forwarded)
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.messages), what="bridged, not run")
    assert fakes.crm.closes == []


async def test_a_database_path_that_is_no_database_exits_2_and_does_not_hang(
    fakes: Fakes, tmp_path: Path
) -> None:
    not_a_database = tmp_path / "bridge.sqlite3"
    not_a_database.write_bytes(b"this is not an SQLite file" * 100)
    child = await spawn_bridge(fakes, not_a_database, tmp_path / "bridge.log")
    try:
        code = await child.wait_exit(timeout=20)
    finally:
        await child.kill()
    assert code == 2, child.log()
    assert "DATABASE_PATH: cannot open the database" in child.log()
