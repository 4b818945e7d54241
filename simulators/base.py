"""Common lifecycle and waiting helpers of the loopback fake servers."""

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web


class FakeServer:
    """An aiohttp application on 127.0.0.1 with an ephemeral port."""

    def __init__(self) -> None:
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._changed = asyncio.Condition()
        self._closing = False

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT (only after start)."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        """Start listening on a free loopback port."""
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Stop the server and release long-polling waiters."""
        self._closing = True
        await self._notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def describe(self) -> str:
        """Summary of the recorded state used in timeout messages."""
        return ""

    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
        what: str = "",
    ) -> None:
        """Wait until predicate() holds, re-checking after every recorded request."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(predicate)
        except TimeoutError:
            label = what or getattr(predicate, "__name__", "condition")
            raise AssertionError(
                f"{type(self).__name__}: timed out after {timeout}s waiting for {label}; "
                f"{self.describe()}"
            ) from None
