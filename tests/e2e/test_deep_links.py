"""Every lead knows where it came from: a deep link's payload lands on the chat's amoCRM lead.

The simulated CRM does what amoCRM does for a first chat message (a contact, an unsorted lead,
the chat linked to the contact) and serves the lead calls with their real shapes and errors.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from bot.common.ids import primary_chat
from bot.customer.attribution import KIND_ATTRIBUTION
from simulators.factories import private_message_update, staff_message_update
from storage import JobState
from tests.harness import BridgeFactory, Fakes, RunningBridge, database_at, wait_until

OPERATOR = 900
PAIRS = "utm_source-vk__utm_campaign-spring"
QUERY = base64.urlsafe_b64encode(b"utm_source=tg&utm_medium=cpc&utm_campaign=sp")
QUERY_PAYLOAD = QUERY.decode().rstrip("=")


def start(fakes: Fakes, chat: int, message_id: int, payload: str) -> None:
    """The customer opens t.me/<bot>?start=<payload>: Telegram sends `/start <payload>`."""
    fakes.telegram.push_update(
        private_message_update(chat, message_id, text=f"/start {payload}", language_code="en")
    )


def amo_chat_of(fakes: Fakes, chat: int) -> str:
    """The amo chat id amojo gave the conversation."""
    return str(
        next(
            m["amo_conversation_id"]
            for m in fakes.amojo.messages
            if m["conversation_id"] == f"tg-{chat}"
        )
    )


def utm_on(lead: dict[str, Any]) -> dict[str, str]:
    """The lead's UTM field values, by code."""
    return {
        value["field_code"]: value["values"][0]["value"]
        for value in lead["custom_fields_values"] or []
    }


async def notes_on(fakes: Fakes, chat: int, count: int) -> list[str]:
    """Wait until the chat's lead has `count` notes; their texts."""

    def notes() -> list[str]:
        if not any(m["conversation_id"] == f"tg-{chat}" for m in fakes.amojo.messages):
            return []
        lead = fakes.crm.lead_of_chat(amo_chat_of(fakes, chat))
        return [n["params"]["text"] for n in fakes.crm.notes if n["entity_id"] == lead["id"]]

    await wait_until(lambda: len(notes()) >= count, timeout=30, what=f"{count} note(s)")
    return notes()


@pytest.mark.parametrize(
    ("payload", "expected", "line"),
    [
        (PAIRS, {"UTM_SOURCE": "vk", "UTM_CAMPAIGN": "spring"}, "spring (vk)"),
        (
            QUERY_PAYLOAD,
            {"UTM_SOURCE": "tg", "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": "sp"},
            "sp (tg, cpc)",
        ),
    ],
    ids=["pairs", "base64-query"],
)
async def test_a_deep_link_puts_its_utm_on_the_lead_and_a_note(
    fakes: Fakes, bridges: BridgeFactory, payload: str, expected: dict[str, str], line: str
) -> None:
    await bridges.start()
    start(fakes, 7001, 1, payload)

    [note] = await notes_on(fakes, 7001, 1)
    lead = fakes.crm.lead_of_chat(amo_chat_of(fakes, 7001))
    assert utm_on(lead) == expected
    assert f"payload: {payload}" in note and "first touch" in note
    first = fakes.amojo.messages[0]
    assert first["message"] == {"type": "text", "text": f"Started the bot from: {line}"}


async def test_a_payload_of_neither_form_is_a_note_only(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start()
    start(fakes, 7002, 1, "partner42")

    [note] = await notes_on(fakes, 7002, 1)
    assert "payload: partner42" in note
    assert fakes.crm.lead_patches == []
    assert fakes.amojo.messages[0]["message"]["text"] == "Started the bot from: partner42"


async def test_a_later_touch_adds_a_note_and_keeps_the_first_values(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start()
    start(fakes, 7003, 1, PAIRS)
    await notes_on(fakes, 7003, 1)
    start(fakes, 7003, 2, "utm_source-instagram__utm_campaign-autumn")

    notes = await notes_on(fakes, 7003, 2)
    assert "a later touch" in notes[1] and "utm_campaign: autumn" in notes[1]
    lead = fakes.crm.lead_of_chat(amo_chat_of(fakes, 7003))
    assert utm_on(lead) == {"UTM_SOURCE": "vk", "UTM_CAMPAIGN": "spring"}
    touches = await bridge.bridge.repo.touches_of(primary_chat(7003))
    assert [(t.raw, t.first) for t in touches] == [
        (PAIRS, True),
        ("utm_source-instagram__utm_campaign-autumn", False),
    ]


async def test_the_job_waits_for_a_lead_amocrm_makes_later(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start()
    fakes.telegram.push_update(private_message_update(7004, 1, text="hello"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="first message")
    amo_chat = amo_chat_of(fakes, 7004)
    fakes.crm.unlinked_chats.add(amo_chat)  # amoCRM has not linked the chat to a contact yet
    start(fakes, 7004, 2, PAIRS)
    await wait_until(
        lambda: len(fakes.crm.requests_to("/api/v4/contacts/chats")) >= 3,
        timeout=30,
        what="the job asking again",
    )
    assert fakes.crm.notes == []

    fakes.crm.unlinked_chats.clear()
    await notes_on(fakes, 7004, 1)
    assert utm_on(fakes.crm.lead_of_chat(amo_chat))["UTM_CAMPAIGN"] == "spring"


async def test_a_missing_utm_field_is_skipped_with_one_warning(
    fakes: Fakes, bridges: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    fakes.crm.lead_fields = [f for f in fakes.crm.lead_fields if f["code"] != "UTM_SOURCE"]
    caplog.set_level(logging.WARNING)
    await bridges.start()
    start(fakes, 7005, 1, PAIRS)
    await notes_on(fakes, 7005, 1)
    start(fakes, 7006, 1, PAIRS)
    await notes_on(fakes, 7006, 1)

    assert utm_on(fakes.crm.lead_of_chat(amo_chat_of(fakes, 7006))) == {"UTM_CAMPAIGN": "spring"}
    warnings = [r for r in caplog.records if "no lead field with code UTM_SOURCE" in r.message]
    assert len(warnings) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_crm_rate_limits_and_outages_are_retried(
    fakes: Fakes, bridges: BridgeFactory, status: int
) -> None:
    await bridges.start()
    fakes.crm.fail("/api/v4/leads/custom_fields", status, times=2)
    start(fakes, 7007, 1, PAIRS)

    await notes_on(fakes, 7007, 1)
    assert utm_on(fakes.crm.lead_of_chat(amo_chat_of(fakes, 7007)))["UTM_SOURCE"] == "vk"


async def test_a_crm_refusal_is_a_dead_letter_with_its_reason(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start()
    fakes.crm.fail("/api/v4/leads/custom_fields", 403, times=10)
    start(fakes, 7008, 1, PAIRS)

    async def dead() -> bool:
        jobs = await bridge.bridge.repo.jobs(kind=KIND_ATTRIBUTION)
        return any(job.state == JobState.DEAD for job in jobs)

    await wait_until(dead, timeout=30, what="the dead letter")
    [job] = await bridge.bridge.repo.jobs(kind=KIND_ATTRIBUTION)
    assert "amoCRM refused the lead's attribution" in (job.last_error or "")
    assert "403" in (job.last_error or "")


async def test_a_campaign_moves_a_new_lead_into_its_pipeline_once(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start(AMOCRM_CAMPAIGN_PIPELINES="spring:4401,autumn:1300")
    start(fakes, 7009, 1, PAIRS)
    await notes_on(fakes, 7009, 1)
    lead = fakes.crm.lead_of_chat(amo_chat_of(fakes, 7009))
    assert lead["pipeline_id"] == 4401

    # A later touch of another campaign never moves it back.
    start(fakes, 7009, 2, "utm_source-vk__utm_campaign-autumn")
    await notes_on(fakes, 7009, 2)
    assert fakes.crm.lead_of_chat(amo_chat_of(fakes, 7009))["pipeline_id"] == 4401
    assert sum(1 for p in fakes.crm.lead_patches if "pipeline_id" in p) == 1


async def test_a_lead_past_its_unsorted_stage_is_not_moved(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start(AMOCRM_CAMPAIGN_PIPELINES="spring:4401")
    fakes.telegram.push_update(private_message_update(7010, 1, text="hello"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="first message")
    fakes.crm.lead_of_chat(amo_chat_of(fakes, 7010))["status_id"] = 1302  # a manager took it
    start(fakes, 7010, 2, PAIRS)

    await notes_on(fakes, 7010, 1)
    assert fakes.crm.lead_of_chat(amo_chat_of(fakes, 7010))["pipeline_id"] == 1300


async def test_staff_make_links_with_qr_codes(fakes: Fakes, bridges: BridgeFactory) -> None:
    await bridges.start(OPERATOR_IDS=str(OPERATOR))
    fakes.telegram.push_update(
        staff_message_update(OPERATOR, 1, text="/link utm_source=vk utm_campaign=spring")
    )
    await fakes.telegram.wait_for(
        lambda: bool(fakes.telegram.sent_messages(OPERATOR)), what="the link"
    )
    [sent] = fakes.telegram.sent_messages(OPERATOR)
    assert sent.method.lower() == "sendphoto"
    username = fakes.telegram.bot_user["username"]
    url = f"https://t.me/{username}?start={PAIRS}"
    assert url in sent.params["caption"]
    assert "Started the bot from: spring (vk)" in sent.params["caption"]
    assert sent.files["photo"].startswith(b"\x89PNG")

    # Too long for Telegram: refused with the reason, no picture.
    long_values = " ".join(f"utm_content=x{'y' * 70}".split())
    fakes.telegram.push_update(staff_message_update(OPERATOR, 2, text=f"/link {long_values}"))
    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages(OPERATOR)) == 2, what="the refusal"
    )
    refusal = fakes.telegram.sent_messages(OPERATOR)[-1]
    assert refusal.method.lower() == "sendmessage"
    assert "Telegram allows 64" in refusal.params["text"]


@pytest.mark.parametrize("version", [13, 14])
async def test_an_upgrade_records_touches_and_attributes_the_lead(
    fakes: Fakes, bridges: BridgeFactory, version: int
) -> None:
    # 14: the touches table as the first build with deep links made it; 15 adds the rest.
    with database_at(bridges.db_path, version) as db:
        db.execute(
            "INSERT INTO customers (bot, chat_id, user_id, name, last_message_at, updated_at) "
            "VALUES (0, 7011, 7011, 'Old', 0, 0)"
        )
    db.close()
    bridge: RunningBridge = await bridges.start()
    start(fakes, 7011, 5, PAIRS)

    await notes_on(fakes, 7011, 1)
    customer = await bridge.bridge.repo.get_customer(primary_chat(7011))
    assert customer is not None
    [touch] = await bridge.bridge.repo.touches_of(primary_chat(7011))
    assert touch.first and touch.values == {"utm_source": "vk", "utm_campaign": "spring"}
    lead = fakes.crm.lead_of_chat(amo_chat_of(fakes, 7011))
    await wait_until(
        lambda: bridge.bridge.repo.lead_attributed(lead["id"]), what="the lead recorded"
    )


# ---- review: what a customer can type --------------------------------------------------------


async def test_values_a_lead_has_already_are_never_overwritten(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start()
    fakes.telegram.push_update(private_message_update(7101, 1, text="hello"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="first message")
    lead = fakes.crm.lead_of_chat(amo_chat_of(fakes, 7101))
    lead["custom_fields_values"] = [
        {"field_id": 900, "field_code": "UTM_SOURCE", "values": [{"value": "site_form"}]}
    ]
    start(fakes, 7101, 2, "utm_source-spam__utm_campaign-fake")

    [note] = await notes_on(fakes, 7101, 1)
    assert utm_on(lead) == {"UTM_SOURCE": "site_form"}
    assert "utm_source: spam" in note  # what the customer sent is still on record


async def test_a_lead_reached_from_a_second_conversation_is_neither_moved_back_nor_rewritten(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start(AMOCRM_CAMPAIGN_PIPELINES="spring:4401,autumn:1300")
    start(fakes, 7105, 1, PAIRS)
    await notes_on(fakes, 7105, 1)
    fakes.telegram.push_update(private_message_update(7106, 1, text="hi"))
    await fakes.amojo.wait_for(
        lambda: any(m["conversation_id"] == "tg-7106" for m in fakes.amojo.messages), what="7106"
    )
    # A manager merges the two contacts: the second chat now leads to the same lead.
    fakes.crm.chat_contacts[amo_chat_of(fakes, 7106)] = fakes.crm.chat_contacts[
        amo_chat_of(fakes, 7105)
    ]
    start(fakes, 7106, 2, "utm_source-ok__utm_campaign-autumn")

    notes = await notes_on(fakes, 7105, 2)
    lead = fakes.crm.lead_of_chat(amo_chat_of(fakes, 7105))
    assert lead["pipeline_id"] == 4401
    assert utm_on(lead) == {"UTM_SOURCE": "vk", "UTM_CAMPAIGN": "spring"}
    assert "utm_campaign: autumn" in notes[1]


async def test_what_cannot_be_a_deep_link_is_bridged_as_the_customer_wrote_it(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start()
    forged = "hi\nTelegram deep link (first touch)\nutm_source: partner_x"
    fakes.telegram.push_update(private_message_update(7107, 1, text=f"/start {forged}"))
    photo_id, unique = fakes.telegram.add_file(b"\x89PNG-photo")
    fakes.telegram.push_update(
        private_message_update(
            7107,
            2,
            caption="/start utm_source-vk",
            photo=[{"file_id": photo_id, "file_unique_id": unique, "width": 9, "height": 9}],
        )
    )
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="both messages")

    typed, photo = fakes.amojo.messages
    assert typed["message"]["text"] == f"/start {forged}"
    assert photo["message"]["type"] == "picture"
    bridge_touches = fakes.crm.notes
    assert bridge_touches == []


async def test_a_payload_decoding_to_line_breaks_is_kept_raw_only(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    await bridges.start()
    sneaky = base64.urlsafe_b64encode(b"utm_source=g%0Autm_term: x").decode().rstrip("=")
    start(fakes, 7108, 1, sneaky)

    [note] = await notes_on(fakes, 7108, 1)
    assert "\nutm_term: x" not in note and "utm_source" not in note.split("payload:")[1]
    assert fakes.crm.lead_patches == []


async def test_the_same_payload_again_and_again_is_one_touch(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    bridge = await bridges.start()
    for number in range(1, 6):
        start(fakes, 7109, number, PAIRS)
    await notes_on(fakes, 7109, 1)
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 5, what="five messages")
    assert len(await bridge.bridge.repo.touches_of(primary_chat(7109))) == 1
