"""A manager's message reaches the customer even when its hook never arrives (reconciliation)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.common.ids import primary_chat
from simulators.factories import make_contact, private_message_update
from tests.e2e.test_manager_to_telegram import customer_says, post, status_of
from tests.harness import (
    FAST_PACE,
    BridgeFactory,
    Fakes,
    RunningBridge,
    database_at,
    spawn_bridge,
    wait_health,
    wait_until,
)

FAST: dict[str, Any] = {"RECONCILE_INTERVAL_SECONDS": "5"}


def texts_to(fakes: Fakes, chat_id: int) -> list[str]:
    """What a customer received, in order."""
    return [str(c.params.get("text")) for c in fakes.telegram.sent_messages(chat_id)]


async def delivered(fakes: Fakes, amo_ids: list[str], wait: float) -> None:
    """Every message reported delivered (status 1), once."""
    for amo_id in amo_ids:
        assert (await status_of(fakes, amo_id, wait=wait))["status"] == 1


async def test_dropped_hooks_in_a_known_chat_are_delivered_within_two_intervals(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(**FAST)
    await customer_says(fakes, 6101, 1)
    dropped = [
        fakes.amojo.drop_hook(fakes.amojo.message_hook("tg-6101", text=f"lost {n}"))
        for n in range(1, 4)
    ]
    started = time.monotonic()
    await delivered(fakes, dropped, wait=2 * 5 + 10)
    assert time.monotonic() - started <= 2 * 5 + 7  # two intervals and the hook's grace
    assert texts_to(fakes, 6101) == ["lost 1", "lost 2", "lost 3"]

    live = time.monotonic()
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-6101", text="live"))
    assert (await status_of(fakes, amo_id))["status"] == 1
    assert time.monotonic() - live < 2.0  # not held: nothing of the chat is being recovered
    assert texts_to(fakes, 6101) == ["lost 1", "lost 2", "lost 3", "live"]
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/metrics") as response:
        metrics = await response.text()
    assert "bridge_reconcile_missing_messages_total 3.0" in metrics
    assert 'bridge_reconcile_runs_total{outcome="ok"}' in metrics
    assert "bridge_reconcile_delivered_age_seconds_count 3.0" in metrics
    assert 'bridge_reconcile_requests_total{api="amocrm"}' in metrics


class RefusingProxy:
    """A TCP proxy in front of the listener (what nginx is); it can refuse connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._refusing = False
        self.server: asyncio.Server | None = None
        self.port = 0
        self.open: set[asyncio.StreamWriter] = set()

    @property
    def refusing(self) -> bool:
        """Whether it refuses connections (as a stopped nginx does: open ones are cut too)."""
        return self._refusing

    @refusing.setter
    def refusing(self, value: bool) -> None:
        self._refusing = value
        if value:
            for writer in list(self.open):
                writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        self.open.update((writer, up_writer))
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.open.difference_update((writer, up_writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy(bridges: BridgeFactory) -> AsyncIterator[tuple[RunningBridge, RefusingProxy]]:
    """A bridge whose PUBLIC_BASE_URL is a proxy in front of its listener."""
    from tests.harness import free_port  # noqa: PLC0415

    port = free_port()
    front = RefusingProxy(port)
    await front.start()
    bridge = await bridges.start(
        HTTP_PORT=str(port), PUBLIC_BASE_URL=f"http://127.0.0.1:{front.port}", **FAST
    )
    try:
        yield bridge, front
    finally:
        await front.close()


async def test_a_listener_amocrm_cannot_reach_is_reported_and_its_hooks_recovered(
    fakes: Fakes, proxy: tuple[RunningBridge, RefusingProxy]
) -> None:
    bridge, front = proxy
    public = f"http://127.0.0.1:{front.port}"
    await customer_says(fakes, 6201, 1)
    front.refusing = True
    lost = []
    for n in range(1, 4):
        hook = fakes.amojo.message_hook("tg-6201", text=f"while unreachable {n}")
        status, _ = await fakes.amojo.post_hook(public, bridge.scope_id, hook, timeout=1)
        assert status == 0  # amojo could not reach the bridge, and never resends
        lost.append(hook["message"]["message"]["id"])
    _, body = await wait_health(
        bridge.url,
        lambda status, body: any("amoCRM cannot reach the bridge" in p for p in body["problems"]),
        timeout=2 * 5 + 5,
        what="/healthz naming the unreachable URL",
    )
    problem = next(p for p in body["problems"] if "cannot reach" in p)
    assert f"{public}/amojo/self-probe/" in problem
    assert body["status"] == "degraded"  # 503 only after 5 minutes of it

    front.refusing = False
    await delivered(fakes, lost, wait=30)
    assert texts_to(fakes, 6201) == [f"while unreachable {n}" for n in range(1, 4)]
    await wait_health(
        bridge.url,
        lambda status, body: not any("cannot reach" in p for p in body["problems"]),
        timeout=15,
        what="the probe to succeed again",
    )
    gap = await bridge.bridge.repo.last_gap()
    assert gap is not None and gap.reason == "listener unreachable"


async def test_a_thousand_hooks_two_hundred_at_a_time_are_all_taken_and_delivered_once(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(pace=FAST_PACE)
    hooks = [fakes.amojo.message_hook(f"tg-{7000 + n}", text=f"m{n}") for n in range(1000)]
    semaphore = asyncio.Semaphore(200)

    async def send(hook: dict[str, Any]) -> int:
        async with semaphore:
            status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
            return status

    statuses = await asyncio.gather(*(send(hook) for hook in hooks))
    assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages()) >= 1000, timeout=60, what="1000 sends"
    )
    sent = [str(c.params["text"]) for c in fakes.telegram.sent_messages()]
    assert sorted(sent) == sorted(f"m{n}" for n in range(1000))


async def test_a_hook_arriving_long_after_its_message_is_delivered_once(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(**FAST)
    await customer_says(fakes, 6301, 1)
    fakes.amojo.now = lambda: time.time() - 20 * 60  # written 20 minutes ago...
    old = fakes.amojo.message_hook("tg-6301", text="from the slow stream")
    recent_clock = time.time() - 60
    fakes.amojo.now = lambda: recent_clock  # ...and one a minute ago, its hook lost
    found = fakes.amojo.drop_hook(fakes.amojo.message_hook("tg-6301", text="found by the pass"))
    fakes.amojo.now = time.time
    await delivered(fakes, [found], wait=20)
    # The old one's hook comes now (amojo's slow stream): delivered, and only once.
    amo_id = await post(fakes, bridge, old)
    assert (await status_of(fakes, amo_id))["status"] == 1
    late_again = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, old)
    assert late_again[0] == 200  # a duplicate, answered and dropped
    await asyncio.sleep(0)
    assert texts_to(fakes, 6301).count("from the slow stream") == 1
    assert texts_to(fakes, 6301).count("found by the pass") == 1


async def test_writing_first_to_a_known_customer_while_down_is_delivered_after_restart(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    fakes.telegram.push_update(
        private_message_update(6401, 1, contact=make_contact("+79161234500", user_id=6401))
    )
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="shared phone")
    await customer_says(fakes, 6401, 2, text="my phone is shared")  # reaches amoCRM with it
    await first.stop()
    hook = fakes.amojo.message_hook(
        None, text="Здравствуйте, это менеджер", receiver_phone="79161234500"
    )
    status, _ = await fakes.amojo.post_hook(first.url, first.scope_id, hook, timeout=1)
    assert status == 0

    await bridges.start()
    await delivered(fakes, [hook["message"]["message"]["id"]], wait=30)
    assert texts_to(fakes, 6401)[-1] == "Здравствуйте, это менеджер"


async def test_kill_9_then_a_live_hook_goes_after_the_one_written_while_down(
    fakes: Fakes, tmp_path: Path
) -> None:
    db_path = tmp_path / "bridge.sqlite3"
    child = await spawn_bridge(fakes, db_path, tmp_path / "bridge.log")
    try:
        await child.wait_healthy()
        await customer_says(fakes, 6501, 1)
        await child.kill()
        m1 = fakes.amojo.message_hook("tg-6501", text="M1 written while down")
        assert (await fakes.amojo.post_hook(child.url, fakes.amojo.scope_id, m1, timeout=1))[0] == 0
        await child.spawn()
        m2 = fakes.amojo.message_hook("tg-6501", text="M2 live")

        async def taken() -> bool:
            status, _ = await fakes.amojo.post_hook(child.url, fakes.amojo.scope_id, m2, timeout=2)
            return status == 200

        await wait_until(taken, timeout=60, what="the restarted listener to take M2")
        await delivered(fakes, [m1["message"]["message"]["id"], m2["message"]["message"]["id"]], 60)
        assert texts_to(fakes, 6501) == ["M1 written while down", "M2 live"]
    finally:
        await child.kill()


async def test_a_crash_loop_costs_one_recovery_not_five(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    chats = (6601, 6602, 6603)
    for chat in chats:
        await customer_says(fakes, chat, 1)
    await first.stop()
    written = []
    for chat in chats:
        hook = fakes.amojo.message_hook(f"tg-{chat}", text=f"down {chat}")
        await fakes.amojo.post_hook(first.url, first.scope_id, hook, timeout=1)
        written.append(hook["message"]["message"]["id"])
    for _ in range(5):  # started and stopped again at once, five times
        restarted = await bridges.start()
        await restarted.stop()
        bridges.running.clear()
    final = await bridges.start()
    await delivered(fakes, written, wait=30)
    history_reads = len(fakes.amojo.history_reads)
    events_reads = len(fakes.crm.requests_to("/api/v4/events"))
    assert history_reads <= 2 * len(chats), history_reads  # one reading per chat, not five
    assert events_reads <= 2 * 7, events_reads  # a pass or two per start
    for chat in chats:
        assert texts_to(fakes, chat) == [f"down {chat}"]
    del final


async def test_without_the_events_feed_a_restart_is_still_recovered_and_health_says_so(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    fakes.crm.events_refusal = 403
    first = await bridges.start()
    await customer_says(fakes, 6701, 1)
    await first.stop()
    hook = fakes.amojo.message_hook("tg-6701", text="read chat by chat")
    await fakes.amojo.post_hook(first.url, first.scope_id, hook, timeout=1)
    second = await bridges.start()
    await delivered(fakes, [hook["message"]["message"]["id"]], wait=30)
    _, body = await wait_health(
        second.url, lambda status, body: body["status"] == "degraded", what="degraded"
    )
    assert any("events feed cannot be read (HTTP 403" in p for p in body["problems"])


async def test_an_upgrade_keeps_the_chats_and_the_waiting_messages_of_the_previous_schema(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    hook = fakes.amojo.message_hook("tg-6801", text="waiting since the old version")
    amo_id = hook["message"]["message"]["id"]
    fakes.amojo.hook_message_ids.add(amo_id)
    with database_at(bridges.db_path, 12) as db:
        db.execute(
            "INSERT INTO customers (bot, chat_id, user_id, name, last_message_at, updated_at, "
            "amo_chat_id, amo_conversation_id) VALUES (0, 6801, 6801, 'Old', ?, 0, 'amo-a', "
            "'amo-b')",
            (time.time(),),
        )
        db.execute(
            "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, next_attempt_at, "
            "created_at, updated_at) VALUES ('telegram', 'amo.message', 'chat:6801', ?, ?, 0, "
            "?, ?)",
            (f"hook:{amo_id}", json.dumps({"hook": hook}), time.time(), time.time()),
        )
    db.close()
    bridge = await bridges.start()
    assert (await status_of(fakes, amo_id))["status"] == 1
    assert texts_to(fakes, 6801) == ["waiting since the old version"]
    chats = await bridge.bridge.repo.amo_chats_of(primary_chat(6801))
    assert set(chats) >= {"amo-a", "amo-b"}
