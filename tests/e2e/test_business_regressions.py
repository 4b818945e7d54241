"""Telegram Business: what a hostile review found, each now a test that must keep passing."""

from __future__ import annotations

import time

from simulators.factories import private_message_update
from storage import ChatKey
from tests.e2e.test_business import (
    CHAT,
    CONNECTION,
    CUSTOMER,
    ENV,
    OWNER,
    answers,
    connect,
    connected,
    customer_writes,
)
from tests.e2e.test_manager_to_telegram import post, status_of
from tests.harness import TOKEN, BridgeFactory, Fakes

SECOND = "777001:SECOND-token-not-real"


async def test_an_owner_moving_to_another_bot_is_answered_through_the_new_one(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    """Anna moves her account from bot A to bot B. Telegram tells B 'enabled' and A
    'disabled'; the two bots are polled independently, so A's update may be handled last."""
    second = fakes.telegram.add_bot(SECOND, username="support_bot", first_name="Support")
    bridge = await bridges.start(TELEGRAM_BOT_TOKEN=f"{TOKEN},{SECOND}", **ENV)
    await connect(fakes)  # bot A, connection bc-anna-1
    await customer_writes(fakes, text="Hi")
    # B's connection first ...
    before = len(second.sent_messages(OWNER["id"]))
    second.connect_business("bc-anna-2", OWNER)
    await second.wait_for(lambda: len(second.sent_messages(OWNER["id"])) > before, what="B")
    # ... then A's removal
    await connect(fakes, enabled=False)
    route = bridge.bridge.bots.route(-OWNER["id"])
    assert route is not None and route.business_connection_id == "bc-anna-2"
    second.business_inbound[("bc-anna-2", CUSTOMER["id"])] = time.time()
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="answer"))
    status = await status_of(fakes, amo_id)
    assert status["status"] == 1, status


async def test_an_owner_edit_leaves_the_customers_profile_alone(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges)
    await customer_writes(fakes, text="Есть доставка?")
    _, mid = fakes.telegram.business_message(CONNECTION, CUSTOMER, from_owner=True, text="Да")
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="import")
    fakes.telegram.business_message(
        CONNECTION, CUSTOMER, from_owner=True, edited=True, message_id=mid, text="Да, завтра"
    )
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.edits), what="edit")
    customer = await bridge.bridge.repo.get_customer(ChatKey(-OWNER["id"], CUSTOMER["id"]))
    assert customer is not None and customer.user_id == CUSTOMER["id"], customer
    assert customer.name == "Ivan Petrov", customer


async def test_an_owner_writing_first_then_editing_opens_no_window(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    """The customer never wrote; the owner did and corrected a typo. A manager answer must be
    refused by the bridge (905/904), not sent to Telegram."""
    bridge = await connected(fakes, bridges)
    _, mid = fakes.telegram.business_message(CONNECTION, CUSTOMER, from_owner=True, text="Привет")
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="import")
    fakes.telegram.business_message(
        CONNECTION, CUSTOMER, from_owner=True, edited=True, message_id=mid, text="Привет!"
    )
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.edits), what="edit")
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="Добрый день"))
    status = await status_of(fakes, amo_id)
    assert status["error_code"] == 905, status


async def test_the_owner_pressing_a_button_is_not_the_customers_words(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges)
    await customer_writes(fakes, text="Хочу заказать")
    hook = fakes.amojo.message_hook(
        CHAT, text="Выберите", markup={"mode": "inline", "buttons": [[{"text": "Да"}]]}
    )
    assert (await status_of(fakes, await post(fakes, bridge, hook)))["status"] == 1
    [sent] = answers(fakes)
    data = sent.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    press = {
        "id": "881",
        "from": OWNER,  # Anna, in her own app, taps the button under "her" message
        "chat_instance": "1",
        "data": data,
        "message": {**fakes.telegram.sent[(501, sent.result["message_id"])]},
    }
    fakes.telegram.push_update({"callback_query": press})
    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.calls_of("answerCallbackQuery")), what="the press answered"
    )
    await customer_writes(fakes, text="marker")  # the press was handled before it
    assert [m["message"]["text"] for m in fakes.amojo.messages] == ["Хочу заказать", "marker"]


async def test_an_echo_racing_the_imports_answer_is_not_sent(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    """amoCRM echoes the owner's import as a hook before the bridge has recorded amo's id."""
    bridge = await connected(fakes, bridges)
    await customer_writes(fakes, text="Есть доставка?")
    fakes.amojo.delay(3.0)  # amojo stores the message at once, answers 3 s later
    fakes.telegram.business_message(CONNECTION, CUSTOMER, from_owner=True, text="Да, завтра")
    # Stored by amojo; its answer is still on the way when the echo comes.
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="the import")
    imported = fakes.amojo.messages[-1]
    echo = fakes.amojo.message_hook(CHAT, text="Да, завтра", msg_id=imported["amo_id"])
    await post(fakes, bridge, echo)
    fakes.amojo.delay(0)
    marker = await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="marker"))
    assert (await status_of(fakes, marker, wait=20))["status"] == 1  # after the echo's turn
    assert [c.params.get("text") for c in answers(fakes)] == ["marker"]


async def test_a_refused_account_source_is_remembered_across_a_restart(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start(AMOCRM_SOURCES="true", **ENV)
    fakes.crm.fail("/api/v4/sources", 400, times=1)  # amoCRM refuses the account's source once
    await connect(fakes)
    message = await customer_writes(fakes, text="before the restart")
    await first.stop()

    second = await bridges.start(AMOCRM_SOURCES="true", **ENV)
    after = await customer_writes(fakes, text="after the restart")  # not held for ever
    assert "source" not in message and "source" not in after
    assert second.bridge.sources.accounts[OWNER["id"]] is False


async def test_a_403_for_an_account_blocks_nothing_for_good(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await connected(fakes, bridges)
    await customer_writes(fakes, text="Привет")
    fakes.telegram.fail(
        "sendMessage", status=403, description="Forbidden: bot was blocked by the user", times=1
    )
    first = await status_of(
        fakes, await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="1"))
    )
    assert first["error_code"] == 902  # reported, and nothing remembered as "blocked"
    await customer_writes(fakes, text="Я снова тут")  # unblocked, writes again
    second = await status_of(
        fakes, await post(fakes, bridge, fakes.amojo.message_hook(CHAT, text="2"))
    )
    assert second["status"] == 1, second


async def test_a_connection_telegram_will_not_give_does_not_hold_polling(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start(**ENV)
    fakes.telegram.business["bc-unknown"] = {
        "id": "bc-unknown",
        "user": OWNER,
        "user_chat_id": OWNER["id"],
        "date": 1,
        "is_enabled": True,
        "rights": {"can_reply": True},
    }
    fakes.telegram.fail("getBusinessConnection", status=403, times=10**6)
    fakes.telegram.business_message("bc-unknown", CUSTOMER, text="через неизвестное")
    fakes.telegram.push_update(private_message_update(777, 1, text="ordinary bot chat"))
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.messages), timeout=15, what="polling")
    assert [m["message"]["text"] for m in fakes.amojo.messages] == ["ordinary bot chat"]


async def test_an_owners_repeated_update_is_one_import_and_a_deletion_says_so(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await connected(fakes, bridges)
    await customer_writes(fakes, text="Q")
    _, mid = fakes.telegram.business_message(CONNECTION, CUSTOMER, from_owner=True, text="A")
    fakes.telegram.business_message(CONNECTION, CUSTOMER, from_owner=True, message_id=mid, text="A")
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) >= 2, what="import")
    fakes.telegram.delete_business_messages(CONNECTION, CUSTOMER, [mid])
    await fakes.amojo.wait_for(lambda: bool(fakes.amojo.edits), what="deletion")
    await customer_writes(fakes, text="marker")
    texts = [m["message"]["text"] for m in fakes.amojo.messages]  # the fake edits in place
    assert texts == ["Q", "🗑 This message was deleted in Telegram.", "marker"]
