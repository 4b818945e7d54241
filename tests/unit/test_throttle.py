"""Hook answers go before paced Telegram sends, but never hold them for long."""

from __future__ import annotations

import asyncio

from bot.jobs.throttle import HookTraffic


async def test_quiet_returns_at_once_when_no_hook_is_being_answered() -> None:
    traffic = HookTraffic()
    await asyncio.wait_for(traffic.quiet(at_most=10), timeout=1)


async def test_quiet_waits_for_the_answer_to_finish() -> None:
    traffic = HookTraffic()
    finished = asyncio.Event()
    waiter_done: list[bool] = []

    async def send_when_quiet() -> None:
        await traffic.quiet(at_most=10)
        waiter_done.append(finished.is_set())

    with traffic.answering():
        task = asyncio.create_task(send_when_quiet())
        await asyncio.sleep(0)
        assert not task.done()
        finished.set()
    await asyncio.wait_for(task, timeout=1)
    assert waiter_done == [True]


async def test_quiet_gives_up_waiting_after_at_most() -> None:
    traffic = HookTraffic()
    with traffic.answering():
        await asyncio.wait_for(traffic.quiet(at_most=0.01), timeout=1)
