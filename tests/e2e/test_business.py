"""Telegram Business end to end: a staff member's own account connected to the bot."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from simulators.crm import CrmRequest, hal
from simulators.factories import make_contact, make_photo, make_user, staff_message_update
from tests.e2e.test_manager_to_telegram import customer_says, post, status_of
from tests.harness import (
    BridgeFactory,
    BridgeProcess,
    Fakes,
    RunningBridge,
    spawn_bridge,
    wait_until,
)

CONNECTION = "bc-anna-1"
OWNER = make_user(9100, first_name="Anna", last_name="Smirnova", language_code="en")
CUSTOMER = make_user(501, first_name="Ivan", last_name="Petrov")
CHAT = "tg-a9100-501"
BOT_AMOJO_ID = "a7d1c1d2-0000-4000-8000-00000000b0b0"
# Anna is staff: the bridge serves only staff members' accounts.
ENV: dict[str, Any] = {"AMOJO_BOT_ID": BOT_AMOJO_ID, "OPERATOR_IDS": "9100"}


async def connected(fakes: Fakes, bridges: BridgeFactory, **rights: bool) -> RunningBridge:
    """A bridge with Anna's account connected, once its owner was told."""
    bridge = await bridges.start(**ENV)
    await connect(fakes, **rights)
    return bridge


async def connect(fakes: Fakes, **rights: bool) -> str:
    """Anna (re)connects the bot; the text of the notice she gets."""
    before = len(fakes.telegram.sent_messages(OWNER["id"]))
    fakes.telegram.connect_business(CONNECTION, OWNER, **rights)
    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages(OWNER["id"])) > before, what="owner notice"
    )
    return str(fakes.telegram.sent_messages(OWNER["id"])[-1].params["text"])


async def customer_writes(fakes: Fakes, **fields: Any) -> dict[str, Any]:
    """The customer writes to Anna's account; the amojo message it became."""
    before = len(fakes.amojo.messages)
    fakes.telegram.business_message(CONNECTION, CUSTOMER, **fields)
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) > before, what="to amoCRM")
    return fakes.amojo.messages[-1]


def answers(fakes: Fakes) -> list[Any]:
    return fakes.telegram.business_sends(CONNECTION)


async def test_a_connection_is_stored_and_its_owner_told_what_is_missing(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(**ENV)
    notice = await connect(fakes, can_read=False)
    assert notice.startswith("The bot is connected to your Telegram account")
    assert '"read messages" right is missing' in notice and "reply" not in notice.split("\n")[-1]
    [stored] = await bridge.bridge.repo.business_connections()
    assert (stored.id, stored.owner_id, stored.owner_name) == (CONNECTION, 9100, "Anna Smirnova")
    assert (stored.can_reply, stored.can_read, stored.enabled) == (True, False, True)

    changed = await connect(fakes, can_reply=False)
    assert changed.startswith("The bot's connection to your account changed")
    assert '"reply to messages" right is missing' in changed
    removed = await connect(fakes, enabled=False)
    assert removed.startswith("The bot is disconnected from your account")
    [stored] = await bridge.bridge.repo.business_connections()
    assert stored.enabled is False


async def test_a_customer_writing_to_the_account_gets_a_chat_of_its_own(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await connected(fakes, bridges)
    to_bot = await customer_says(fakes, 501, 1, text="Hello bot")
    to_anna = await customer_writes(fakes, text="Hello Anna")

    assert to_bot["conversation_id"] == "tg-501"
    assert to_anna["conversation_id"] == CHAT
    assert to_anna["sender"]["id"] == to_bot["sender"]["id"] == "tg-501"  # one person
    assert to_anna["message"] == {"type": "text", "text": "Hello Anna"}
    assert "receiver" not in to_anna  # incoming


async def test_every_message_type_an_edit_and_a_deletion(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await connected(fakes, bridges)
    content = b"\x89PNG" + bytes(500)
    file_id, unique_id = fakes.telegram.add_file(content)
    photo = await customer_writes(
        fakes, photo=make_photo(file_id, unique_id, len(content)), caption="Вот фото"
    )
    assert photo["message"]["type"] == "picture" and photo["message"]["text"] == "Вот фото"
    place = await customer_writes(fakes, location={"latitude": 55.75, "longitude": 37.62})
    assert place["message"]["location"] == {"lat": 55.75, "lon": 37.62}
    card = await customer_writes(fakes, contact=make_contact("+79161234567", user_id=None))
    assert card["message"]["type"] == "contact"
    text = await customer_writes(fakes, text="Сколько стоит?")
    message_id = int(text["msgid"].rsplit("-", 1)[1])

    fakes.telegram.business_message(
        CONNECTION, CUSTOMER, message_id=message_id, edited=True, text="Сколько стоит доставка?"
    )
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.edits), what="the edit")
    assert fakes.amojo.edits[-1]["msgid"] == text["msgid"]
    assert fakes.amojo.edits[-1]["message"]["text"] == "Сколько стоит доставка?"

    fakes.telegram.delete_business_messages(CONNECTION, CUSTOMER, [message_id, 99999])
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.edits) == 2, what="the deletion")
    deletion = fakes.amojo.edits[-1]
    assert deletion["msgid"] == text["msgid"]
    assert deletion["message"] == {
        "type": "text",
        "text": "🗑 The customer deleted this message in Telegram.",
    }


async def test_the_owners_own_messages_are_imported_once_and_the_bridges_are_not(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges)
    await customer_writes(fakes, text="Есть доставка?")
    update_id, _ = fakes.telegram.business_message(
        CONNECTION, CUSTOMER, from_owner=True, text="Да, завтра"
    )
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="the import")
    imported = fakes.amojo.messages[-1]
    assert imported["conversation_id"] == CHAT
    assert imported["sender"] == {"id": "tg-9100", "name": "Anna Smirnova", "ref_id": BOT_AMOJO_ID}
    assert imported["receiver"]["id"] == "tg-501" and imported["silent"] is True
    assert imported["message"] == {"type": "text", "text": "Да, завтра"}

    # A manager answers from amoCRM: sent for Anna; Telegram shows the bot that message as
    # Anna's (the fake echoes it), and it must not come back to amoCRM.
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="Во сколько удобно?"))
    assert (await status_of(fakes, amo_id))["status"] == 1
    # amoCRM echoing the import as a hook must not reach the customer either.
    echo = fakes.amojo.message_hook(CHAT, text="Да, завтра", msg_id=imported["amo_id"])
    await post(fakes, bridge, echo)
    await fakes.telegram.wait_for(
        lambda: fakes.telegram.confirmed_offset > update_id + 1, what="the echo polled"
    )
    marker = await customer_writes(fakes, text="В 10")  # everything before it is handled
    assert [m["message"]["text"] for m in fakes.amojo.messages] == [
        "Есть доставка?",
        "Да, завтра",
        "В 10",
    ]
    assert marker["conversation_id"] == CHAT
    assert [c.params["text"] for c in answers(fakes)] == ["Во сколько удобно?"]


async def test_a_manager_answer_goes_out_for_the_account_with_inline_buttons(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges)
    await customer_writes(fakes, text="Хочу заказать")
    last = fakes.telegram.business_message(CONNECTION, CUSTOMER, text="Прямо сейчас")[1]
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="both")

    await post(fakes, bridge, fakes.amojo.typing_hook(CHAT))
    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.calls_of("sendChatAction", ok_only=True)), what="typing"
    )
    typing = fakes.telegram.calls_of("sendChatAction")[0]
    assert typing.params["business_connection_id"] == CONNECTION
    hook = fakes.amojo.message_hook(
        CHAT,
        text="Выберите",
        markup={"mode": "inline", "buttons": [[{"text": "Да"}, {"text": "Нет"}]]},
    )
    amo_id = await post(fakes, bridge, hook)
    assert (await status_of(fakes, amo_id))["status"] == 1
    [sent] = answers(fakes)
    assert sent.params["chat_id"] == 501 and sent.params["text"] == "Выберите"
    keyboard = sent.params["reply_markup"]["inline_keyboard"]
    assert [[b["text"] for b in row] for row in keyboard] == [["Да", "Нет"]]
    assert fakes.telegram.business_read == [(CONNECTION, 501, last)]

    # The customer presses "Нет": it comes back as their message.
    press = {
        "id": "771",
        "from": CUSTOMER,
        "chat_instance": "1",
        "data": keyboard[0][1]["callback_data"],
        "message": {**fakes.telegram.sent[(501, sent.result["message_id"])]},
    }
    fakes.telegram.push_update({"callback_query": press})
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 3, what="the press")
    pressed = fakes.amojo.messages[-1]
    assert (pressed["conversation_id"], pressed["message"]["text"]) == (CHAT, "Нет")
    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.calls_of("answerCallbackQuery")), what="the press answered"
    )
    [answer] = fakes.telegram.calls_of("answerCallbackQuery")
    assert str(answer.params["callback_query_id"]) == "771"


async def test_what_telegram_would_refuse_is_reported_not_sent(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges, can_reply=False)
    await customer_writes(fakes, text="Алло")
    no_rights = await status_of(
        fakes, await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="1"))
    )
    assert (no_rights["status"], no_rights["error_code"]) == (-1, 902)
    assert "reply to messages" in no_rights["error"]

    await connect(fakes)  # rights granted; the customer wrote a day and a minute ago
    old = int(time.time()) - 24 * 3600 - 60
    stale = make_user(502, first_name="Olga")
    fakes.telegram.business_message(CONNECTION, stale, text="Давно", date=old)
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="the old message")
    late = await status_of(
        fakes, await post(fakes, bridge, fakes.amojo.message_hook("tg-a9100-502", text="2"))
    )
    assert (late["status"], late["error_code"]) == (-1, 905)
    assert "24 h" in late["error"]

    await connect(fakes, enabled=False)
    gone = await status_of(
        fakes, await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="3"))
    )
    assert (gone["error_code"], gone["error"].split(" ")[:4]) == (
        902,
        ["The", "Telegram", "Business", "account"],
    )
    assert answers(fakes) == []

    # A manager cannot start a chat through the account: only its customers have that phone.
    # (Reconnected first: what comes through a removed connection is not imported.)
    await connect(fakes)
    fakes.telegram.business_message(
        CONNECTION, CUSTOMER, contact=make_contact("+79160001122", user_id=501)
    )
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 3, what="the shared phone")
    first = fakes.amojo.message_hook(None, text="Здравствуйте", receiver_phone="+79160001122")
    refused = await status_of(fakes, await post(fakes, bridge, first))
    assert refused["error_code"] == 904 and refused["error"].startswith("Writing first through")


async def test_a_manager_reaction_is_counted_not_an_error(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges)
    message = await customer_writes(fakes, text="Спасибо!")
    await post(fakes, bridge, fakes.amojo.reaction_hook(CHAT, client_msgid=message["msgid"]))

    async def counted() -> bool:
        metrics = bridge.bridge.metrics.render().decode()
        return 'bridge_business_not_shown_total{what="reaction"} 1.0' in metrics

    await wait_until(counted, what="the reaction counted")
    assert fakes.telegram.calls_of("setMessageReaction") == []
    assert await bridge.bridge.repo.newest_dead(5) == ([], 0)


async def test_messages_queued_when_the_connection_is_removed_are_each_reported(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges)
    await customer_writes(fakes, text="Жду ответа")
    fakes.telegram.fail("sendMessage", status=429, retry_after=2, times=1)
    ids = [
        await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text=f"Ответ {n}"))
        for n in range(3)
    ]
    await connect(fakes, enabled=False)
    statuses = [await status_of(fakes, amo_id, wait=20) for amo_id in ids]
    assert [(s["status"], s["error_code"]) for s in statuses] == [(-1, 902)] * 3
    assert answers(fakes) == []


def _jobs_of(db_path: Path, kind: str) -> int:
    with sqlite3.connect(db_path) as db:
        return int(db.execute("SELECT count(*) FROM jobs WHERE kind = ?", (kind,)).fetchone()[0])


async def test_kill_9_between_a_business_update_and_its_confirmation(
    fakes: Fakes, tmp_path: Path
) -> None:
    db_path = tmp_path / "bridge.sqlite3"
    children: list[BridgeProcess] = []
    try:
        first = await spawn_bridge(fakes, db_path, tmp_path / "first.log", **ENV)
        children.append(first)
        await first.wait_healthy()
        await connect(fakes)
        # Every later getUpdates fails: the update is stored, but its offset never confirmed.
        fakes.telegram.fail("getUpdates", status=502, times=10**6)
        update_id, _ = fakes.telegram.business_message(CONNECTION, CUSTOMER, text="Один раз")
        await wait_until(lambda: _jobs_of(db_path, "customer.message") == 1, what="stored")
        await first.kill()
        assert fakes.telegram.confirmed_offset <= update_id

        fakes.telegram.clear_failures()
        second = await spawn_bridge(fakes, db_path, tmp_path / "second.log", **ENV)
        children.append(second)
        await fakes.telegram.wait_for(
            lambda: fakes.telegram.confirmed_offset > update_id, timeout=30, what="confirmed"
        )
        await fakes.amojo.wait_for(lambda: bool(fakes.amojo.messages), timeout=30, what="sent")
        marker = make_user(503, first_name="Marker")
        fakes.telegram.business_message(CONNECTION, marker, text="после")
        await fakes.amojo.wait_for(
            lambda: len(fakes.amojo.messages) >= 2, timeout=30, what="marker"
        )
        texts = [m["message"]["text"] for m in fakes.amojo.messages]
        assert texts.count("Один раз") == 1 and fakes.amojo.messages[0]["conversation_id"] == CHAT
    finally:
        for child in children:
            await child.kill()


async def test_status_lists_the_connections(fakes: Fakes, bridges: BridgeFactory) -> None:
    await bridges.start(**{**ENV, "OPERATOR_IDS": "900,9100"})
    await connect(fakes, can_read=False)
    fakes.telegram.push_update(staff_message_update(900, 1, text="/status"))
    await fakes.telegram.wait_for(lambda: bool(fakes.telegram.sent_messages(900)), what="/status")
    status = str(fakes.telegram.sent_messages(900)[-1].params["text"])
    assert (
        "Telegram Business account Anna Smirnova (9100) through bot @bridge_bot: connected, "
        "may not mark messages read"
    ) in status


async def test_an_unknown_connection_is_asked_of_telegram_and_the_owners_old_edit_stays_theirs(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    # The connection was made while the bridge was not running and its update is long gone.
    fakes.telegram.business[CONNECTION] = {
        "id": CONNECTION,
        "user": OWNER,
        "user_chat_id": OWNER["id"],
        "date": int(time.time()),
        "is_enabled": True,
        "rights": {"can_reply": True, "can_read_messages": True},
    }
    bridge = await bridges.start(**ENV)
    first = await customer_writes(fakes, text="Добрый день")
    assert first["conversation_id"] == CHAT
    assert len(fakes.telegram.calls_of("getBusinessConnection")) == 1
    [stored] = await bridge.bridge.repo.business_connections()
    assert stored.owner_id == 9100

    # Anna edits what she wrote before the bridge saw it: imported as hers, not the customer's.
    fakes.telegram.business_message(
        CONNECTION, CUSTOMER, from_owner=True, edited=True, message_id=4000, text="Здравствуйте!"
    )
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="the import")
    assert fakes.amojo.messages[-1]["sender"]["ref_id"] == BOT_AMOJO_ID
    assert fakes.amojo.messages[-1]["receiver"]["id"] == "tg-501"


async def test_with_sources_each_account_is_its_own_source(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start(AMOCRM_SOURCES="true", **ENV)
    await connect(fakes)
    message = await customer_writes(fakes, text="Через аккаунт")
    assert message["source"] == {"external_id": "tg-acc-9100"}
    source = fakes.crm.source_by_external_id("tg-acc-9100")
    assert source is not None and source["name"] == "Telegram: Anna Smirnova"
    to_bot = await customer_says(fakes, 501, 1, text="Через бота")
    assert to_bot["source"]["external_id"].startswith("tg-bot-")

    hook = fakes.amojo.message_hook(
        None, text="Здравствуйте", receiver_phone="+79160001122", source_external_id="tg-acc-9100"
    )
    refused = await status_of(fakes, await post(fakes, bridge, hook))
    assert refused["error_code"] == 904 and refused["error"].startswith("Writing first through")


async def test_an_owner_mapped_to_an_amocrm_user_writes_as_that_user(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    asked: list[str] = []

    async def user(request: CrmRequest) -> web.StreamResponse:
        asked.append(request.query.get("with", ""))
        return hal({"id": 8812345, "name": "Анна", "amojo_id": "amojo-user-anna"})

    fakes.crm.add_route("GET", "/api/v4/users/8812345", user)
    await bridges.start(BUSINESS_OWNER_USERS="9100:8812345", AMOJO_BOT_ID=BOT_AMOJO_ID)
    await connect(fakes)
    await customer_writes(fakes, text="Вопрос")
    for text in ("Ответ 1", "Ответ 2"):
        fakes.telegram.business_message(CONNECTION, CUSTOMER, from_owner=True, text=text)
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 3, what="both imports")
    assert [m["sender"].get("ref_id") for m in fakes.amojo.messages[1:]] == ["amojo-user-anna"] * 2
    assert asked == ["amojo_id"]  # asked once, then remembered


async def test_an_owners_message_with_no_author_is_dead_lettered_saying_what_to_set(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    # neither AMOJO_BOT_ID nor BUSINESS_OWNER_USERS
    bridge = await bridges.start(OPERATOR_IDS="9100")
    await connect(fakes)
    await customer_writes(fakes, text="Вопрос")
    fakes.telegram.business_message(CONNECTION, CUSTOMER, from_owner=True, text="Ответ")

    async def dead() -> bool:
        return (await bridge.bridge.repo.newest_dead(5))[1] == 1

    await wait_until(dead, what="the import dead-lettered")
    [job], _ = await bridge.bridge.repo.newest_dead(5)
    assert job.kind == "business.owner_message" and "set AMOJO_BOT_ID" in (job.last_error or "")
    assert [m["message"]["text"] for m in fakes.amojo.messages] == ["Вопрос"]


async def test_a_connection_telegram_does_not_know_is_not_bridged_and_holds_nothing(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start(**ENV)
    fakes.telegram.business["bc-gone"] = {"id": "bc-gone", "user": OWNER, "is_enabled": True}
    fakes.telegram.business_message("bc-gone", CUSTOMER, text="через забытое подключение")
    del fakes.telegram.business["bc-gone"]  # getBusinessConnection: 400, no such connection
    await customer_says(fakes, 504, 1, text="обычный чат")
    assert [m["message"]["text"] for m in fakes.amojo.messages] == ["обычный чат"]
    assert len(fakes.telegram.calls_of("getBusinessConnection")) == 1
