"""Dead letters end to end: operators list them and re-drive them without duplicates."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time

import pytest

import bot.manager.delivery
from bot.amocrm.hooks import KIND_AMO_MESSAGE
from bot.customer.intake import KIND_NEW_MESSAGE
from simulators.factories import private_message_update, staff_message_update
from storage import JobState
from storage.crm import audit_entries
from tests.harness import BridgeFactory, Fakes, RunningBridge, wait_until

OPERATOR = 9001


class Operator:
    """An operator chatting with the bot through the fake Telegram."""

    def __init__(self, fakes: Fakes) -> None:
        self.fakes = fakes
        self.message_id = 0

    async def says(self, text: str) -> str:
        """Send a command and return the bot's answer."""
        before = len(self.fakes.telegram.sent_messages(OPERATOR))
        self.message_id += 1
        self.fakes.telegram.push_update(staff_message_update(OPERATOR, self.message_id, text=text))
        await self.fakes.telegram.wait_for(
            lambda: len(self.fakes.telegram.sent_messages(OPERATOR)) > before, what=text
        )
        return str(self.fakes.telegram.sent_messages(OPERATOR)[-1].params["text"])


async def start(bridges: BridgeFactory) -> RunningBridge:
    return await bridges.start(OPERATOR_IDS=str(OPERATOR))


async def test_dead_manager_message_is_listed_and_redriven_once(
    fakes: Fakes, bridges: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.manager.delivery, "DELIVERY_GIVE_UP_SECONDS", 0.3)
    bridge = await start(bridges)
    operator = Operator(fakes)
    fakes.telegram.push_update(private_message_update(801, 1, text="Здравствуйте"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="customer message")

    fakes.telegram.set_down(True)
    hook = fakes.amojo.message_hook("tg-801", text="Ваш заказ готов")
    amo_id = hook["message"]["message"]["id"]
    status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    assert status == 200
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.statuses_for(amo_id)), timeout=10)
    assert fakes.amojo.statuses_for(amo_id)[0]["status"] == -1
    fakes.telegram.set_down(False)

    listing = await operator.says("/failed")
    assert "Dead-lettered jobs: 1" in listing
    assert f"amo message {amo_id}" in listing
    match = re.search(r"#(\d+) telegram/amo\.message", listing)
    assert match, listing
    job_id = int(match.group(1))

    answer = await operator.says(f"/retry {job_id}")
    assert answer == f"Job #{job_id} is back in its queue."
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.statuses_for(amo_id)) == 2, timeout=10)
    assert [s["status"] for s in fakes.amojo.statuses_for(amo_id)] == [-1, 1]
    delivered = [
        c for c in fakes.telegram.sent_messages(801) if c.params["text"] == "Ваш заказ готов"
    ]
    assert len(delivered) == 1
    assert (await bridge.bridge.repo.get_job(job_id)).state is JobState.DONE  # type: ignore[union-attr]
    assert await operator.says("/failed") == "No dead-lettered jobs."
    audit = [(e.command, e.args, e.result) for e in await audit_entries(bridge.bridge.repo)]
    assert ("retry", str(job_id), "1 re-driven") in audit


async def test_redriving_what_was_delivered_sends_nothing_again(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await start(bridges)
    repo = bridge.bridge.repo
    operator = Operator(fakes)
    fakes.telegram.push_update(private_message_update(802, 1, text="Привет"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="customer message")
    long_text = "слово " * 1500
    hook = fakes.amojo.message_hook("tg-802", text=long_text)
    amo_id = hook["message"]["message"]["id"]
    await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.statuses_for(amo_id)), timeout=10)
    parts = len(fakes.telegram.sent_messages(802))
    assert parts >= 2

    # Both jobs landed, but suppose their answers were lost and they were dead-lettered anyway.
    jobs = [
        *await repo.jobs(kind=KIND_NEW_MESSAGE),
        *await repo.jobs(kind=KIND_AMO_MESSAGE),
    ]
    async with repo.transaction() as tx:
        for job in jobs:
            await tx.kill_job(job.id, "lost answer (simulated)")

    assert await operator.says("/retry all") == "2 dead-lettered job(s) back in their queues."

    async def all_done() -> bool:
        states = [await repo.get_job(job.id) for job in jobs]
        return all(job is not None and job.state is JobState.DONE for job in states)

    await wait_until(all_done, timeout=10, what="re-driven jobs done")
    assert len(fakes.telegram.sent_messages(802)) == parts
    assert len(fakes.amojo.messages) == 1
    assert fakes.amojo.attempts["tg-802-1"] == 2


async def test_retry_needs_an_id_and_is_for_operators_only(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await start(bridges)
    operator = Operator(fakes)
    assert (await operator.says("/retry")).startswith("Usage: /retry")
    assert await operator.says("/retry 99999") == "There is no job #99999."

    fakes.telegram.push_update(private_message_update(803, 1, text="/failed"))
    await fakes.amojo.wait_for(lambda: fakes.amojo.message_by_msgid("tg-803-1") is not None)
    assert all(
        "Dead-lettered" not in c.params.get("text", "") for c in fakes.telegram.sent_messages(803)
    )


async def test_a_long_failed_list_arrives_in_parts_within_telegram_limits(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    running = await start(bridges)
    fakes.amojo.fail("new_message", 400, times=25, body={"error_description": "x" * 400})
    for message_id in range(1, 26):
        fakes.telegram.push_update(private_message_update(5100 + message_id, 1, text="hi"))

    async def dead_count() -> bool:
        return len(await running.bridge.repo.jobs(state=JobState.DEAD)) == 25

    await wait_until(dead_count, timeout=20, what="25 dead letters")
    fakes.telegram.push_update(staff_message_update(OPERATOR, 1, text="/failed"))

    def parts() -> list[str]:
        return [str(call.params["text"]) for call in fakes.telegram.sent_messages(OPERATOR)]

    await fakes.telegram.wait_for(lambda: "Re-drive:" in "".join(parts()), what="whole list")
    assert len(parts()) > 1
    assert all(len(part) <= 4096 for part in parts())
    assert parts()[0].startswith("Dead-lettered jobs: 25")
    assert parts()[-1].endswith("Re-drive: /retry <id> or /retry all")


async def test_failed_reads_only_the_newest_twenty_of_a_long_history(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    TOTAL = 100_050  # noqa: N806 - more than any "load them all, then sort" cap
    running = await start(bridges)
    now = time.time()

    # The bridge writes meanwhile (heartbeat) on this event loop: insert from a thread, with
    # the write lock taken first.
    def insert() -> None:
        db = sqlite3.connect(
            running.bridge.settings.DATABASE_PATH, timeout=30, isolation_level=None
        )
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO jobs (queue, kind, lane, dedup_key, payload, state, attempts, "
                "created_at, next_attempt_at, updated_at, last_error) "
                "VALUES ('amojo', 'customer.message', ?, ?, '{}', 'dead', 1, ?, ?, ?, ?)",
                [
                    (
                        f"chat:{n}",
                        f"old-{n}",
                        now - 20000 + n / 10,
                        now,
                        now - 20000 + n / 10,
                        f"r{n}",
                    )
                    for n in range(TOTAL)
                ],
            )
            db.execute("COMMIT")
        finally:
            db.close()

    await asyncio.to_thread(insert)
    listing = await Operator(fakes).says("/failed")

    assert listing.startswith(f"Dead-lettered jobs: {TOTAL} (newest 20)")
    reasons = [line.strip() for line in listing.splitlines() if line.startswith("  ")]
    assert reasons == [f"r{n}" for n in range(TOTAL - 1, TOTAL - 21, -1)]
