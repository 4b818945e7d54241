"""Ways a message was lost or sent twice while running (issue "five ways"), end to end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.amocrm.channel import Channel
from bot.amocrm.hooks import HookNotStored, HookReceiver
from bot.common.metrics import Metrics
from simulators.factories import make_user, private_message_update, staff_message_update
from storage import JobState, NewJob, open_repository
from storage.crm import audit_entries
from tests.e2e.test_manager_to_telegram import customer_says, share_phone, status_of
from tests.harness import BridgeFactory, Fakes, RunningBridge, database_at, wait_until

OPERATOR = 900


async def health(bridge: RunningBridge) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{bridge.url}/healthz") as response:
        return response.status, await response.json()


# ---- 2. one bad hook must not take its batch down ------------------------------------------


async def test_a_hook_with_a_lone_surrogate_is_stored_with_its_batch(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 651, 1)
    good = fakes.amojo.message_hook("tg-651", text="Добрый день")
    cut = fakes.amojo.message_hook("tg-651", text="Текст обрезан \ud83d")  # cut inside an emoji
    results = await asyncio.gather(
        fakes.amojo.post_hook(bridge.url, bridge.scope_id, good),
        fakes.amojo.post_hook(bridge.url, bridge.scope_id, cut),
    )
    assert [status for status, _ in results] == [200, 200]

    for hook in (good, cut):
        assert (await status_of(fakes, hook["message"]["message"]["id"]))["status"] == 1
    texts = [call.params["text"] for call in fakes.telegram.sent_messages(651)]
    assert texts == ["Добрый день", "Текст обрезан \ufffd"]
    # Stored losslessly: the job still holds the very character amojo sent.
    [stored] = [
        job
        for job in await bridge.bridge.repo.jobs(kind="amo.message")
        if job.dedup_key == f"hook:{cut['message']['message']['id']}"
    ]
    assert stored.payload["hook"]["message"]["message"]["text"].endswith("\ud83d")


async def test_any_failure_in_a_batch_fails_only_its_own_hook(tmp_path: Path) -> None:
    repo = await open_repository(tmp_path / "bridge.sqlite3")
    try:
        receiver = HookReceiver(repo, Channel("scope", "account"), "secret", Metrics())

        def job(key: str, payload: dict[str, Any]) -> NewJob:
            return NewJob(
                queue="telegram", kind="amo.message", lane="l", dedup_key=key, payload=payload
            )

        results = await asyncio.gather(
            receiver.store(job("good-1", {"ok": 1})),
            receiver.store(job("bad", {"unserialisable": object()})),
            receiver.store(job("good-2", {"ok": 2})),
            return_exceptions=True,
        )
        assert results[0] is True and results[2] is True
        assert isinstance(results[1], TypeError)
        assert {job.dedup_key for job in await repo.jobs()} == {"good-1", "good-2"}
    finally:
        await repo.close()


async def test_a_cancelled_flusher_answers_every_waiting_hook(tmp_path: Path) -> None:
    """The loop closing mid-batch must not leave a hook waiting for an answer forever."""
    repo = await open_repository(tmp_path / "bridge.sqlite3")
    try:
        receiver = HookReceiver(repo, Channel("scope", "account"), "secret", Metrics())
        stores = [
            asyncio.create_task(
                receiver.store(NewJob("telegram", "amo.message", "l", f"k{i}", {"i": i}))
            )
            for i in range(3)
        ]
        await asyncio.sleep(0)
        assert receiver._flusher is not None
        receiver._flusher.cancel()
        results = await asyncio.wait_for(asyncio.gather(*stores, return_exceptions=True), timeout=5)
        assert all(r is True or isinstance(r, HookNotStored) for r in results), results
    finally:
        await repo.close()


# ---- 3. a clock that is off -----------------------------------------------------------------


async def test_a_skewed_clock_is_followed_and_reported(fakes: Fakes, bridge: RunningBridge) -> None:
    fakes.amojo.now = lambda: time.time() + 20 * 60  # our clock is 20 min behind amojo's
    fakes.telegram.push_update(private_message_update(661, 1, text="Часы отстают"))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="message")
    assert ("/v2/origin/custom/" + bridge.scope_id, "date") in fakes.amojo.rejected
    assert await bridge.bridge.repo.jobs(state=JobState.DEAD) == []
    status, body = await health(bridge)
    assert status == 200
    assert body["status"] == "degraded"
    assert any(problem.startswith("clock skew?") for problem in body["problems"])

    fakes.amojo.now = time.time  # the server's time sync is fixed
    await customer_says(fakes, 661, 2, text="Часы исправлены")
    status, body = await health(bridge)
    assert (status, body["status"]) == (200, "ok"), body


async def test_signature_refusals_are_retried_not_dead_lettered(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    fakes.amojo.fail("new_message", 403, times=3)
    fakes.telegram.push_update(private_message_update(662, 1, text="Подпись"))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="message")
    assert [r.status for r in fakes.amojo.requests if r.path.endswith(bridge.scope_id)] == [
        403,
        403,
        403,
        200,
    ]
    assert await bridge.bridge.repo.jobs(state=JobState.DEAD) == []
    assert bridge.bridge.amojo.signature_refused_at is None  # cleared by the success


async def test_refusals_show_in_health_while_they_last(fakes: Fakes, bridge: RunningBridge) -> None:
    fakes.amojo.fail("new_message", 403, times=1000)
    fakes.telegram.push_update(private_message_update(663, 1, text="Подпись"))

    async def unhealthy() -> bool:
        status, body = await health(bridge)
        return status == 503 and any("refused the signature" in p for p in body["problems"])

    await wait_until(unhealthy, what="signature refusal in /healthz")


async def test_new_dead_letters_make_health_degraded(fakes: Fakes, bridge: RunningBridge) -> None:
    fakes.amojo.fail("new_message", 400, times=1, body={"error_description": "bad data"})
    fakes.telegram.push_update(private_message_update(664, 1, text="Плохие данные"))

    async def dead() -> bool:
        return bool(await bridge.bridge.repo.jobs(state=JobState.DEAD))

    await wait_until(dead, what="dead letter")
    status, body = await health(bridge)
    assert (status, body["status"]) == (200, "degraded")
    assert any("dead-lettered in the last 60 min" in p for p in body["problems"])


# ---- 4. write-first by the whole number -----------------------------------------------------


async def test_write_first_matches_the_whole_number(fakes: Fakes, bridge: RunningBridge) -> None:
    await share_phone(fakes, 672, "+7 916 123-45-67", own=True)
    await share_phone(fakes, 671, "+1 916 123-4567", own=True)  # same last ten digits, newer
    hook = fakes.amojo.message_hook(None, text="Для России", receiver_phone="89161234567")
    status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    assert status == 200

    assert (await status_of(fakes, hook["message"]["message"]["id"]))["status"] == 1
    assert [c.params.get("text") for c in fakes.telegram.sent_messages(672)][-1] == "Для России"
    assert all(c.params.get("text") != "Для России" for c in fakes.telegram.sent_messages(671))


async def test_write_first_to_a_phone_two_customers_share_is_904(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await share_phone(fakes, 673, "+7 916 555-00-11", own=True)
    await share_phone(fakes, 674, "8 (916) 555-00-11", own=True)
    hook = fakes.amojo.message_hook(None, text="Кому?", receiver_phone="+79165550011")
    status, _ = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    assert status == 200

    report = await status_of(fakes, hook["message"]["message"]["id"])
    assert (report["status"], report["error_code"]) == (-1, 904)
    assert "Several Telegram customers shared this phone" in report["error"]
    assert all(c.params.get("text") != "Кому?" for c in fakes.telegram.sent_messages())


async def test_upgrade_keeps_shared_phones_matchable(tmp_path: Path) -> None:
    """A database from before migration 7 (phones keyed by their last ten digits) migrates."""
    path = tmp_path / "old.sqlite3"
    with database_at(path, 5) as conn:
        conn.execute(
            "INSERT INTO customers (chat_id, user_id, phone, phone_last10, updated_at) "
            "VALUES (681, 681, '+79161234567', '9161234567', 0)"
        )
    conn.close()
    repo = await open_repository(path)
    try:
        [customer] = await repo.customers_with_phone("+79161234567")
        assert customer.chat_id == 681
        assert await repo.customers_with_phone("+19161234567") == []
    finally:
        await repo.close()


# ---- 5. edits and "duplicates" --------------------------------------------------------------


async def test_an_edit_back_and_forth_reaches_amocrm_every_time(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 691, 1, text="A")
    for text in ("B", "A", "B"):
        fakes.telegram.push_update(private_message_update(691, 1, text=text, edited=True))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.edits) == 3, what="three edits")
    assert [edit["message"]["text"] for edit in fakes.amojo.edits] == ["B", "A", "B"]
    assert fakes.amojo.message_by_msgid("tg-691-1")["message"]["text"] == "B"  # type: ignore[index]


@pytest.mark.parametrize(
    ("description", "state"),
    [
        pytest.param("payload.msgid: invalid format", JobState.DEAD, id="msgid-not-duplicate"),
        pytest.param("message already exists", JobState.DONE, id="says-duplicate"),
    ],
)
async def test_only_a_400_that_says_duplicate_after_a_retry_counts_as_delivered(
    fakes: Fakes, bridge: RunningBridge, description: str, state: JobState
) -> None:
    fakes.amojo.fail("new_message", 503, times=1)
    fakes.amojo.fail("new_message", 400, times=1, body={"error_description": description})
    fakes.telegram.push_update(private_message_update(692, 1, text="Повтор?"))

    async def settled() -> list[Any]:
        return [
            job
            for job in await bridge.bridge.repo.jobs(kind="customer.message")
            if job.state != JobState.PENDING
        ]

    await wait_until(lambda: _non_empty(settled()), what="job settled")
    [job] = await settled()
    assert job.state == state
    if state == JobState.DEAD:
        assert description in (job.last_error or "")


async def _non_empty(pending: Any) -> bool:
    return bool(await pending)


# ---- operators: only their own new messages are commands ------------------------------------


async def test_operator_edits_and_forwards_never_run_or_bridge(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(OPERATOR_IDS=str(OPERATOR))
    fakes.crm.add_talk(117)
    fakes.telegram.push_update(
        staff_message_update(OPERATOR, 1, text="/call +79161234567 2:30", edited=True)
    )
    origin = {"type": "user", "date": 1_700_000_000, "sender_user": make_user(555)}
    fakes.telegram.push_update(
        staff_message_update(OPERATOR, 2, text="/close 117", forward_origin=origin)
    )
    # A plain customer message after both: once it is bridged, both updates were handled.
    fakes.telegram.push_update(private_message_update(694, 1, text="после"))

    await fakes.amojo.wait_for(lambda: fakes.amojo.message_by_msgid("tg-694-1") is not None)
    assert fakes.crm.talks[117]["is_in_work"] is True
    assert [r.path for r in fakes.crm.requests if r.path.startswith("/api/v4/calls")] == []
    assert await audit_entries(bridge.bridge.repo) == []
    # The edit is not bridged; the forward is an ordinary message, not a command.
    assert fakes.amojo.edits == []
    assert [m["msgid"] for m in fakes.amojo.messages_for(f"tg-{OPERATOR}")] == [f"tg-{OPERATOR}-2"]
