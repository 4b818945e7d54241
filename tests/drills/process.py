"""Bridges forked from a zygote that has imported the bridge already (fast kill -9 loops)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.harness import ROOT, Fakes, bridge_env, free_port, wait_listening


class ForkedBridges:
    """Bridge processes forked from a zygote that has already imported the bridge."""

    def __init__(self, fakes: Fakes, db_path: Path, log_path: Path, **extra: str) -> None:
        self.port = free_port()
        self.env = {**os.environ, **bridge_env(fakes, db_path, self.port, **extra)}
        self.env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_path
        self.zygote: asyncio.subprocess.Process | None = None
        self.pid: int | None = None

    @property
    def url(self) -> str:
        """The listener's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def _ask(self, line: str) -> int:
        assert self.zygote is not None and self.zygote.stdin and self.zygote.stdout
        self.zygote.stdin.write(f"{line}\n".encode())
        await self.zygote.stdin.drain()
        return int((await self.zygote.stdout.readline()).decode())

    async def spawn(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Fork a bridge and wait until its listener answers."""
        if self.zygote is None:
            self.zygote = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.drills.zygote",
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        self.pid = await self._ask(f"spawn {self.log_path}")
        await wait_listening(self.url, timeout)

    async def kill9(self) -> int:
        """SIGKILL the running bridge; returns its exit status."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        status = await self._ask(f"wait {self.pid}")
        self.pid = None
        return status

    async def terminate(self) -> int:
        """SIGTERM the running bridge; returns its exit status."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGTERM)
        status = await asyncio.wait_for(self._ask(f"wait {self.pid}"), 30)
        self.pid = None
        return status

    async def close(self) -> None:
        """Kill whatever still runs and stop the zygote."""
        if self.pid is not None:
            await self.kill9()
        if self.zygote is not None:
            assert self.zygote.stdin is not None
            self.zygote.stdin.close()
            await self.zygote.wait()
            self.zygote = None
