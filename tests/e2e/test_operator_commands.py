"""Staff commands end to end: the real bridge against the fake Telegram, amojo and CRM REST."""

from __future__ import annotations

from typing import Any

import pytest

from bot.staff.desk import Invocation, staff_job
from simulators.factories import private_message_update, staff_message_update
from storage.crm import audit_entries, load_token_pair
from tests.harness import BridgeFactory, Fakes, RunningBridge, wait_until

OPERATOR = 900
OTHER_OPERATOR = 901
CUSTOMER = 501
STAFF: dict[str, Any] = {
    "OPERATOR_IDS": f"{OPERATOR},{OTHER_OPERATOR}",
    "TIMEZONE": "Europe/Moscow",
}


@pytest.fixture
async def staff_bridge(bridges: BridgeFactory) -> RunningBridge:
    return await bridges.start(CALL_SOURCE="bridge-test", **STAFF)


class Operator:
    """Sends commands as one Telegram user and waits for the bot's answer."""

    def __init__(self, fakes: Fakes, user_id: int = OPERATOR) -> None:
        self.fakes = fakes
        self.user_id = user_id
        self.message_id = 0

    async def ask(self, text: str, *, message_id: int | None = None) -> str:
        """The bot's reply to `text`."""
        telegram = self.fakes.telegram
        before = len(telegram.sent_messages(self.user_id))
        if message_id is None:
            self.message_id += 1
            message_id = self.message_id
        telegram.push_update(staff_message_update(self.user_id, message_id, text=text))
        await telegram.wait_for(
            lambda: len(telegram.sent_messages(self.user_id)) > before, what=f"reply to {text}"
        )
        return str(telegram.sent_messages(self.user_id)[-1].params["text"])


def crm_calls(fakes: Fakes, prefix: str) -> list[str]:
    return [f"{r.method} {r.path}" for r in fakes.crm.requests if r.path.startswith(prefix)]


async def test_talk_shows_state_links_times_and_nps(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_talk(117, rate=9, created_at=1700000000, missed_at=1700000600)

    reply = await Operator(fakes).ask("/talk 117")

    base = fakes.crm.url
    assert reply.splitlines()[:4] == [
        "Talk 117: open, unread",
        "Origin: telegram",
        f"Contact 3102959: {base}/contacts/detail/3102959",
        f"Lead 15926745: {base}/leads/detail/15926745",
    ]
    assert "Created: 2023-11-15 01:13:20 MSK" in reply
    assert "Missed: 2023-11-15 01:23:20 MSK" in reply
    assert reply.endswith("NPS: 9")
    [entry] = await audit_entries(staff_bridge.bridge.repo)
    assert (entry.user_id, entry.command, entry.args, entry.result) == (
        OPERATOR,
        "talk",
        "117",
        "ok",
    )


async def test_an_answer_hit_by_flood_control_is_sent_after_retry_after(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_talk(117)
    fakes.telegram.fail("sendMessage", status=429, retry_after=1, chat_id=OPERATOR)

    reply = await Operator(fakes).ask("/talk 117")

    assert reply.startswith("Talk 117: open")
    refused, sent = fakes.telegram.calls_of("sendMessage")
    assert refused.status == 429
    assert sent.at - refused.at >= 1.0 - 0.02
    assert len(fakes.telegram.sent_messages(OPERATOR)) == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, "amoCRM rejected the access token (401)"),
        (402, "The amoCRM account is not paid (402)"),
        (403, "No rights for this in amoCRM (403)"),
    ],
)
async def test_talk_explains_crm_refusals(
    fakes: Fakes, staff_bridge: RunningBridge, status: int, expected: str
) -> None:
    fakes.crm.add_talk(117)
    fakes.crm.fail("/api/v4/talks/117", status)
    assert (await Operator(fakes).ask("/talk 117")).startswith(expected)


async def test_talk_not_found(fakes: Fakes, staff_bridge: RunningBridge) -> None:
    assert await Operator(fakes).ask("/talk 404") == "Talk 404 not found."


async def test_close_force_nps_already_closed_and_not_found(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_talk(117)
    fakes.crm.add_talk(118)
    operator = Operator(fakes)

    assert await operator.ask("/close 117") == "Talk 117: closed (without NPS)."
    assert await operator.ask("/close 117") == "Talk 117 is already closed or closing."
    assert "NPS bot" in await operator.ask("/close 118 nps")
    assert await operator.ask("/close 999") == "Talk 999 not found."

    assert fakes.crm.closes == [(117, True), (118, False)]
    bodies = [r.json for r in fakes.crm.requests if r.path.endswith("/close")]
    assert [body["force_close"] for body in bodies] == [True, True, False, True]
    results = [(e.command, e.args, e.result) for e in await audit_entries(staff_bridge.bridge.repo)]
    assert results == [
        ("close", "117", "closed"),
        ("close", "117", "422"),
        ("close", "118 nps", "closing"),
        ("close", "999", "404: Not Found; Talk not found"),
    ]


async def test_call_is_logged_once_and_reports_where_it_went(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_phone("+7 916 123-45-67", "lead", 15926745)
    operator = Operator(fakes)

    text = "/call 8(916)123-45-67 2:30 in talked Asked about delivery"
    reply = await operator.ask(text)
    # The same update again (re-delivered after a crash): amoCRM keeps one call (`uniq`) and
    # the answer, keyed by the command's message, is not sent a second time.
    again = fakes.telegram.push_update(
        staff_message_update(OPERATOR, operator.message_id, text=text)
    )
    await fakes.telegram.wait_for(
        lambda: fakes.telegram.confirmed_offset > again, what="the repeated update handled"
    )

    link = f"{fakes.crm.url}/leads/detail/15926745"
    assert reply.startswith(f"Call logged to lead 15926745: {link}")
    assert len(fakes.telegram.sent_messages(OPERATOR)) == 1
    [call] = fakes.crm.calls
    assert {k: call[k] for k in ("phone", "duration", "direction", "source", "uniq")} == {
        "phone": "+79161234567",
        "duration": 150,
        "direction": "inbound",
        "source": "bridge-test",
        "uniq": f"tg-call-{OPERATOR}-1",
    }
    assert (call["call_status"], call["call_result"]) == (4, "Asked about delivery")
    # The repeated update finds the command's job already stored: amoCRM is asked once.
    assert len(crm_calls(fakes, "/api/v4/calls")) == 1


async def test_call_defaults_to_outbound_contact(fakes: Fakes, staff_bridge: RunningBridge) -> None:
    fakes.crm.add_phone("79161234567", "contact", 3102959)
    reply = await Operator(fakes).ask("/call +79161234567 150")
    assert reply.startswith(f"Call logged to contact 3102959: {fakes.crm.url}/contacts/detail/")
    assert fakes.crm.calls[0]["direction"] == "outbound"
    assert "call_status" not in fakes.crm.calls[0]


async def test_call_takes_the_phone_as_readme_shows_it(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_phone("79161234567", "contact", 3102959)
    operator = Operator(fakes)
    for text in ("/call +7 916 123-45-67 2:30 in talked Agreed", "/call 8 (916) 123 45 67 150 4"):
        reply = await operator.ask(text)
        assert reply.startswith("Call logged to contact 3102959"), reply
    first, second = fakes.crm.calls
    assert (first["phone"], first["duration"], first["direction"]) == (
        "+79161234567",
        150,
        "inbound",
    )
    assert (first["call_status"], first["call_result"]) == (4, "Agreed")
    assert (second["phone"], second["duration"], second["call_status"]) == ("+79161234567", 150, 4)


async def test_unknown_operator_command_is_answered_not_bridged(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    operator = Operator(fakes)
    assert await operator.ask("/tlak 117") == "Unknown command /tlak, see /help"
    assert await operator.ask("/Stats@bridge_bot") == "Unknown command /Stats@bridge_bot, see /help"
    assert (await operator.ask("/help")).startswith("Staff commands:")
    assert fakes.amojo.messages == []


async def test_call_attached_nowhere_or_rejected(fakes: Fakes, staff_bridge: RunningBridge) -> None:
    operator = Operator(fakes)
    nowhere = await operator.ask("/call +79990000000 1m5s out busy")
    assert nowhere.startswith("Call not logged: amoCRM attached it nowhere (Entity not found)")

    fakes.crm.fail("/api/v4/calls", 400)
    rejected = await operator.ask("/call +79990000000 65")
    assert rejected == "amoCRM rejected the call: Bad Request; Injected failure"
    assert fakes.crm.calls == []


@pytest.mark.parametrize(
    ("text", "example"),
    [
        ("/talk", "/talk 117"),
        ("/talk abc", "/talk 117"),
        ("/close", "/close 117"),
        ("/close 12x", "/close 117"),
        ("/call +79161234567", "/call +79161234567 2:30"),
        ("/call +79161234567 forever", "/call +79161234567 2:30"),
        ("/call +79161234567 150 sideways", "/call +79161234567 2:30"),
        ("/call +79161234567 150 in 9", "/call +79161234567 2:30"),
        ("/call 12345 150", "/call +79161234567 2:30"),
    ],
)
async def test_bad_input_gets_usage_and_no_crm_call(
    fakes: Fakes, staff_bridge: RunningBridge, text: str, example: str
) -> None:
    reply = await Operator(fakes).ask(text)
    assert f"Example: {example}" in reply
    assert crm_calls(fakes, "/api/v4/talks") == crm_calls(fakes, "/api/v4/calls") == []
    [entry] = await audit_entries(staff_bridge.bridge.repo)
    assert entry.result == "usage"


async def test_non_operator_commands_are_ordinary_customer_messages(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_talk(117)
    for message_id, text in enumerate(["/close 117", "/help", "/talk 117"], start=1):
        fakes.telegram.push_update(private_message_update(CUSTOMER, message_id, text=text))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 3, what="3 messages")
    texts = [m["message"]["text"] for m in fakes.amojo.messages]
    assert texts == ["/close 117", "/help", "/talk 117"]
    assert fakes.crm.talks[117]["is_in_work"] is True
    assert crm_calls(fakes, "/api/v4/talks") == []
    assert fakes.telegram.sent_messages(CUSTOMER) == []
    assert await audit_entries(staff_bridge.bridge.repo) == []


async def test_menu_is_set_for_each_operator_chat_only(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    fakes.telegram.fail("setMyCommands", status=400)  # the first operator never opened the bot
    await bridges.start(**STAFF)

    calls = fakes.telegram.calls_of("setMyCommands")
    # The first operator's chat does not exist yet: one refusal, and their other lists are
    # not tried. The second gets the default list (the account's language: English here),
    # and the Russian and English lists Telegram shows by the operator's language.
    assert [(c.params["scope"], c.params.get("language_code")) for c in calls] == [
        ({"type": "chat", "chat_id": OPERATOR}, None),
        ({"type": "chat", "chat_id": OTHER_OPERATOR}, None),
        ({"type": "chat", "chat_id": OTHER_OPERATOR}, "ru"),
        ({"type": "chat", "chat_id": OTHER_OPERATOR}, "en"),
    ]
    assert [c.failed for c in calls] == [True, False, False, False]
    for call in calls[1:]:
        commands = [c["command"] for c in call.params["commands"]]
        assert commands == ["talk", "close", "call", "status", "failed", "retry", "help", "link"]
    default, russian, english = (
        [c["description"] for c in call.params["commands"]] for call in calls[1:]
    )
    assert default == english and english[3] == "Bridge health"
    assert russian[3] == "Состояние моста"
    assert "chat not found" not in await Operator(fakes, OTHER_OPERATOR).ask("/help")


async def test_the_default_menu_follows_language(fakes: Fakes, bridges: BridgeFactory) -> None:
    await bridges.start(LANGUAGE="ru", **STAFF)

    default = fakes.telegram.calls_of("setMyCommands")[0]
    assert default.params.get("language_code") is None
    assert default.params["commands"][0]["description"] == "Беседа: /talk 117"


async def test_help_and_status(fakes: Fakes, staff_bridge: RunningBridge) -> None:
    operator = Operator(fakes)
    help_text = await operator.ask("/help")
    for example in (
        "/talk 117",
        "/close 117 nps",
        "/call +79161234567 2:30 in talked",
        "/status",
        "/failed",
        "/retry 42",
    ):
        assert example in help_text

    fakes.telegram.push_update(private_message_update(CUSTOMER, 1, text="hello"))
    repo = staff_bridge.bridge.repo

    async def delivered() -> bool:
        stats = await repo.queue_stats()
        return "amojo" not in stats or stats["amojo"].pending == 0

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1)
    await wait_until(delivered, what="the amojo job done")
    status = await operator.ask("/status")
    assert status.startswith("Bridge status")
    assert "Queue amojo" not in status or "Queue amojo: 0 pending, 0 dead-lettered" in status
    assert "Last successful amoCRM call: 0 s ago" in status
    assert "Customers who blocked the bot: 0" in status
    assert "Telegram, amoCRM and storage: all well" in status

    # Staff see what /healthz sees, not last: here amoCRM failing a command's call.
    fakes.crm.fail("/api/v4/talks/117", 503, times=10)
    await operator.ask("/talk 117")
    status = await operator.ask("/status")
    assert "Problems (as in /healthz):" in status
    assert "• amoCRM failing for" in status, status


async def test_oauth_code_exchange_then_one_refresh_for_a_401(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    fakes.crm.enable_oauth("client-1", "secret-1", "https://bridge.example.com/oauth", "code-1")
    fakes.crm.expire_access_tokens()  # the long-lived token of the default setup is not used
    fakes.crm.add_talk(117)
    running = await bridges.start(
        AMOCRM_ACCESS_TOKEN=None,
        AMOCRM_CLIENT_ID="client-1",
        AMOCRM_CLIENT_SECRET="secret-1",
        AMOCRM_REDIRECT_URI="https://bridge.example.com/oauth",
        AMOCRM_AUTH_CODE="code-1",
        **STAFF,
    )
    assert fakes.crm.grants == [("authorization_code", True)]  # before polling: account id
    operator = Operator(fakes)

    fakes.crm.expire_access_tokens()
    assert (await operator.ask("/talk 117")).startswith("Talk 117: open")
    assert fakes.crm.grants == [("authorization_code", True), ("refresh_token", True)]
    stored = await load_token_pair(running.bridge.repo)
    assert stored is not None
    assert stored.refresh_token in fakes.crm.refresh_tokens

    await running.stop()
    restarted = await bridges.start(
        AMOCRM_ACCESS_TOKEN=None,
        AMOCRM_CLIENT_ID="client-1",
        AMOCRM_CLIENT_SECRET="secret-1",
        AMOCRM_REDIRECT_URI="https://bridge.example.com/oauth",
        AMOCRM_AUTH_CODE="code-1",
        **STAFF,
    )
    assert (await operator.ask("/close 117")).startswith("Talk 117: closed")
    assert len(fakes.crm.grants) == 2  # neither the used code nor a refresh again
    assert restarted.bridge.crm.last_success_at is not None


async def test_burst_of_commands_stays_within_seven_per_second(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_talk(117)
    for message_id in range(1, 13):
        fakes.telegram.push_update(staff_message_update(OPERATOR, message_id, text="/talk 117"))
    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages(OPERATOR)) == 12, timeout=10, what="12 replies"
    )
    assert all(r.status != 429 for r in fakes.crm.requests)
    assert fakes.crm.max_rate(1.0) <= 7
    assert len(crm_calls(fakes, "/api/v4/talks")) == 12


async def test_a_command_waiting_on_amocrm_does_not_hold_up_customers(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.add_talk(117)
    fakes.crm.fail("/api/v4/talks/117", 429, times=2, headers={"Retry-After": "3"})
    fakes.telegram.push_update(staff_message_update(OPERATOR, 1, text="/talk 117"))
    fakes.telegram.push_update(private_message_update(CUSTOMER, 1, text="Здравствуйте"))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, timeout=3, what="customer")
    assert fakes.telegram.sent_messages(OPERATOR) == []  # amoCRM still says "wait"
    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages(OPERATOR)) == 1, timeout=15, what="the answer"
    )
    assert fakes.telegram.sent_messages(OPERATOR)[0].params["text"].startswith("Talk 117")


async def test_a_command_that_cannot_be_run_is_still_answered(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    fakes.crm.fail("/api/v4/talks/117", 200, times=100, body={})  # not a talk at all
    reply = await Operator(fakes).ask("/talk 117")
    assert reply.startswith("/talk failed: ")
    [entry] = await audit_entries(staff_bridge.bridge.repo)
    assert (entry.command, entry.result) == ("talk", "failed")


async def test_a_stored_command_this_version_does_not_know_is_answered(
    fakes: Fakes, staff_bridge: RunningBridge
) -> None:
    invocation = Invocation(OPERATOR, OPERATOR, 41, "stats", None)
    await staff_bridge.bridge.repo.enqueue(staff_job(invocation))
    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages(OPERATOR)) == 1, what="the answer"
    )
    text = fakes.telegram.sent_messages(OPERATOR)[0].params["text"]
    assert text == "/stats is not a command of this bridge."
