"""Managers and Salesbot → Telegram, end to end: hooks in, Telegram messages and statuses out."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

import bot.manager.delivery
import bot.manager.spool
from bot.amocrm.hooks import KIND_AMO_MESSAGE, KIND_AMO_REACTION, KIND_AMO_TYPING
from bot.common.ids import primary_chat
from simulators.amojo import AUTO
from simulators.factories import (
    make_contact,
    make_my_chat_member,
    make_update,
    private_message_update,
)
from simulators.telegram import RecordedCall
from storage import JobState
from tests.harness import BridgeFactory, Fakes, RunningBridge, wait_until


async def customer_says(
    fakes: Fakes, chat_id: int, message_id: int, text: str | None = "Здравствуйте", **fields: Any
) -> dict[str, Any]:
    """A customer message, bridged to amoCRM (so the chat exists on both sides)."""
    before = len(fakes.amojo.messages)
    fakes.telegram.push_update(private_message_update(chat_id, message_id, text=text, **fields))
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) > before, what="customer msg")
    return fakes.amojo.messages[-1]


async def post(fakes: Fakes, bridge: RunningBridge, hook: dict[str, Any]) -> str:
    """POST a hook like amojo; asserts 200; returns the amo message id (if a message hook)."""
    status, body = await fakes.amojo.post_hook(bridge.url, bridge.scope_id, hook)
    assert status == 200, body
    return str(hook.get("message", {}).get("message", {}).get("id", ""))


async def status_of(fakes: Fakes, amo_id: str, wait: float = 10.0) -> dict[str, Any]:
    """The one delivery status reported for a manager message."""
    await fakes.amojo.wait_for(
        lambda: bool(fakes.amojo.statuses_for(amo_id)), timeout=wait, what=f"status {amo_id}"
    )
    statuses = fakes.amojo.statuses_for(amo_id)
    assert len(statuses) == 1, statuses
    return statuses[0]


def sends(fakes: Fakes, chat_id: int) -> list[RecordedCall]:
    """Successful sends to a chat."""
    return fakes.telegram.sent_messages(chat_id)


async def test_text_is_delivered_paired_and_reported(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 601, 1)
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-601", text="Добрый день!"))

    assert (await status_of(fakes, amo_id))["status"] == 1
    [call] = sends(fakes, 601)
    assert call.method.lower() == "sendmessage"
    assert call.params["text"] == "Добрый день!"
    [link] = await bridge.bridge.repo.links_for_amo_message(amo_id)
    assert (link.chat_id, link.direction) == (601, "out")
    assert link.tg_message_id == call.result["message_id"]


@pytest.mark.parametrize(
    ("scope", "body", "signature", "expected"),
    [
        ("good", "hook", "bad", 401),
        ("good", "hook", None, 401),
        ("good", b"{not json", "auto", 400),
        ("good", {"account_id": "x", "time": 1}, "auto", 400),
        ("good", {"message": {"message": {"type": "text", "text": "x"}}}, "auto", 400),
        ("unknown", "hook", "auto", 404),
    ],
    ids=["bad-signature", "missing-signature", "malformed", "unknown-kind", "no-id", "scope"],
)
async def test_rejected_hooks_store_and_deliver_nothing(
    fakes: Fakes,
    bridge: RunningBridge,
    scope: str,
    body: Any,
    signature: str | None,
    expected: int,
) -> None:
    await customer_says(fakes, 602, 1)
    hook = fakes.amojo.message_hook("tg-602", text="must not arrive")
    payload = hook if body == "hook" else body
    sign: Any = fakes.amojo.sign_hook(b"other body") if signature == "bad" else None
    if signature == "auto":
        sign = AUTO
    scope_id = bridge.scope_id if scope == "good" else "someone-else_scope"

    status, _ = await fakes.amojo.post_hook(bridge.url, scope_id, payload, signature=sign)

    assert status == expected
    assert await bridge.bridge.repo.jobs(kind=KIND_AMO_MESSAGE) == []
    # the listener keeps serving: a good hook right after is delivered
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-602", text="ok"))
    assert (await status_of(fakes, amo_id))["status"] == 1
    assert [c.params["text"] for c in sends(fakes, 602)] == ["ok"]


async def test_same_hook_twice_is_delivered_once(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 603, 1)
    hook = fakes.amojo.message_hook("tg-603", text="once")
    amo_id = await post(fakes, bridge, hook)
    await post(fakes, bridge, hook)
    await status_of(fakes, amo_id)
    await post(fakes, bridge, hook)

    assert len(await bridge.bridge.repo.jobs(kind=KIND_AMO_MESSAGE)) == 1
    assert [c.params["text"] for c in sends(fakes, 603)] == ["once"]
    assert len(fakes.amojo.statuses_for(amo_id)) == 1


async def test_flood_control_is_waited_out(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 604, 1)
    fakes.telegram.fail("sendMessage", status=429, retry_after=1, chat_id=604)
    started = time.monotonic()
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-604", text="after 429"))

    assert (await status_of(fakes, amo_id))["status"] == 1
    assert time.monotonic() - started >= 0.9
    assert [c.params["text"] for c in sends(fakes, 604)] == ["after 429"]
    assert [c.status for c in fakes.telegram.calls_of("sendMessage") if c.chat_id == 604] == [
        429,
        200,
    ]


async def test_blocked_bot_is_reported_901_and_not_retried(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 605, 1)
    fakes.telegram.block(605)
    first = await post(fakes, bridge, fakes.amojo.message_hook("tg-605", text="hello?"))
    status = await status_of(fakes, first)
    assert (status["status"], status["error_code"]) == (-1, 901)
    assert "blocked" in status["error"]
    calls = len(fakes.telegram.calls_of("sendMessage"))

    second = await post(fakes, bridge, fakes.amojo.message_hook("tg-605", text="still?"))
    status = await status_of(fakes, second)
    assert (status["status"], status["error_code"]) == (-1, 901)
    assert len(fakes.telegram.calls_of("sendMessage")) == calls  # Telegram was not called


async def test_membership_updates_block_and_unblock(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 606, 1)
    fakes.telegram.push_update(make_update("my_chat_member", make_my_chat_member(606)))
    await wait_until(lambda: not fakes.telegram.pending_updates(), what="update confirmed")
    await wait_until(_blocked(bridge, 606, True), what="customer blocked")

    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-606", text="blocked"))
    assert (await status_of(fakes, amo_id))["error_code"] == 901
    assert sends(fakes, 606) == []

    unblock = make_my_chat_member(606, new_status="member", old_status="kicked")
    fakes.telegram.push_update(make_update("my_chat_member", unblock))
    await wait_until(_blocked(bridge, 606, False), what="customer unblocked")
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-606", text="welcome back"))
    assert (await status_of(fakes, amo_id))["status"] == 1
    assert [c.params["text"] for c in sends(fakes, 606)] == ["welcome back"]


def _blocked(bridge: RunningBridge, chat_id: int, expected: bool) -> Any:
    async def check() -> bool:
        customer = await bridge.bridge.repo.get_customer(primary_chat(chat_id))
        return customer is not None and customer.blocked == expected

    return check


async def test_chat_not_found_is_reported_904(fakes: Fakes, bridge: RunningBridge) -> None:
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-607", text="hi"))
    fakes.telegram.fail("sendMessage", status=400, chat_id=607)

    status = await status_of(fakes, amo_id)
    assert (status["status"], status["error_code"]) == (-1, 904)


async def test_other_permanent_error_is_reported_905_with_reason(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 608, 1)
    fakes.telegram.fail(
        "sendMessage", status=400, description="Bad Request: BUTTON_DATA_INVALID", chat_id=608
    )
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-608", text="hi"))

    status = await status_of(fakes, amo_id)
    assert (status["status"], status["error_code"]) == (-1, 905)
    assert "BUTTON_DATA_INVALID" in status["error"]


async def test_undeliverable_for_an_hour_is_reported_905(
    fakes: Fakes, bridges: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.manager.delivery, "DELIVERY_GIVE_UP_SECONDS", 1.0)
    bridge = await bridges.start()
    await customer_says(fakes, 609, 1)
    fakes.telegram.fail("sendMessage", status=502, times=10_000, chat_id=609)
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-609", text="hi"))

    status = await status_of(fakes, amo_id)
    assert (status["status"], status["error_code"]) == (-1, 905)
    assert "Telegram" in status["error"] and "still failing" in status["error"]
    [job] = await bridge.bridge.repo.jobs(kind=KIND_AMO_MESSAGE)
    assert job.state is JobState.DEAD


async def test_long_text_is_split_in_order(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 610, 1)
    paragraphs = [f"Абзац {n}: " + " ".join(["слово"] * 300) for n in range(6)]
    text = "\n\n".join(paragraphs)[:10_000]
    assert len(text) == 10_000
    amo_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-610", text=text))

    assert (await status_of(fakes, amo_id))["status"] == 1
    parts = [c.params["text"] for c in sends(fakes, 610)]
    assert len(parts) == 3
    assert all(len(p) <= 4096 for p in parts)
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace(
        "\n", ""
    )
    assert all(not p.endswith("сло") for p in parts[:-1])  # cut between words
    links = await bridge.bridge.repo.links_for_amo_message(amo_id)
    assert [link.tg_message_id for link in links] == [
        c.result["message_id"] for c in sends(fakes, 610)
    ]


async def test_text_buttons_press_goes_back_to_amocrm(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 611, 1)
    markup = {
        "mode": "inline",
        "buttons": [[{"text": "Принять заказ"}, {"text": "Отменить заказ"}]],
    }
    hook = fakes.amojo.message_hook("tg-611", text="Подтвердите заказ", markup=markup)
    amo_id = await post(fakes, bridge, hook)
    assert (await status_of(fakes, amo_id))["status"] == 1
    [call] = sends(fakes, 611)
    keyboard = call.params["reply_markup"]
    assert [[b["text"] for b in row] for row in keyboard["keyboard"]] == [
        ["Принять заказ", "Отменить заказ"]
    ]
    assert keyboard["one_time_keyboard"] is True

    message = await customer_says(fakes, 611, 2, text="Принять заказ")
    assert message["conversation_id"] == "tg-611"
    assert message["message"] == {"type": "text", "text": "Принять заказ"}


async def test_url_buttons_open_links(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 612, 1)
    markup = {"mode": "inline", "buttons": [[{"text": "Оплатить", "url": "https://pay.example/1"}]]}
    amo_id = await post(
        fakes, bridge, fakes.amojo.message_hook("tg-612", text="Счёт", markup=markup)
    )
    assert (await status_of(fakes, amo_id))["status"] == 1
    [call] = sends(fakes, 612)
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Оплатить", "url": "https://pay.example/1"}]]
    }


async def test_media_types_are_uploaded_with_caption(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 613, 1)
    image = b"\x89PNG" + bytes(range(256)) * 10
    pdf = b"%PDF-1.4 " + b"x" * 3000
    image_url = fakes.amojo.add_media("photo.png", "image/png", image)
    pdf_url = fakes.amojo.add_media("offer", "application/pdf", pdf)
    picture = fakes.amojo.message_hook(
        "tg-613", msg_type="picture", text="Фото", media=image_url, file_size=len(image)
    )
    document = fakes.amojo.message_hook(
        "tg-613", msg_type="file", text="", media=pdf_url, file_name="КП.pdf", file_size=len(pdf)
    )
    for hook in (picture, document):
        amo_id = await post(fakes, bridge, hook)
        assert (await status_of(fakes, amo_id))["status"] == 1

    photo_call, document_call = sends(fakes, 613)
    assert photo_call.method.lower() == "sendphoto"
    assert photo_call.files["photo"] == image
    assert photo_call.params["caption"] == "Фото"
    assert document_call.method.lower() == "senddocument"
    assert document_call.files["document"] == pdf
    assert document_call.params["_filename_document"] == "КП.pdf"


async def test_long_caption_follows_as_a_message(fakes: Fakes, bridge: RunningBridge) -> None:
    await customer_says(fakes, 614, 1)
    url = fakes.amojo.add_media("v.mp4", "video/mp4", b"\x00\x00\x00\x18ftypmp42" * 50)
    caption = "Описание. " * 150
    hook = fakes.amojo.message_hook("tg-614", msg_type="video", text=caption, media=url)
    amo_id = await post(fakes, bridge, hook)
    assert (await status_of(fakes, amo_id))["status"] == 1

    video, text = sends(fakes, 614)
    assert video.method.lower() == "sendvideo"
    assert "caption" not in video.params
    assert text.params["text"] == caption.strip()


async def test_refused_or_missing_media_is_sent_as_a_link(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 615, 1)
    url = fakes.amojo.add_media("voice.ogg", "audio/ogg", b"OggS" + b"\x00" * 500)
    fakes.telegram.fail(
        "sendVoice", status=400, description="Bad Request: VOICE_MESSAGES_FORBIDDEN", chat_id=615
    )
    voice = fakes.amojo.message_hook("tg-615", msg_type="voice", media=url)
    gone = fakes.amojo.message_hook(
        "tg-615", msg_type="file", text="Договор", media=f"{fakes.amojo.url}/attachments/nope"
    )
    for hook in (voice, gone):
        amo_id = await post(fakes, bridge, hook)
        assert (await status_of(fakes, amo_id))["status"] == 1

    first, second = sends(fakes, 615)
    assert first.params["text"] == f"📎 Голосовое сообщение: {url}"
    assert second.params["text"] == f"Договор\n\n📎 Файл: {fakes.amojo.url}/attachments/nope"


async def test_reply_to_maps_to_the_telegram_message(fakes: Fakes, bridge: RunningBridge) -> None:
    customer = await customer_says(fakes, 616, 77, text="Где мой заказ?")
    first = await post(
        fakes,
        bridge,
        fakes.amojo.message_hook("tg-616", text="Уже едет", reply_to_amo_id=customer["amo_id"]),
    )
    await status_of(fakes, first)
    second = await post(
        fakes, bridge, fakes.amojo.message_hook("tg-616", text="Вот трек", reply_to_amo_id=first)
    )
    await status_of(fakes, second)

    reply, follow = sends(fakes, 616)
    assert reply.params["reply_parameters"]["message_id"] == 77
    assert follow.params["reply_parameters"]["message_id"] == reply.result["message_id"]


async def share_phone(fakes: Fakes, chat_id: int, phone: str, *, own: bool) -> None:
    """The customer shares a contact (their own, or someone else's)."""
    contact = make_contact(phone, user_id=chat_id if own else chat_id + 1)
    await customer_says(fakes, chat_id, 5, text=None, contact=contact)


async def test_write_first_to_a_shared_phone_binds_the_chat(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await share_phone(fakes, 617, "+7 (916) 123-45-67", own=True)
    hook = fakes.amojo.message_hook(
        None, text="Здравствуйте, это менеджер", receiver_phone="89161234567"
    )
    amo_chat = hook["message"]["conversation"]["id"]
    amo_user = hook["message"]["receiver"]["id"]
    amo_id = await post(fakes, bridge, hook)

    assert (await status_of(fakes, amo_id))["status"] == 1
    assert [c.params["text"] for c in sends(fakes, 617) if "text" in c.params][-1] == (
        "Здравствуйте, это менеджер"
    )
    reply = await customer_says(fakes, 617, 6, text="Добрый день")
    assert reply["conversation_id"] == "tg-617"
    assert reply["conversation_ref_id"] == amo_chat
    assert reply["sender"]["ref_id"] == amo_user
    assert reply["amo_conversation_id"] == amo_chat


@pytest.mark.parametrize("own", [False, None], ids=["someone-elses-contact", "no-contact"])
async def test_write_first_to_an_unknown_phone_is_904(
    fakes: Fakes, bridge: RunningBridge, own: bool | None
) -> None:
    if own is not None:
        await share_phone(fakes, 618, "+79161112233", own=own)
    hook = fakes.amojo.message_hook(None, text="Здравствуйте", receiver_phone="+7 916 111-22-33")
    amo_id = await post(fakes, bridge, hook)

    status = await status_of(fakes, amo_id)
    assert (status["status"], status["error_code"]) == (-1, 904)
    assert "has not shared this phone with the bot" in status["error"]
    assert all(c.params.get("text") != "Здравствуйте" for c in fakes.telegram.sent_messages())


async def test_time_window_open_and_closed(fakes: Fakes, bridges: BridgeFactory) -> None:
    bridge = await bridges.start(TIME_WINDOW_SECONDS=600)
    await customer_says(fakes, 619, 1, text="только что")
    await customer_says(fakes, 620, 1, text="давно", date=int(time.time()) - 3600)
    open_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-619", text="в окне"))
    closed_id = await post(fakes, bridge, fakes.amojo.message_hook("tg-620", text="поздно"))

    assert (await status_of(fakes, open_id))["status"] == 1
    status = await status_of(fakes, closed_id)
    assert (status["status"], status["error_code"]) == (-1, 905)
    assert "last wrote 60 min ago" in status["error"]
    assert "time window" in status["error"]
    assert sends(fakes, 620) == []


async def test_typing_and_reaction_hooks_are_stored_in_both_shapes(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 621, 1)
    hooks = [
        fakes.amojo.typing_hook("tg-621"),
        fakes.amojo.typing_hook("tg-621", user_location="action"),
        fakes.amojo.reaction_hook("tg-621", client_msgid="tg-621-1"),
        fakes.amojo.reaction_hook("tg-621", client_msgid="tg-621-1", shape="message"),
    ]
    hooks[1]["action"]["typing"]["expired_at"] += 1
    hooks[3]["action"]["reaction"]["emoji"] = "🔥"
    for hook in hooks:
        await post(fakes, bridge, hook)

    typing = await bridge.bridge.repo.jobs(kind=KIND_AMO_TYPING)
    reactions = await bridge.bridge.repo.jobs(kind=KIND_AMO_REACTION)
    assert len(typing) == 2 and len(reactions) == 2
    assert {job.lane for job in typing + reactions} == {"chat:621"}
    assert all(set(job.payload) == {"hook", "received_at"} for job in typing + reactions)


@contextlib.asynccontextmanager
async def internal_service(secret: bytes) -> AsyncIterator[str]:
    """A server inside "our network" (127.0.0.2: loopback, not a configured amoCRM host)."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=secret, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.2:{port}"
    finally:
        await runner.cleanup()
        assert hits == [], f"the bridge fetched {hits} from the internal service"


# An allowed suffix whose DNS answer is private is refused too: tests/unit/test_media_policy.py.
@pytest.mark.parametrize("how", ["direct", "redirect"])
async def test_media_from_inside_the_network_is_never_fetched(
    fakes: Fakes, bridge: RunningBridge, how: str
) -> None:
    await customer_says(fakes, 617, 1)
    secret = b"root:x:0:0:internal secret"
    async with internal_service(secret) as internal:
        target = f"{internal}/latest/meta-data"
        # "redirect": from the configured amoCRM host, on to the inside.
        url = fakes.amojo.add_redirect("innocent.pdf", target) if how == "redirect" else target
        hook = fakes.amojo.message_hook(
            "tg-617", msg_type="file", text="Счёт", media=url, file_name="invoice.pdf"
        )
        amo_id = await post(fakes, bridge, hook)
        status = await status_of(fakes, amo_id)

    assert status["status"] == -1
    assert "not sent" in status["error"]
    [sent] = sends(fakes, 617)
    assert sent.method.lower() == "sendmessage"
    assert sent.params["text"] == "Счёт\n\n📎 invoice.pdf: не доставлен"
    assert all(secret not in call.files.get("document", b"") for call in fakes.telegram.calls)


async def test_a_media_download_that_drips_forever_is_cut_off(
    fakes: Fakes, bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bot.manager.spool, "MEDIA_DOWNLOAD_DEADLINE_SECONDS", 0.5)
    url = fakes.amojo.add_dripping_media("slow.pdf", "application/pdf", byte_every=0.05)
    await customer_says(fakes, 618, 1)
    await post(fakes, bridge, fakes.amojo.message_hook("tg-618", msg_type="file", media=url))

    async def cut_off() -> bool:
        jobs = await bridge.bridge.repo.jobs(kind=KIND_AMO_MESSAGE)
        return any("took over" in (job.last_error or "") for job in jobs)

    await wait_until(cut_off, timeout=10, what="the download cut off and retried later")


async def test_a_refused_file_is_reported_even_when_a_later_part_is_retried(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 619, 1)
    caption = "Подробности. " * 120  # longer than a caption: the text follows as a message
    fakes.telegram.fail("sendMessage", status=429, retry_after=1, chat_id=619, after=1)
    hook = fakes.amojo.message_hook(
        "tg-619", msg_type="file", text=caption, media="http://10.0.0.5/secret", file_name="a.pdf"
    )
    amo_id = await post(fakes, bridge, hook)
    status = await status_of(fakes, amo_id, wait=15)

    assert status["status"] == -1 and "not sent" in status["error"]
    first, second = sends(fakes, 619)
    assert first.params["text"] == "📎 a.pdf: не доставлен"
    assert second.params["text"] == caption.strip()


async def test_an_oversized_file_from_a_refused_host_does_not_leak_its_link(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    await customer_says(fakes, 620, 1)
    hook = fakes.amojo.message_hook(
        "tg-620",
        msg_type="file",
        text="Счёт",
        media="http://10.0.0.5/admin?token=s3cr3t",
        file_name="invoice.pdf",
        file_size=60 * 1024 * 1024,
    )
    amo_id = await post(fakes, bridge, hook)
    status = await status_of(fakes, amo_id)

    assert status["status"] == -1
    [sent] = sends(fakes, 620)
    assert sent.params["text"] == "Счёт\n\n📎 invoice.pdf: не доставлен"


async def test_a_broadcast_file_is_downloaded_once_and_resent_by_file_id(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    chats = (621, 622, 623)
    for chat in chats:
        await customer_says(fakes, chat, 1)
    pdf = b"%PDF-1.4 " + b"y" * 5000
    url = fakes.amojo.add_media("price.pdf", "application/pdf", pdf)
    hooks = [
        fakes.amojo.message_hook(f"tg-{chat}", msg_type="file", media=url, file_name="price.pdf")
        for chat in chats
    ]
    amo_ids = [await post(fakes, bridge, hook) for hook in hooks]  # a Salesbot broadcast
    for amo_id in amo_ids:
        assert (await status_of(fakes, amo_id))["status"] == 1

    assert fakes.amojo.media_downloads == ["price.pdf"]
    calls = [sends(fakes, chat)[0] for chat in chats]
    uploads = [call for call in calls if "document" in call.files]
    by_id = [call for call in calls if "document" not in call.files]
    assert len(uploads) == 1 and len(by_id) == 2
    assert {call.params["document"] for call in by_id} == {uploads[0].result["document"]["file_id"]}
    spool = bridge.bridge.settings.DATABASE_PATH.parent / "media-spool"
    assert list(spool.rglob("media-*")) == []  # nothing left on disk


async def test_a_full_disk_still_gets_the_customer_the_link(
    fakes: Fakes, bridge: RunningBridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_space)
    await customer_says(fakes, 624, 1)
    url = fakes.amojo.add_media("big.pdf", "application/pdf", b"%PDF" + b"z" * 2000)
    hook = fakes.amojo.message_hook("tg-624", msg_type="file", media=url, file_name="big.pdf")
    amo_id = await post(fakes, bridge, hook)
    assert (await status_of(fakes, amo_id))["status"] == 1
    [sent] = sends(fakes, 624)
    assert sent.params["text"] == f"📎 big.pdf: {url}"
