"""TypingIndicator against the fake Bot API with a controlled clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from bot.common.bots import Bots
from bot.common.ids import primary_chat
from bot.manager.typing_indicator import TypingIndicator
from simulators.telegram import FakeTelegram
from tests.harness import TOKEN, wait_until


class Clock:
    """A unix clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(telegram: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(telegram.url))
    async with Bot(TOKEN, session=session) as bot:
        yield bot


def typings(telegram: FakeTelegram, chat_id: int) -> int:
    return sum(1 for call in telegram.calls_of("sendChatAction") if call.chat_id == chat_id)


async def test_later_hook_extends_the_running_indicator(telegram: FakeTelegram, bot: Bot) -> None:
    clock = Clock()
    indicator = TypingIndicator(Bots([bot]), repeat_every=0.01, clock=clock)
    indicator.start(primary_chat(9), clock.now + 5)
    await telegram.wait_for(lambda: typings(telegram, 9) >= 2)

    indicator.start(primary_chat(9), clock.now + 10)
    clock.now += 7
    seen = typings(telegram, 9)
    await telegram.wait_for(lambda: typings(telegram, 9) >= seen + 2, what="still typing")
    clock.now += 4
    await wait_until(
        lambda: not indicator.is_active(primary_chat(9)), what="stopped after the new deadline"
    )
    await indicator.close()


async def test_stop_and_close_end_indicators_at_once(telegram: FakeTelegram, bot: Bot) -> None:
    clock = Clock()
    indicator = TypingIndicator(Bots([bot]), repeat_every=0.01, clock=clock)
    indicator.start(primary_chat(8), clock.now + 5)
    indicator.start(primary_chat(7), clock.now + 5)
    await telegram.wait_for(lambda: typings(telegram, 8) >= 1 and typings(telegram, 7) >= 1)

    indicator.stop(primary_chat(8))
    assert not indicator.is_active(primary_chat(8))
    assert indicator.is_active(primary_chat(7))
    await indicator.close()
    assert not indicator.is_active(primary_chat(7))


async def test_past_deadline_and_blocked_chat(telegram: FakeTelegram, bot: Bot) -> None:
    clock = Clock()
    indicator = TypingIndicator(Bots([bot]), repeat_every=0.01, clock=clock)
    indicator.start(primary_chat(6), clock.now)
    assert not indicator.is_active(primary_chat(6))

    telegram.block(5)
    indicator.start(primary_chat(5), clock.now + 5)
    await wait_until(
        lambda: not indicator.is_active(primary_chat(5)), what="gave up on a blocked chat"
    )
    assert [call.status for call in telegram.calls_of("sendChatAction")] == [403]
