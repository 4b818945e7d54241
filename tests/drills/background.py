"""A real bridge and its fakes on an event loop of their own, for synchronous drills.

hypothesis drives its examples synchronously; the bridge and the fakes run on a loop in a
background thread, and each step of an example runs there with `run(...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.harness import BridgeFactory, Fakes, RunningBridge, started_fakes

T = TypeVar("T")


@dataclass
class Background:
    """The running bridge and fakes, and a way to run coroutines on their loop."""

    loop: asyncio.AbstractEventLoop
    fakes: Fakes
    bridge: RunningBridge

    def run(self, step: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run `step()` on the bridge's loop and return its result."""
        future = asyncio.run_coroutine_threadsafe(_call(step), self.loop)
        return future.result(timeout)


async def _call(step: Callable[[], Awaitable[T]]) -> T:
    return await step()


@contextlib.contextmanager
def background_bridge(db_path: Path, **settings: Any) -> Iterator[Background]:
    """Start fakes and a bridge on a background loop; stop both afterwards."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        async with started_fakes() as fakes:
            factory = BridgeFactory(fakes=fakes, db_path=db_path)
            try:
                state["fakes"] = fakes
                state["bridge"] = await factory.start(**settings)
                state["stop"] = asyncio.Event()
            except BaseException as exc:
                state["error"] = exc
                raise
            finally:
                ready.set()
            try:
                await state["stop"].wait()
            finally:
                await factory.stop_all()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the bridge did not start"
    if "error" in state:
        thread.join(10)
        raise state["error"]
    try:
        yield Background(loop, state["fakes"], state["bridge"])
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        loop.close()
