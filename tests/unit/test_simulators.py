"""Quick checks that the fakes behave like the services they stand in for."""

import asyncio
import json
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import BufferedInputFile, ReactionTypeEmoji
from aiogram.types.reaction_type_union import ReactionTypeUnion as ReactionType
from aiohttp import web

from simulators.amojo import FakeAmojo, sign_request
from simulators.crm import FakeCrm
from simulators.factories import private_message_update
from simulators.telegram import FakeTelegram

TOKEN = "123456:TEST-token"
V_SECRET = "f2d7f8704eff95087ed45b23ba99c0b5aac8278e"
V_CHANNEL = "344a5002-f8ca-454d-af3d-396180102ac7"
V_ACCOUNT = "52e591f7-c98f-4255-8495-827210138c81"
V1_BODY = (
    b'{"account_id":"52e591f7-c98f-4255-8495-827210138c81",'
    b'"title":"ChatsIntegration","hook_api_version":"v2"}'
)
V1_DATE = "Wed, 15 Dec 2021 23:12:55 +0000"
V1_PATH = f"/v2/origin/custom/{V_CHANNEL}/connect"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(telegram.url))
    async with Bot(TOKEN, session=session) as bot:
        yield bot


@pytest.fixture
async def amojo() -> AsyncIterator[FakeAmojo]:
    async with FakeAmojo(V_CHANNEL, V_SECRET, V_ACCOUNT) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def signed_post(
    http: aiohttp.ClientSession, amojo: FakeAmojo, path: str, body: Any
) -> tuple[int, Any]:
    raw = json.dumps(body).encode()
    headers = amojo.sign("POST", path, raw)
    async with http.post(amojo.url + path, data=raw, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


async def connect(http: aiohttp.ClientSession, amojo: FakeAmojo) -> None:
    body = {"account_id": V_ACCOUNT, "hook_api_version": "v2"}
    status, _ = await signed_post(http, amojo, f"/v2/origin/custom/{V_CHANNEL}/connect", body)
    assert status == 200


def text_message(msgid: str, text: str = "hi") -> dict[str, Any]:
    return {
        "event_type": "new_message",
        "payload": {
            "timestamp": 1700000000,
            "msec_timestamp": 1700000000000,
            "msgid": msgid,
            "conversation_id": "tg-7",
            "sender": {"id": "tg-7", "name": "Ivan"},
            "message": {"type": "text", "text": text},
        },
    }


async def test_amojo_accepts_official_vector_and_rejects_tampering(
    amojo: FakeAmojo, http: aiohttp.ClientSession
) -> None:
    amojo.now = lambda: parsedate_to_datetime(V1_DATE).timestamp()
    headers = sign_request(V_SECRET, "POST", V1_PATH, V1_BODY, date=V1_DATE)
    assert headers["Content-MD5"] == "2fbcb3c652b61e24e004daddfc73d0ce"
    assert headers["X-Signature"] == "81211856ce0c5095f3e1a90c0a38dc9d736cfd55"

    tampered = {**headers, "X-Signature": "0" + headers["X-Signature"][1:]}
    async with http.post(amojo.url + V1_PATH, data=V1_BODY, headers=tampered) as response:
        assert response.status == 403
    assert amojo.rejected == [(V1_PATH, "signature")]
    assert not amojo.connected

    async with http.post(amojo.url + V1_PATH, data=V1_BODY, headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["scope_id"] == f"{V_CHANNEL}_{V_ACCOUNT}"
    assert amojo.connected


async def test_amojo_rejects_stale_date(amojo: FakeAmojo, http: aiohttp.ClientSession) -> None:
    headers = sign_request(V_SECRET, "POST", V1_PATH, V1_BODY, date=V1_DATE)
    async with http.post(amojo.url + V1_PATH, data=V1_BODY, headers=headers) as response:
        assert response.status == 403
    assert amojo.rejected == [(V1_PATH, "date")]


async def test_amojo_refuses_duplicate_msgid(amojo: FakeAmojo, http: aiohttp.ClientSession) -> None:
    path = f"/v2/origin/custom/{amojo.scope_id}"
    status, _ = await signed_post(http, amojo, path, text_message("tg-7-1"))
    assert status == 404  # not connected yet
    await connect(http, amojo)

    status, body = await signed_post(http, amojo, path, text_message("tg-7-1"))
    assert status == 200
    assert body["new_message"]["ref_id"] == "tg-7-1"
    assert body["new_message"]["receiver_id"] is None
    status, _ = await signed_post(http, amojo, path, text_message("tg-7-1", "again"))
    assert status == 400
    assert [m["message"]["text"] for m in amojo.messages_for("tg-7")] == ["hi"]
    assert amojo.attempts["tg-7-1"] == 2


async def test_amojo_delivery_status_accepts_both_shapes(
    amojo: FakeAmojo, http: aiohttp.ClientSession
) -> None:
    await connect(http, amojo)
    hook = amojo.message_hook("tg-7", text="hello")
    amo_id = hook["message"]["message"]["id"]
    amojo.hook_message_ids.add(amo_id)
    path = f"/v2/origin/custom/{amojo.scope_id}/{amo_id}/delivery_status"

    assert (await signed_post(http, amojo, path, {"msgid": amo_id, "delivery_status": 1}))[0] == 200
    body = {"status_code": -1, "error_code": 905, "error": "Telegram user blocked the bot"}
    assert (await signed_post(http, amojo, path, body))[0] == 200
    assert (await signed_post(http, amojo, path, {"status_code": -1, "error_code": 905}))[0] == 400
    unknown = f"/v2/origin/custom/{amojo.scope_id}/nope/delivery_status"
    assert (await signed_post(http, amojo, unknown, {"status_code": 1}))[0] == 404
    assert [(s["status"], s["error_code"]) for s in amojo.statuses_for(amo_id)] == [
        (1, None),
        (-1, 905),
    ]


async def test_amojo_write_first_hook_omits_client_ids(amojo: FakeAmojo) -> None:
    hook = amojo.message_hook(None, text="hello", receiver_phone="+79151112233")
    assert "client_id" not in hook["message"]["conversation"]
    assert "client_id" not in hook["message"]["receiver"]
    assert hook["message"]["receiver"]["phone"] == "+79151112233"


async def test_get_updates_offset_and_long_polling(telegram: FakeTelegram, bot: Bot) -> None:
    for message_id in (1, 2, 3):
        telegram.push_update(private_message_update(7, message_id, text=f"m{message_id}"))
    updates = await bot.get_updates(offset=0, timeout=0)
    assert [u.update_id for u in updates] == [1, 2, 3]
    updates = await bot.get_updates(offset=3, timeout=0)
    assert [u.update_id for u in updates] == [3]
    assert telegram.confirmed_offset == 3
    assert [u["update_id"] for u in telegram.pending_updates()] == [3]

    waiting = asyncio.create_task(bot.get_updates(offset=4, timeout=30))
    await telegram.wait_for(lambda: telegram.confirmed_offset == 4)
    telegram.push_update(private_message_update(7, 4, text="m4"))
    updates = await asyncio.wait_for(waiting, 5)
    assert [u.update_id for u in updates] == [4]


async def test_reactions_are_withheld_unless_allowed(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.push_update({"message_reaction": {"chat": {"id": 7, "type": "private"}}})
    assert await bot.get_updates(timeout=0) == []
    assert len(telegram.skipped_updates) == 1


async def test_injected_429_and_block(telegram: FakeTelegram, bot: Bot) -> None:
    telegram.fail("sendMessage", status=429, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(7, "hello")
    assert caught.value.retry_after == 3
    sent = await bot.send_message(7, "hello")
    assert sent.message_id == 1000
    assert sent.chat.id == 7
    assert [c.failed for c in telegram.calls_of("sendMessage")] == [True, False]

    telegram.fail("sendMessage", status=403, chat_id=8)
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(8, "hello")
    assert (await bot.send_message(7, "second")).message_id == 1001


async def test_validation_like_telegram(telegram: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(7, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(7, "a <b", parse_mode="HTML")
    sent = await bot.send_message(7, "&lt;ok&gt;", parse_mode="HTML")
    reaction: list[ReactionType] = [ReactionTypeEmoji(emoji="❤️")]  # VS16: not allowed
    with pytest.raises(TelegramBadRequest, match="REACTION_INVALID"):
        await bot.set_message_reaction(7, sent.message_id, reaction=reaction)
    await bot.set_message_reaction(7, sent.message_id, reaction=[ReactionTypeEmoji(emoji="❤")])
    assert telegram.reactions[(7, sent.message_id)] == ["❤"]


async def test_upload_and_download_files(telegram: FakeTelegram, bot: Bot) -> None:
    photo = BufferedInputFile(b"\x89PNG fake", filename="p.png")
    sent = await bot.send_photo(7, photo, caption="look")
    assert sent.photo is not None
    assert telegram.calls_of("sendPhoto")[0].files["photo"] == b"\x89PNG fake"
    with pytest.raises(TelegramBadRequest, match="caption is too long"):
        await bot.send_photo(7, sent.photo[-1].file_id, caption="c" * 1025)

    file_id, _ = telegram.add_file(b"document bytes")
    file = await bot.get_file(file_id)
    assert file.file_path is not None
    downloaded = await bot.download_file(file.file_path)
    assert downloaded is not None
    assert downloaded.read() == b"document bytes"

    big_id, _ = telegram.add_file(b"x", file_size=21 * 1024 * 1024)
    with pytest.raises(TelegramBadRequest, match="file is too big"):
        await bot.get_file(big_id)


async def test_rate_helpers(telegram: FakeTelegram, bot: Bot) -> None:
    for chat_id in (7, 7, 8):
        await bot.send_message(chat_id, "x")
    assert telegram.max_rate() == 3
    assert telegram.max_rate_per_chat() == 2


async def test_wait_for_reports_timeout(telegram: FakeTelegram) -> None:
    with pytest.raises(AssertionError, match="timed out"):
        await telegram.wait_for(lambda: False, timeout=0.05, what="never")


async def test_crm_account_requires_bearer(http: aiohttp.ClientSession) -> None:
    async with FakeCrm("secret-token", V_ACCOUNT) as crm:
        url = f"{crm.url}/api/v4/account?with=amojo_id"
        async with http.get(url) as response:
            assert response.status == 401
            assert (await response.json(content_type=None))["status"] == 401
        headers = {"Authorization": "Bearer secret-token"}
        async with http.get(url, headers=headers) as response:
            assert response.status == 200
            assert (await response.json(content_type=None))["amojo_id"] == V_ACCOUNT
        crm.fail("/api/v4/account", 503)
        async with http.get(url, headers=headers) as response:
            assert response.status == 503
        assert [r.status for r in crm.requests_to("/api/v4/account")] == [401, 200, 503]


async def test_post_hook_signs_raw_body(amojo: FakeAmojo) -> None:
    received: list[tuple[str, bytes, str]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append((request.path, await request.read(), request.headers["X-Signature"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/amojo/{scope_id}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        hook = amojo.message_hook("tg-7", text="hello")
        assert await amojo.post_hook(base, None, hook) == (200, "ok")
        assert await amojo.post_hook(base, "x", b"{}", signature="bad") == (200, "ok")
    finally:
        await runner.cleanup()
    path, body, signature = received[0]
    assert path == f"/amojo/{amojo.scope_id}"
    assert signature == amojo.sign_hook(body)
    assert hook["message"]["message"]["id"] in amojo.hook_message_ids
    assert received[1][2] == "bad"
