"""Several Telegram bots in one bridge, each its own amoCRM conversation space (and source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.common.ids import primary_chat
from bot.common.settings import StartupError
from simulators.factories import (
    make_contact,
    make_photo,
    make_reaction,
    make_update,
    private_message_update,
    staff_message_update,
)
from simulators.telegram import FakeTelegram
from storage import JobState
from tests.e2e.test_manager_to_telegram import post, status_of
from tests.harness import (
    TOKEN,
    BridgeFactory,
    Fakes,
    RunningBridge,
    database_at,
    wait_health,
    wait_until,
)

SECOND = "777001:SECOND-token-not-real"
SECOND_ID = 777001
B = f"tg-b{SECOND_ID}"  # the second bot's conversation ids start so
BOTH = f"{TOKEN},{SECOND}"


@pytest.fixture
def second(fakes: Fakes) -> FakeTelegram:
    """A second bot on the fake Telegram server."""
    return fakes.telegram.add_bot(SECOND, username="support_bot", first_name="Support")


async def two_bots(bridges: BridgeFactory, **extra: Any) -> RunningBridge:
    return await bridges.start(TELEGRAM_BOT_TOKEN=BOTH, **extra)


async def amojo_count(fakes: Fakes, count: int, what: str) -> None:
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) >= count, what=what)


async def test_one_person_writing_to_two_bots_gets_two_conversations(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    await two_bots(bridges)
    fakes.telegram.push_update(private_message_update(501, 1, text="to sales"))
    second.push_update(private_message_update(501, 1, text="to support"))
    second.push_update(private_message_update(501, 2, text="again support"))
    await amojo_count(fakes, 3, "three customer messages")

    by_msgid = {m["msgid"]: m for m in fakes.amojo.messages}
    assert sorted(by_msgid) == ["tg-501-1", f"{B}-501-1", f"{B}-501-2"]
    assert len(fakes.amojo.messages) == 3  # each once
    assert by_msgid["tg-501-1"]["conversation_id"] == "tg-501"
    assert by_msgid[f"{B}-501-1"]["conversation_id"] == f"{B}-501"
    assert {m["sender"]["id"] for m in fakes.amojo.messages} == {"tg-501"}  # one contact
    assert by_msgid[f"{B}-501-1"]["message"]["text"] == "to support"
    assert all("source" not in m for m in fakes.amojo.messages)  # sources are off


async def test_each_conversation_is_answered_through_its_own_bot(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    running = await two_bots(bridges)
    fakes.telegram.push_update(private_message_update(501, 1, text="sales?"))
    second.push_update(private_message_update(501, 1, text="support?"))
    await amojo_count(fakes, 2, "both customer messages")

    to_b = await post(fakes, running, fakes.amojo.message_hook(f"{B}-501", text="support here"))
    to_a = await post(fakes, running, fakes.amojo.message_hook("tg-501", text="sales here"))
    assert (await status_of(fakes, to_b))["status"] == 1
    assert (await status_of(fakes, to_a))["status"] == 1
    assert [c.params["text"] for c in second.sent_messages(501)] == ["support here"]
    assert [c.params["text"] for c in fakes.telegram.sent_messages(501)] == ["sales here"]

    # Typing and a manager reaction stay in the second bot.
    await post(fakes, running, fakes.amojo.typing_hook(f"{B}-501"))
    await second.wait_for(lambda: bool(second.calls_of("sendChatAction")), what="typing")
    reaction = fakes.amojo.reaction_hook(f"{B}-501", client_msgid=f"{B}-501-1", emoji="👍")
    await post(fakes, running, reaction)
    await second.wait_for(lambda: bool(second.calls_of("setMessageReaction")), what="reaction")
    [react] = second.calls_of("setMessageReaction")
    assert (react.params["chat_id"], react.params["message_id"]) == (501, 1)
    assert not fakes.telegram.calls_of("sendChatAction")
    assert not fakes.telegram.calls_of("setMessageReaction")

    # A manager reply quotes the second bot's message; the customer's edit, reply and reaction
    # there reach the second conversation.
    support_amo_id = fakes.amojo.message_by_msgid(f"{B}-501-1")["amo_id"]  # type: ignore[index]
    quoted = fakes.amojo.message_hook(f"{B}-501", text="re", reply_to_amo_id=support_amo_id)
    await post(fakes, running, quoted)
    await second.wait_for(lambda: len(second.sent_messages(501)) == 2, what="the reply")
    reply = second.sent_messages(501)[-1]
    assert reply.params["reply_parameters"]["message_id"] == 1
    manager_message = second.sent_messages(501)[0].result
    second.push_update(private_message_update(501, 1, text="support? edited", edited=True))
    second.push_update(
        private_message_update(501, 5, text="thanks", reply_to_message=manager_message)
    )
    second.push_update(make_update("message_reaction", make_reaction(501, 1, new=["🔥"])))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.edits) == 1, what="the edit")
    assert fakes.amojo.edits[0]["msgid"] == f"{B}-501-1"
    await amojo_count(fakes, 3, "the customer's reply")
    answer = fakes.amojo.message_by_msgid(f"{B}-501-5")
    assert answer is not None and answer["conversation_id"] == f"{B}-501"
    assert answer["reply_to"] == {"message": {"id": to_b}}
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.reactions), what="customer reaction")
    assert fakes.amojo.reactions[-1]["conversation_id"] == f"{B}-501"
    assert fakes.amojo.reactions[-1]["msgid"] == f"{B}-501-1"


async def test_staff_commands_answer_in_the_bot_they_were_sent_to(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    await two_bots(bridges, OPERATOR_IDS="900")
    second.push_update(staff_message_update(900, 1, text="/status"))
    await second.wait_for(lambda: bool(second.sent_messages(900)), what="the /status answer")
    text = second.sent_messages(900)[0].params["text"]
    assert "Bot @bridge_bot (primary): polling" in text
    assert "Bot @support_bot: polling" in text
    assert not fakes.telegram.sent_messages(900)
    assert not fakes.amojo.messages  # a command is not bridged


def version_10_database(path: Path) -> None:
    """A database as the single-bot bridge left it (schema 10), with one customer chat."""
    with database_at(path, 10) as db:
        db.execute(
            "INSERT INTO customers (chat_id, user_id, name, phone, last_message_at, updated_at) "
            "VALUES (501, 501, 'Old customer', '+79161234567', strftime('%s','now'), 0)"
        )
        db.execute(
            "INSERT INTO message_links (chat_id, tg_message_id, direction, our_msgid, "
            "amo_message_id, created_at) VALUES (501, 7, 'in', 'tg-501-7', 'amo-old-7', 0)"
        )
        db.execute("INSERT INTO kv (key, value) VALUES ('files.key', ?)", ("ab" * 32,))
    db.close()


async def test_a_single_bot_database_upgrades_to_two_bots(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    version_10_database(bridges.db_path)
    # The old database does not say which bot its chats are: a second token waits until the
    # old bot's token alone has started once (and been remembered).
    with pytest.raises(StartupError) as refused:
        await two_bots(bridges)
    assert "Start once with that bot's token alone" in str(refused.value)
    await bridges.start()
    await bridges.stop_all()
    running = await two_bots(bridges)

    customer = await running.bridge.repo.get_customer(primary_chat(501))
    assert customer is not None and customer.name == "Old customer" and customer.bot == 0
    # The primary bot's chat keeps its ids: a manager reply to the old message arrives, quoted.
    hook = fakes.amojo.message_hook("tg-501", text="still here", reply_to_amo_id="amo-old-7")
    assert (await status_of(fakes, await post(fakes, running, hook)))["status"] == 1
    [sent] = fakes.telegram.sent_messages(501)
    assert sent.params["reply_parameters"]["message_id"] == 7
    assert not second.sent_messages()
    # Write-first by the phone the old customer shared still finds them (primary bot).
    first = fakes.amojo.message_hook(None, text="by phone", receiver_phone="+7 916 123-45-67")
    assert (await status_of(fakes, await post(fakes, running, first)))["status"] == 1
    fakes.telegram.push_update(private_message_update(501, 8, text="new one"))
    await amojo_count(fakes, 1, "a new message")
    assert fakes.amojo.messages[0]["msgid"] == "tg-501-8"


async def test_restarting_with_a_second_bot_keeps_the_first_bots_chats(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    first = await bridges.start()
    fakes.telegram.push_update(private_message_update(501, 1, text="before"))
    await amojo_count(fakes, 1, "the first message")
    await bridges.stop_all()
    assert first.task.done()

    running = await two_bots(bridges)
    hook = fakes.amojo.message_hook("tg-501", text="after the upgrade")
    assert (await status_of(fakes, await post(fakes, running, hook)))["status"] == 1
    assert [c.params["text"] for c in fakes.telegram.sent_messages(501)] == ["after the upgrade"]


async def test_the_first_token_must_stay_the_primary_bot(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    await bridges.start()
    await bridges.stop_all()
    with pytest.raises(StartupError) as refused:
        await bridges.start(TELEGRAM_BOT_TOKEN=f"{SECOND},{TOKEN}")
    assert f"first token is bot {SECOND_ID}" in str(refused.value)
    assert "SECOND-token" not in str(refused.value)


async def test_a_rejected_second_token_is_named_without_its_secret(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    with pytest.raises(StartupError) as refused:
        await bridges.start(TELEGRAM_BOT_TOKEN=f"{TOKEN},555:NOT-A-KNOWN-TOKEN")
    assert "token 2 (bot 555)" in str(refused.value)
    assert "NOT-A-KNOWN" not in str(refused.value)


async def test_a_revoked_bot_stops_while_the_other_keeps_bridging(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    running = await two_bots(bridges)
    second.push_update(private_message_update(601, 1, text="before"))
    await amojo_count(fakes, 1, "the second bot works")

    second.revoke()
    status, body = await wait_health(
        running.url, lambda status, body: any("@support_bot" in p for p in body["problems"])
    )
    assert (status, body["status"]) == (200, "degraded")  # the other bot works
    assert any("stopped" in p and str(SECOND_ID) in p for p in body["problems"])
    assert [(b["id"], b["polling"]) for b in body["bots"]] == [(123456, True), (SECOND_ID, False)]
    metrics = running.bridge.metrics.render().decode()
    assert f'bridge_telegram_bot_polling{{bot="{SECOND_ID}"}} 0.0' in metrics
    assert "SECOND-token" not in metrics and "SECOND-token" not in str(body)

    fakes.telegram.push_update(private_message_update(602, 1, text="after"))
    await amojo_count(fakes, 2, "the first bot still bridges in")
    hook = fakes.amojo.message_hook("tg-602", text="answer")
    assert (await status_of(fakes, await post(fakes, running, hook)))["status"] == 1
    assert [c.params["text"] for c in fakes.telegram.sent_messages(602)] == ["answer"]


async def test_a_manager_message_to_a_revoked_bot_waits_and_is_not_lost(
    fakes: Fakes,
    bridges: BridgeFactory,
    second: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bot.jobs.worker.TELEGRAM_UNAUTHORIZED_RETRY_SECONDS", 0.3)
    running = await two_bots(bridges)
    second.push_update(private_message_update(604, 1, text="hello"))
    await amojo_count(fakes, 1, "the customer")
    second.revoke()
    amo_id = await post(fakes, running, fakes.amojo.message_hook(f"{B}-604", text="kept"))

    async def retried() -> bool:
        jobs = await running.bridge.repo.jobs(kind="amo.message")
        return bool(jobs) and jobs[0].attempts >= 2 and jobs[0].state is JobState.PENDING

    await wait_until(retried, what="the send retried, not dead-lettered")
    assert not fakes.amojo.statuses_for(amo_id)
    second.revoked = False  # a restart with the new token would do the same
    assert (await status_of(fakes, amo_id))["status"] == 1
    assert [c.params["text"] for c in second.sent_messages(604)] == ["kept"]


async def test_a_bot_whose_token_works_again_is_polled_again(
    fakes: Fakes,
    bridges: BridgeFactory,
    second: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bot.customer.middlewares.REVOKED_PROBE_SECONDS", 0.2)
    running = await two_bots(bridges)
    second.revoke()
    await wait_health(running.url, lambda status, body: not body["bots"][1]["polling"])
    second.revoked = False  # Telegram's 401 was a passing mistake
    second.push_update(private_message_update(603, 1, text="heard again"))
    await amojo_count(fakes, 1, "the second bot polled again")
    status, body = await wait_health(running.url, lambda status, body: body["status"] == "ok")
    assert status == 200
    assert body["bots"][1]["polling"] and not running.bridge.bots.revoked


# ---- sources -------------------------------------------------------------------------------


async def test_sources_are_made_once_and_tag_every_message(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    settings = {"AMOCRM_SOURCES": "true", "AMOCRM_SOURCE_PIPELINES": f"{SECOND_ID}:4401"}
    await two_bots(bridges, **settings)
    made = {s["external_id"]: s for s in fakes.crm.sources.values()}
    assert set(made) == {"tg-bot-123456", f"tg-bot-{SECOND_ID}"}
    assert made[f"tg-bot-{SECOND_ID}"]["name"] == "Telegram: Support"
    assert made[f"tg-bot-{SECOND_ID}"]["pipeline_id"] == 4401

    fakes.telegram.push_update(private_message_update(501, 1, text="a"))
    second.push_update(private_message_update(501, 1, text="b"))
    await amojo_count(fakes, 2, "both messages")
    sources = {m["conversation_id"]: m["source"]["external_id"] for m in fakes.amojo.messages}
    assert sources == {"tg-501": "tg-bot-123456", f"{B}-501": f"tg-bot-{SECOND_ID}"}

    await bridges.stop_all()
    await two_bots(bridges, **settings)
    assert len(fakes.crm.requests_to("/api/v4/sources", "POST")) == 1  # found, not made again
    assert len(fakes.crm.sources) == 2
    assert not fakes.crm.requests_to("/api/v4/sources", "PATCH")

    await bridges.stop_all()  # a new pipeline for the second bot: its source is updated
    await two_bots(bridges, AMOCRM_SOURCES="true", AMOCRM_SOURCE_PIPELINES=f"{SECOND_ID}:4402")
    # Known sources are checked in the background: polling does not wait for amoCRM.
    await wait_until(
        lambda: len(fakes.crm.requests_to("/api/v4/sources", "PATCH")) == 1, what="PATCH"
    )
    assert fakes.crm.source_by_external_id(f"tg-bot-{SECOND_ID}")["pipeline_id"] == 4402  # type: ignore[index]
    assert len(fakes.crm.sources) == 2


async def test_write_first_reaches_the_customer_of_the_chosen_source(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    running = await two_bots(bridges, AMOCRM_SOURCES="true")
    phone = "+79161234567"
    for fake, chat in ((fakes.telegram, 701), (second, 702)):
        contact = make_contact(phone, user_id=chat)
        fake.push_update(private_message_update(chat, 1, contact=contact))
    await amojo_count(fakes, 2, "both phones shared")

    hook = fakes.amojo.message_hook(
        None, text="we called you", receiver_phone=phone, source_external_id=f"tg-bot-{SECOND_ID}"
    )
    assert (await status_of(fakes, await post(fakes, running, hook)))["status"] == 1
    assert [c.params["text"] for c in second.sent_messages(702)][-1] == "we called you"
    assert all(c.params.get("text") != "we called you" for c in fakes.telegram.sent_messages())

    unknown = fakes.amojo.message_hook(
        None, text="?", receiver_phone=phone, source_external_id="someone-else"
    )
    report = await status_of(fakes, await post(fakes, running, unknown))
    assert (report["status"], report["error_code"]) == (-1, 904)

    # The bound chat is the second bot's: a later hook naming the first bot's source is 904.
    bound_to = hook["message"]["conversation"]["id"]
    crossed = fakes.amojo.message_hook(
        None, text="wrong bot", amo_conversation_id=bound_to, source_external_id="tg-bot-123456"
    )
    report = await status_of(fakes, await post(fakes, running, crossed))
    assert (report["status"], report["error_code"]) == (-1, 904)
    assert all(c.params.get("text") != "wrong bot" for c in second.sent_messages())


async def test_known_sources_do_not_hold_polling_while_amocrm_is_down(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    await two_bots(bridges, AMOCRM_SOURCES="true")
    await bridges.stop_all()
    fakes.crm.fail("/api/v4/sources", 503, times=1000)
    await two_bots(bridges, AMOCRM_SOURCES="true")
    second.push_update(private_message_update(504, 1, text="while amoCRM is down"))
    await amojo_count(fakes, 1, "the message")
    assert fakes.amojo.messages[0]["source"] == {"external_id": f"tg-bot-{SECOND_ID}"}


async def test_a_refused_check_of_known_sources_keeps_them_and_says_so(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    await two_bots(bridges, AMOCRM_SOURCES="true")
    await bridges.stop_all()
    fakes.crm.fail("/api/v4/sources", 403, times=1000)  # e.g. the token's user lost admin rights
    running = await two_bots(bridges, AMOCRM_SOURCES="true")
    status, body = await wait_health(
        running.url, lambda status, body: any("sources not checked" in p for p in body["problems"])
    )
    assert (status, body["status"]) == (200, "degraded")
    assert any("administrator" in p for p in body["problems"])
    second.push_update(private_message_update(505, 1, text="still tagged"))
    await amojo_count(fakes, 1, "the message")
    assert fakes.amojo.messages[0]["source"] == {"external_id": f"tg-bot-{SECOND_ID}"}


async def test_without_sources_a_phone_shared_in_two_bots_is_not_guessed(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    running = await two_bots(bridges)
    phone = "+79161234567"
    for fake, chat in ((fakes.telegram, 701), (second, 702)):
        fake.push_update(private_message_update(chat, 1, contact=make_contact(phone, user_id=chat)))
    await amojo_count(fakes, 2, "both phones shared")
    hook = fakes.amojo.message_hook(None, text="?", receiver_phone=phone)
    report = await status_of(fakes, await post(fakes, running, hook))
    assert (report["status"], report["error_code"]) == (-1, 904)


async def test_a_second_bots_file_link_downloads_through_that_bot(
    fakes: Fakes, bridges: BridgeFactory, second: FakeTelegram
) -> None:
    await two_bots(bridges)
    content = bytes(range(256)) * 40
    file_id, unique_id = second.add_file(content)
    photo = make_photo(file_id, unique_id, len(content))
    second.push_update(private_message_update(501, 3, caption="photo", photo=photo))
    await amojo_count(fakes, 1, "the photo")

    link = fakes.amojo.messages[0]["message"]["media"]
    assert "SECOND-token" not in link
    async with aiohttp.ClientSession() as http, http.get(link) as response:
        assert response.status == 200
        assert await response.read() == content
    assert second.downloads and not fakes.telegram.downloads
