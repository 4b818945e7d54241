"""The account lookup at start: a definitive answer stops the start, a strange one is retried."""

from __future__ import annotations

import httpx
import pytest

from bot.amocrm.channel import ServiceDown, resolve_account_id
from bot.amocrm.crm import CrmClient, StaticToken
from bot.common.settings import Settings, StartupError, load_settings

BASE = "https://acme.amocrm.ru"


def settings() -> Settings:
    return load_settings(
        _env_file=None,
        TELEGRAM_BOT_TOKEN="123456:AAE-valid",
        AMOCRM_BASE_URL=BASE,
        AMOCRM_ACCESS_TOKEN="token",
        AMOJO_CHANNEL_ID="344a5002-f8ca-454d-af3d-396180102ac7",
        AMOJO_CHANNEL_SECRET="f2d7f8704eff95087ed45b23ba99c0b5aac8278e",
        PUBLIC_BASE_URL="https://bridge.acme.ru",
    )


async def lookup(response: httpx.Response) -> str:
    client = CrmClient(
        BASE,
        StaticToken("token"),
        transport=httpx.MockTransport(lambda request: response),
        max_rate_limit_wait=0,
    )
    try:
        return await resolve_account_id(settings(), client)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(503, text="busy"),
        httpx.Response(429, text="slow down"),
        httpx.Response(402, json={"title": "Payment Required"}),
    ],
    ids=["html-200", "503", "429", "402"],
)
async def test_transient_answers_are_waited_for(response: httpx.Response) -> None:
    with pytest.raises(ServiceDown):
        await lookup(response)


@pytest.mark.parametrize(
    ("response", "named"),
    [
        (httpx.Response(301, headers={"Location": "https://acme.kommo.com/"}), "AMOCRM_BASE_URL"),
        (httpx.Response(401, json={"title": "Unauthorized"}), "AMOCRM_ACCESS_TOKEN"),
        (httpx.Response(404, text=""), "AMOCRM_BASE_URL"),
    ],
    ids=["redirect", "401", "404"],
)
async def test_definitive_answers_name_the_setting(response: httpx.Response, named: str) -> None:
    with pytest.raises(StartupError, match=named):
        await lookup(response)


async def test_the_amojo_id_is_read() -> None:
    assert await lookup(httpx.Response(200, json={"amojo_id": "52e591f7"})) == "52e591f7"
