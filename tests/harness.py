"""Runs the real bridge in-process against the loopback fakes (shared by the e2e tests)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import create_bridge
from bot.bridge import Bridge
from bot.common.settings import Settings
from bot.jobs.throttle import Pace
from bot.jobs.worker import Backoff
from simulators.amojo import FakeAmojo
from simulators.crm import FakeCrm
from simulators.telegram import FakeTelegram
from storage.migrations import MIGRATIONS

TOKEN = "123456:TEST-token-not-real"
CHANNEL_ID = "344a5002-f8ca-454d-af3d-396180102ac7"
CHANNEL_SECRET = "f2d7f8704eff95087ed45b23ba99c0b5aac8278e"
ACCOUNT_ID = "52e591f7-c98f-4255-8495-827210138c81"
CRM_TOKEN = "crm-long-lived-token"
FAST_BACKOFF = Backoff(base=0.05, cap=0.5)
# For tests about what is sent, not how fast: Telegram's limits are the drills' business.
FAST_PACE = Pace(global_rate=2000.0, per_chat_interval=0.001, per_chat_burst=100)
ROOT = Path(__file__).resolve().parents[1]


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """A database with the schema as migration `version` left it (an upgrade's starting point).

    Fill it with the returned connection (a context manager committing the inserts), then
    close it and open the repository, which migrates it forward.
    """
    db = sqlite3.connect(path)
    for number, script in MIGRATIONS:
        if number <= version:
            db.executescript(script)
    db.execute(f"PRAGMA user_version = {version}")
    return db


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109
    what: str = "",
) -> None:
    """Re-check a condition every few ms until it holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


async def wait_listening(
    url: str,
    timeout: float,  # noqa: ASYNC109
    *,
    statuses: tuple[int, ...] = (200, 503),
    alive: Callable[[], None] | None = None,
    started: bool = False,
) -> None:
    """Wait until a bridge's GET /healthz answers one of `statuses`; `alive` may raise early.

    `started`: also wait until start-up is over (no "starting: …" problem).
    """

    def listening(status: int, body: dict[str, Any]) -> bool:
        if status not in statuses:
            return False
        problems = body.get("problems", [])
        return not started or not any(problem.startswith("starting:") for problem in problems)

    await wait_health(url, listening, timeout, f"GET {url}/healthz", alive=alive)


async def wait_health(
    url: str,
    predicate: Callable[[int, dict[str, Any]], bool],
    timeout: float = 30.0,  # noqa: ASYNC109
    what: str = "",
    alive: Callable[[], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Poll GET {url}/healthz until `predicate(status, body)` holds; the answer that did."""
    seen: list[tuple[int, dict[str, Any]]] = []
    async with aiohttp.ClientSession() as http:

        async def matches() -> bool:
            if alive is not None:
                alive()
            try:
                async with http.get(f"{url}/healthz") as response:
                    answer = (response.status, await response.json())
            except aiohttp.ClientError:
                return False
            seen[:] = [answer]
            return predicate(*answer)

        try:
            await wait_until(matches, timeout=timeout, what=what or "a /healthz answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {seen}") from None
    return seen[0]


@dataclass(slots=True)
class Fakes:
    """The three loopback services."""

    telegram: FakeTelegram
    amojo: FakeAmojo
    crm: FakeCrm


def bridge_env(fakes: Fakes, db_path: Path, port: int, **extra: str) -> dict[str, str]:
    """Environment variables that point a bridge at the fakes."""
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": fakes.telegram.url,
        "AMOCRM_BASE_URL": fakes.crm.url,
        "AMOCRM_ACCESS_TOKEN": CRM_TOKEN,
        "AMOJO_BASE_URL": fakes.amojo.url,
        "AMOJO_CHANNEL_ID": CHANNEL_ID,
        "AMOJO_CHANNEL_SECRET": CHANNEL_SECRET,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "DATABASE_PATH": str(db_path),
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


@dataclass(slots=True)
class RunningBridge:
    """A bridge polling the fake Telegram in a background task."""

    bridge: Bridge
    task: asyncio.Task[None]
    port: int

    @property
    def url(self) -> str:
        """Base URL of the bridge's HTTP listener."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def scope_id(self) -> str:
        """The amojo scope the bridge connected with."""
        return self.bridge.channel.scope_id

    async def stop(self) -> None:
        """Stop polling (as SIGTERM would), run the shutdown hooks and release everything."""
        if not self.task.done():
            with contextlib.suppress(RuntimeError):
                await self.bridge.dp.stop_polling()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.task, timeout=15)
        await self.bridge.close()


@dataclass(slots=True)
class BridgeFactory:
    """Starts bridges on one database, so a test can restart one."""

    fakes: Fakes
    db_path: Path
    running: list[RunningBridge] = field(default_factory=list)

    def settings(self, port: int, **extra: Any) -> Settings:
        """Settings of a bridge pointed at the fakes."""
        env: dict[str, Any] = dict(bridge_env(self.fakes, self.db_path, port))
        env.update(extra)
        return Settings(_env_file=None, **env)

    async def start(
        self, *, backoff: Backoff = FAST_BACKOFF, pace: Pace = FAST_PACE, **extra: Any
    ) -> RunningBridge:
        """Create, connect and start polling; returns once the listener serves.

        `pace`: how fast it sends to Telegram. Tests about what is sent need not wait out
        Telegram's limits; the tests about pacing pass `Pace()`, the real ones.
        """
        port = free_port()
        bridge = await create_bridge(self.settings(port, **extra), backoff=backoff, pace=pace)
        started = asyncio.Event()

        async def mark_started(**_: Any) -> None:
            started.set()

        bridge.dp.startup.register(mark_started)
        task = asyncio.create_task(bridge.run_polling(handle_signals=False))
        waiter = asyncio.create_task(started.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=10, return_when="FIRST_COMPLETED")
        if waiter not in done:
            waiter.cancel()
            try:
                if task.done():
                    task.result()
                raise AssertionError("bridge did not start within 10 s")
            finally:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await bridge.close()  # its database threads would keep pytest from exiting
        running = RunningBridge(bridge=bridge, task=task, port=bridge.listener.port or port)
        self.running.append(running)
        return running

    async def stop_all(self) -> None:
        """Stop every bridge this factory started."""
        for running in reversed(self.running):
            await running.stop()
        self.running.clear()


@contextlib.asynccontextmanager
async def started_fakes() -> AsyncIterator[Fakes]:
    """Start the three fakes, close them afterwards."""
    async with (
        FakeTelegram(TOKEN) as telegram,
        FakeAmojo(CHANNEL_ID, CHANNEL_SECRET, ACCOUNT_ID) as amojo,
        FakeCrm(CRM_TOKEN, ACCOUNT_ID) as crm,
    ):
        amojo.crm = crm  # one account: chats and manager messages show up in the CRM too
        yield Fakes(telegram=telegram, amojo=amojo, crm=crm)


class Zygote:
    """A process that imported the bridge once and forks `python -m bot` children from it
    (tests/zygote.py): a cold start costs seconds of CPU, a fork milliseconds."""

    _shared: Zygote | None = None

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote"],
            cwd=ROOT,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @classmethod
    def shared(cls) -> Zygote:
        """This test process's zygote (started on first use, stopped at exit)."""
        if cls._shared is None or cls._shared._process.poll() is not None:
            cls._shared = cls()
            atexit.register(cls._shared.close)
        return cls._shared

    def ask(self, request: dict[str, Any]) -> Any:
        """One request and its answer (the zygote answers at once, but for `wait`)."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def close(self) -> None:
        """Stop forking (children already forked are left to their tests)."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=30)


class ForkedProcess:
    """A child forked by the zygote, with the part of asyncio's Process the tests use."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        """Its exit code once it exited (negative: the signal that killed it)."""
        if self._code is None:
            self._code = self.zygote.ask({"poll": self.pid})
        return self._code

    async def wait(self) -> int:
        """Its exit code, once it exits."""
        while self.returncode is None:  # noqa: ASYNC110 - another process's exit: polled
            await asyncio.sleep(0.02)
        assert self._code is not None
        return self._code

    def send_signal(self, sig: int) -> None:
        """Send it a signal (nothing when it already exited)."""
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(signal.SIGKILL)


class BridgeProcess:
    """`python -m bot` as a real child process, restartable on the same database and port.

    The child gets only the bridge's environment and runs in the database's directory, so no
    developer `.env` leaks in. It is forked from a zygote that imported the bridge already
    (`warm`); tests about the start itself (signals while aiogram is still being imported)
    start it cold, as `python -m bot` does.
    """

    def __init__(
        self, fakes: Fakes, db_path: Path, log_path: Path, *, warm: bool = True, **extra: str
    ) -> None:
        self.warm = warm
        port = free_port()
        self.port = int(extra.get("HTTP_PORT", port))
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            **bridge_env(fakes, db_path, port, **extra),
        }
        self.cwd = db_path.parent
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | ForkedProcess | None = None
        self.starts = 0

    @property
    def process(self) -> asyncio.subprocess.Process | ForkedProcess:
        """The current child."""
        assert self._process is not None, "not spawned"
        return self._process

    @property
    def url(self) -> str:
        """Base URL of the child's HTTP listener."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the children wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")

    async def spawn(self) -> None:
        """Start a child (the previous one must have exited)."""
        assert self._process is None or self._process.returncode is not None, "still running"
        with self.log_path.open("ab") as log:
            if self.starts:
                log.write(f"--- start {self.starts}\n".encode())
                log.flush()
            if self.warm:
                zygote = Zygote.shared()
                spawn = {"log": str(self.log_path), "env": self.env, "cwd": str(self.cwd)}
                self._process = ForkedProcess(zygote, zygote.ask({"spawn": spawn}))
                self.starts += 1
                return
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                env=self.env,
                cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.starts += 1

    async def start(self, *, timeout: float = 90.0) -> None:  # noqa: ASYNC109
        """Spawn a child and wait until its start-up is over (hooks taken, polling)."""
        await self.spawn()
        await wait_listening(self.url, timeout, alive=self.still_running, started=True)

    def still_running(self) -> None:
        """Raise when the child has exited (with its log)."""
        if self.process.returncode is not None:
            raise AssertionError(f"bridge exited ({self.process.returncode}):\n{self.log()}")

    async def wait_healthy(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Wait until GET /healthz answers 200 (the child is connected and polling)."""
        await wait_listening(self.url, timeout, statuses=(200,), alive=self.still_running)

    async def wait_health(
        self,
        predicate: Callable[[int, dict[str, Any]], bool],
        timeout: float = 30.0,  # noqa: ASYNC109
        what: str = "",
    ) -> tuple[int, dict[str, Any]]:
        """Poll GET /healthz until `predicate(status, body)` holds; the answer that did."""
        return await wait_health(self.url, predicate, timeout, what, alive=self.still_running)

    async def wait_exit(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        """The child's exit code, once it exits by itself."""
        return await asyncio.wait_for(self.process.wait(), timeout=timeout)

    async def stop_with(self, sig: int, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        """Send `sig` and return the exit code (fails when the child does not exit in time)."""
        self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), timeout=timeout)

    async def terminate(self, *, timeout: float = 15.0) -> int:  # noqa: ASYNC109
        """SIGTERM and the exit code."""
        return await self.stop_with(signal.SIGTERM, timeout)

    async def kill(self) -> None:
        """SIGKILL (a no-op when it already exited) and reap the child."""
        if self._process is None:
            return
        if self._process.returncode is None:
            self._process.kill()
        await asyncio.wait_for(self._process.wait(), timeout=15)


async def spawn_bridge(
    fakes: Fakes, db_path: Path, log_path: Path, *, warm: bool = True, **extra: str
) -> BridgeProcess:
    """Start `python -m bot` on a fresh port (without waiting for it)."""
    child = BridgeProcess(fakes, db_path, log_path, warm=warm, **extra)
    await child.spawn()
    return child
