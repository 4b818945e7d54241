"""Customer → amoCRM through the real handlers: /start, edits, contacts, replies, dead letters."""

from __future__ import annotations

from typing import Any

import pytest

from bot.common.ids import primary_chat
from bot.common.texts import text
from simulators.factories import (
    make_contact,
    make_message,
    make_user,
    private_message_update,
)
from storage import JobState
from tests.harness import Fakes, RunningBridge, wait_until


@pytest.mark.parametrize(("language", "expected"), [("ru", "ru"), ("en-GB", "en"), (None, "en")])
async def test_start_greets_in_the_customer_language_with_a_phone_button(
    fakes: Fakes, bridge: RunningBridge, language: str | None, expected: str
) -> None:
    user = make_user(401, language_code=language)
    entities = [{"type": "bot_command", "offset": 0, "length": 6}]
    fakes.telegram.push_update(
        private_message_update(401, 1, text="/start", user=user, entities=entities)
    )

    await fakes.telegram.wait_for(
        lambda: len(fakes.telegram.sent_messages(401)) == 1, what="greeting"
    )
    sent = fakes.telegram.sent_messages(401)[0].params
    assert sent["text"] == text("greeting", expected)
    assert ("Здравствуйте" in sent["text"]) is (expected == "ru")
    [[button]] = sent["reply_markup"]["keyboard"]
    assert button["request_contact"] is True
    assert button["text"] == text("share_phone_button", expected)
    assert fakes.amojo.messages == []


async def test_changed_edit_is_sent_once_and_unchanged_edit_not_at_all(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    fakes.telegram.push_update(private_message_update(601, 10, text="Первый вариант"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="original")

    fakes.telegram.push_update(private_message_update(601, 10, text="Исправлено", edited=True))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.edits) == 1, what="edit")
    edit = fakes.amojo.edits[0]
    assert edit["msgid"] == "tg-601-10"
    assert edit["conversation_id"] == "tg-601"
    assert edit["message"] == {"type": "text", "text": "Исправлено"}
    assert fakes.amojo.messages[0]["message"]["text"] == "Исправлено"

    # The same text again (Telegram also sends edits for entity or preview changes).
    fakes.telegram.push_update(private_message_update(601, 10, text="Исправлено", edited=True))
    # A later message of the same chat is a barrier: the lane is FIFO.
    fakes.telegram.push_update(private_message_update(601, 11, text="Ещё вопрос"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="next message")

    assert len(fakes.amojo.edits) == 1
    assert len(fakes.amojo.messages) == 2


async def test_own_contact_stores_the_phone_and_sends_it_with_the_next_message(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    contact = make_contact("8 (999) 123-45-67", user_id=701)
    fakes.telegram.push_update(private_message_update(701, 1, contact=contact))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="contact message")
    assert fakes.amojo.messages[0]["message"]["type"] == "contact"

    customer = await bridge.bridge.repo.get_customer(primary_chat(701))
    assert customer is not None and customer.phone == "+79991234567"

    fakes.telegram.push_update(private_message_update(701, 2, text="Перезвоните"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="next message")
    assert fakes.amojo.messages[1]["sender"]["profile"]["phone"] == "+79991234567"
    await fakes.telegram.wait_for(
        lambda: any(
            c.params["text"] == text("phone_saved", "ru") for c in fakes.telegram.sent_messages(701)
        ),
        what="phone saved notice",
    )


async def test_someone_elses_contact_is_only_a_contact_message(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    contact = make_contact("+7 916 000-11-22", user_id=999, first_name="Сосед")
    fakes.telegram.push_update(private_message_update(702, 1, contact=contact))
    fakes.telegram.push_update(private_message_update(702, 2, text="Это номер соседа"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="both messages")

    first, second = fakes.amojo.messages
    assert first["message"]["contact"] == {"name": "Сосед", "phone": "+7 916 000-11-22"}
    assert "profile" not in first["sender"]
    assert "profile" not in second["sender"]
    customer = await bridge.bridge.repo.get_customer(primary_chat(702))
    assert customer is not None and customer.phone is None
    assert fakes.telegram.sent_messages(702) == []


async def test_reply_refers_to_the_amo_id_of_the_quoted_message(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    fakes.telegram.push_update(private_message_update(801, 20, text="Какая цена?"))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, what="first message")
    amo_id = fakes.amojo.messages[0]["amo_id"]

    async def linked() -> bool:
        link = await bridge.bridge.repo.get_link(primary_chat(801), 20)
        return link is not None and link.amo_message_id == amo_id

    await wait_until(linked, what="amo id stored")
    quoted = make_message(801, 20, text="Какая цена?")
    fakes.telegram.push_update(
        private_message_update(801, 21, text="Уточню", reply_to_message=quoted)
    )
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="reply")
    assert fakes.amojo.messages[1]["reply_to"] == {"message": {"id": amo_id}}


async def test_permanent_rejection_is_dead_lettered_and_the_chat_goes_on(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    fakes.amojo.fail("new_message", 400, times=1)
    for message_id, words in ((30, "первое"), (31, "второе"), (32, "третье")):
        fakes.telegram.push_update(private_message_update(901, message_id, text=words))

    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 2, what="later messages")
    assert [m["msgid"] for m in fakes.amojo.messages] == ["tg-901-31", "tg-901-32"]
    dead: list[Any] = await bridge.bridge.repo.jobs(state=JobState.DEAD)
    assert [job.payload["payload"]["msgid"] for job in dead] == ["tg-901-30"]
    assert dead[0].last_error is not None
    assert "400" in dead[0].last_error
    assert "injected failure" in dead[0].last_error
    tries = [r for r in fakes.amojo.requests if b'"msgid":"tg-901-30"' in r.body]
    assert len(tries) == 1, "a permanent rejection must not be retried"


async def test_a_retry_rejected_for_bad_data_is_dead_lettered_not_taken_as_delivered(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    fakes.amojo.fail("new_message", 503, times=1)
    fakes.amojo.fail(
        "new_message", 400, times=1, body={"error_description": "payload.message.text: invalid"}
    )
    fakes.telegram.push_update(private_message_update(902, 40, text="сообщение"))

    async def dead_jobs() -> list[Any]:
        return list(await bridge.bridge.repo.jobs(state=JobState.DEAD))

    await wait_until(lambda: _has_any(dead_jobs()), what="dead letter")
    dead = await dead_jobs()
    assert [job.payload["payload"]["msgid"] for job in dead] == ["tg-902-40"]
    assert "invalid" in (dead[0].last_error or "")
    assert fakes.amojo.messages == []


async def _has_any(jobs: Any) -> bool:
    return bool(await jobs)
