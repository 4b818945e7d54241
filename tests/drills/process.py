"""Bridges forked from the shared zygote on one database and port (fast kill -9 loops)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from tests.harness import ROOT, Fakes, ForkedProcess, Zygote, bridge_env, free_port, wait_listening


class ForkedBridges:
    """Bridge processes forked from a zygote that has already imported the bridge."""

    def __init__(self, fakes: Fakes, db_path: Path, log_path: Path, **extra: str) -> None:
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            **bridge_env(fakes, db_path, self.port, **extra),
            "PYTHONPATH": str(ROOT),
        }
        self.cwd = db_path.parent
        self.log_path = log_path
        self.child: ForkedProcess | None = None

    @property
    def url(self) -> str:
        """The listener's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running bridge's pid."""
        return self.child.pid if self.child is not None else None

    async def spawn(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Fork a bridge and wait until its listener answers."""
        zygote = Zygote.shared()
        spawn = {"log": str(self.log_path), "env": self.env, "cwd": str(self.cwd)}
        self.child = ForkedProcess(zygote, zygote.ask({"spawn": spawn}))
        await wait_listening(self.url, timeout)

    async def _stop(self, sig: int, timeout: float) -> int:  # noqa: ASYNC109
        assert self.child is not None
        child, self.child = self.child, None
        child.send_signal(sig)
        return await asyncio.wait_for(child.wait(), timeout)

    async def kill9(self) -> int:
        """SIGKILL the running bridge; returns its exit status."""
        return await self._stop(signal.SIGKILL, 15)

    async def terminate(self) -> int:
        """SIGTERM the running bridge; returns its exit status."""
        return await self._stop(signal.SIGTERM, 30)

    async def close(self) -> None:
        """Kill whatever still runs."""
        if self.child is not None:
            await self.kill9()
