"""Nothing acknowledged before it is durable, nothing durable dropped (README)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from bot.common.ids import primary_chat
from bot.customer.intake import KIND_NEW_MESSAGE
from simulators.factories import private_message_update
from storage import JobState
from tests.harness import BridgeFactory, BridgeProcess, Fakes, spawn_bridge, wait_until

CHATS = (1101, 1102, 1103, 1104)


def push_interleaved(fakes: Fakes, per_chat: int, chats: tuple[int, ...] = CHATS) -> int:
    """Customers of several chats write in turns; returns the last update_id."""
    last = 0
    for number in range(1, per_chat + 1):
        for chat in chats:
            last = fakes.telegram.push_update(
                private_message_update(chat, number, text=f"chat {chat} message {number}")
            )
    return last


def assert_each_once_in_order(fakes: Fakes, per_chat: int, chats: tuple[int, ...] = CHATS) -> None:
    """Every message of every chat arrived exactly once, in the order it was written."""
    msgids = [m["msgid"] for m in fakes.amojo.messages]
    assert len(msgids) == len(set(msgids)) == per_chat * len(chats)
    for chat in chats:
        arrived = [m["msgid"] for m in fakes.amojo.messages_for(f"tg-{chat}")]
        assert arrived == [f"tg-{chat}-{n}" for n in range(1, per_chat + 1)]


async def test_amojo_outage_delays_but_never_loses_or_repeats(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start()
    fakes.amojo.set_down(503)
    last = push_interleaved(fakes, per_chat=6)

    await fakes.telegram.wait_for(lambda: fakes.telegram.confirmed_offset > last, what="stored")
    await fakes.amojo.wait_for(
        lambda: sum(r.status == 503 for r in fakes.amojo.requests) >= 3 * len(CHATS),
        what="repeated failed attempts",
    )
    assert fakes.amojo.messages == []

    fakes.amojo.set_down(None)
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 24, timeout=30, what="all")
    assert_each_once_in_order(fakes, per_chat=6)
    assert all(count == 1 for count in fakes.amojo.attempts.values())


async def test_lost_answer_is_retried_with_the_same_msgid_and_stored_once(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    running = await bridges.start()
    # A client timeout far shorter than the fake's delay: the first answer is lost.
    running.bridge.amojo.set_timeout(0.3)
    fakes.amojo.delay(2.0)
    fakes.telegram.push_update(private_message_update(1201, 5, text="Где мой заказ?"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="stored by amojo")
    fakes.amojo.delay(0)

    repo = running.bridge.repo

    async def done() -> bool:
        jobs = await repo.jobs(kind=KIND_NEW_MESSAGE)
        return [job.state for job in jobs] == [JobState.DONE]

    await wait_until(done, timeout=15, what="job done")
    assert len(fakes.amojo.messages) == 1
    # Every retry reused the msgid, so amojo refused each repeat instead of storing it again,
    # and the bridge took that refusal as "delivered" rather than dead-lettering the job.
    assert fakes.amojo.attempts["tg-1201-5"] >= 2
    assert all(m["msgid"] == "tg-1201-5" for m in fakes.amojo.messages)


async def test_storage_failure_keeps_the_update_unconfirmed(
    fakes: Fakes, bridges: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    running = await bridges.start()
    # Another process (a backup, an operator's sqlite3 shell) holds the write lock.
    holder = sqlite3.connect(bridges.db_path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        update_id = fakes.telegram.push_update(private_message_update(1301, 1, text="Привет"))
        await wait_until(
            lambda: any("refuses writes" in r.getMessage() for r in caplog.records),
            timeout=20,
            what="the handler failing to store",
        )
        assert fakes.telegram.confirmed_offset <= update_id
        assert fakes.amojo.messages == []
    finally:
        await asyncio.to_thread(holder.rollback)
        holder.close()

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, timeout=20, what="sent")
    await fakes.telegram.wait_for(
        lambda: fakes.telegram.confirmed_offset > update_id, what="confirmed after storing"
    )
    assert fakes.amojo.messages[0]["msgid"] == "tg-1301-1"
    assert (await running.bridge.repo.get_customer(primary_chat(1301))) is not None


def job_states(db_path: Path) -> dict[str, int]:
    """Count of message jobs per state, read straight from the database file.

    The recovery queue (reading amojo history after the restart's gap) is not counted.
    """
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT state, count(*) FROM jobs WHERE queue != 'recovery' GROUP BY state"
        ).fetchall()
    return {str(state): int(count) for state, count in rows}


async def test_kill_9_with_pending_jobs_resumes_them_once(fakes: Fakes, tmp_path: Path) -> None:
    db_path = tmp_path / "bridge.sqlite3"
    children: list[BridgeProcess] = []
    try:
        first = await spawn_bridge(fakes, db_path, tmp_path / "first.log")
        children.append(first)
        await first.wait_healthy()
        fakes.amojo.set_down(503)
        last = push_interleaved(fakes, per_chat=5)
        await fakes.telegram.wait_for(
            lambda: fakes.telegram.confirmed_offset > last, timeout=30, what="all stored"
        )
        await first.kill()
        assert fakes.amojo.messages == []

        fakes.amojo.set_down(None)
        second = await spawn_bridge(fakes, db_path, tmp_path / "second.log")
        children.append(second)
        await fakes.amojo.wait_for(
            lambda: len(fakes.amojo.messages) == 20, timeout=60, what="all after restart"
        )
        assert_each_once_in_order(fakes, per_chat=5)
        await wait_until(lambda: job_states(db_path) == {"done": 20}, what="all jobs done")
    finally:
        for child in children:
            await child.kill()


async def test_kill_9_during_delivery_loses_and_repeats_nothing(
    fakes: Fakes, tmp_path: Path
) -> None:
    db_path = tmp_path / "bridge.sqlite3"
    per_chat = 40
    children: list[BridgeProcess] = []
    try:
        first = await spawn_bridge(fakes, db_path, tmp_path / "first.log")
        children.append(first)
        await first.wait_healthy()
        # Slow answers leave requests in flight (stored by amojo, answer not yet read).
        fakes.amojo.delay(0.05)
        push_interleaved(fakes, per_chat=per_chat)
        await fakes.amojo.wait_for(
            lambda: len(fakes.amojo.messages) >= 30, timeout=30, what="delivery under way"
        )
        await first.kill()
        delivered_before_kill = len(fakes.amojo.messages)
        assert delivered_before_kill < per_chat * len(CHATS)

        fakes.amojo.delay(0)
        second = await spawn_bridge(fakes, db_path, tmp_path / "second.log")
        children.append(second)
        await fakes.amojo.wait_for(
            lambda: len(fakes.amojo.messages) == per_chat * len(CHATS),
            timeout=60,
            what="all after restart",
        )
        assert_each_once_in_order(fakes, per_chat=per_chat)
        await wait_until(
            lambda: job_states(db_path) == {"done": per_chat * len(CHATS)}, what="all jobs done"
        )
    finally:
        for child in children:
            await child.kill()


async def test_a_running_bridge_prunes_finished_jobs_past_their_retention(
    bridges: BridgeFactory,
) -> None:
    first = await bridges.start()
    db_path = first.bridge.settings.DATABASE_PATH
    await first.stop()
    bridges.running.clear()
    old = time.time() - 8 * 86400
    with sqlite3.connect(db_path) as db:
        db.execute(
            "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, state, next_attempt_at, "
            "created_at, updated_at) VALUES ('amojo', 'k', 'l', 'old-done', '{}', 'done', ?, ?, ?)",
            (old, old, old),
        )

    running = await bridges.start(JOB_RETENTION_DAYS="7")

    async def pruned() -> bool:
        jobs = await running.bridge.repo.jobs(limit=100)
        return not any(job.dedup_key == "old-done" for job in jobs)

    await wait_until(pruned, what="the old finished job pruned")
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT 1 FROM job_keys WHERE dedup_key = 'old-done'").fetchone()
