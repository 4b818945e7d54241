"""The writer lock: FIFO, urgent holders first, cancellation never leaks ownership."""

from __future__ import annotations

import asyncio

from storage.repository import WriteLock


async def test_urgent_waiters_go_before_queued_normal_ones() -> None:
    lock = WriteLock()
    order: list[str] = []
    first_holds = asyncio.Event()
    release_first = asyncio.Event()

    async def holder(name: str, *, urgent: bool, wait: asyncio.Event | None = None) -> None:
        async with lock.hold(urgent=urgent):
            order.append(name)
            if wait is not None:
                first_holds.set()
                await wait.wait()

    first = asyncio.create_task(holder("first", urgent=False, wait=release_first))
    await first_holds.wait()
    tasks = [
        asyncio.create_task(holder("normal-1", urgent=False)),
        asyncio.create_task(holder("normal-2", urgent=False)),
        asyncio.create_task(holder("urgent", urgent=True)),
    ]
    await asyncio.sleep(0)  # let every waiter queue up
    release_first.set()
    await asyncio.gather(first, *tasks)

    assert order == ["first", "urgent", "normal-1", "normal-2"]


async def test_a_cancelled_waiter_does_not_keep_or_lose_the_lock() -> None:
    lock = WriteLock()
    release = asyncio.Event()
    holding = asyncio.Event()

    async def long_holder() -> None:
        async with lock.hold():
            holding.set()
            await release.wait()

    owner = asyncio.create_task(long_holder())
    await holding.wait()
    waiter = asyncio.create_task(_acquire_and_release(lock))
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await owner
    await asyncio.gather(waiter, return_exceptions=True)

    got_it = await asyncio.wait_for(_acquire_and_release(lock), timeout=1)
    assert got_it


async def _acquire_and_release(lock: WriteLock) -> bool:
    async with lock.hold():
        return True
