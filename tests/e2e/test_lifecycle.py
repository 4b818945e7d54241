"""Start, fail and stop like a service: `python -m bot` against the fakes, as systemd runs it.

A definitive refusal exits 2 naming the setting (never a traceback, never a hang); a service
that is down is waited for while `/healthz` says what for; a signal at any stage exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from bot.app import Transports, create_bridge
from simulators.factories import private_message_update
from tests.harness import (
    CHANNEL_SECRET,
    CRM_TOKEN,
    FAST_BACKOFF,
    TOKEN,
    BridgeFactory,
    BridgeProcess,
    Fakes,
    bridge_env,
    free_port,
    spawn_bridge,
    wait_health,
    wait_until,
)

STOP_WITHIN_SECONDS = 10.0


async def exit_code(child: BridgeProcess, timeout: float = 60.0) -> tuple[int, str]:  # noqa: ASYNC109
    """The code and log of a child that must stop by itself within `timeout`."""
    code = await child.wait_exit(timeout)
    return code, child.log()


def assert_clean(log: str) -> None:
    """No traceback, no secret."""
    assert "Traceback" not in log, log
    assert "CancelledError" not in log, log
    for secret in (TOKEN.split(":")[1], CHANNEL_SECRET, CRM_TOKEN):
        assert secret not in log


def has_problem(text: str) -> Any:
    """A /healthz predicate: some problem contains `text`."""
    return lambda status, body: any(text in problem for problem in body["problems"])


# ---- definitive refusals: exit 2, one line naming the setting, nothing sent to amoCRM ------


async def test_telegram_rejecting_the_token_exits_2_naming_it(fakes: Fakes, spawn: Any) -> None:
    child = await spawn(TELEGRAM_BOT_TOKEN="654321:a-token-telegram-does-not-know")
    code, log = await exit_code(child)

    assert code == 2, log
    assert "TELEGRAM_BOT_TOKEN" in log
    assert "654321" in log  # the bot, by its id
    assert "a-token-telegram-does-not-know" not in log
    assert_clean(log)
    assert fakes.telegram.calls_of("getUpdates") == []


async def test_port_in_use_exits_2_before_any_connect(fakes: Fakes, spawn: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        child = await spawn(HTTP_PORT=str(port))
        code, log = await exit_code(child, 30)

    assert code == 2, log
    assert "HTTP_PORT" in log and "already in use" in log
    assert_clean(log)
    assert not any(r.path.endswith("/connect") for r in fakes.amojo.requests)
    assert fakes.crm.requests_to("/api/v4/account") == []


@pytest.mark.parametrize("host", ["no-such-host.invalid", "192.0.2.1"])
async def test_host_that_cannot_be_listened_on_exits_2(fakes: Fakes, spawn: Any, host: str) -> None:
    child = await spawn(HTTP_HOST=host)
    code, log = await exit_code(child, 30)

    assert code == 2, log
    assert "HTTP_HOST" in log
    assert_clean(log)
    assert not any(r.path.endswith("/connect") for r in fakes.amojo.requests)


async def test_database_path_that_cannot_be_created_exits_2(fakes: Fakes, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    child = await spawn_bridge(
        fakes,
        tmp_path / "bridge.sqlite3",
        tmp_path / "bridge.log",
        DATABASE_PATH=str(blocker / "bridge.sqlite3"),
    )
    try:
        code, log = await exit_code(child, 30)
    finally:
        await child.kill()

    assert code == 2, log
    assert "DATABASE_PATH" in log
    assert_clean(log)
    assert not any(r.path.endswith("/connect") for r in fakes.amojo.requests)


async def test_a_second_bridge_on_the_same_database_exits_2_naming_the_first(
    fakes: Fakes, spawn: Any
) -> None:
    first = await spawn()
    await first.wait_healthy()
    sends_before = len(fakes.telegram.calls_of("getUpdates"))

    second = await spawn()
    code, log = await exit_code(second, 30)

    assert code == 2, log
    assert f"another bridge (pid {first.process.pid})" in log
    assert "DATABASE_PATH" in log
    assert_clean(log)
    first.still_running()
    await first.wait_healthy()
    assert len(fakes.telegram.calls_of("getUpdates")) >= sends_before

    # kill -9 releases the lock: the next start runs.
    first.process.send_signal(signal.SIGKILL)
    await first.wait_exit(30)
    third = await spawn()
    await third.wait_healthy()


async def test_crm_refusing_the_token_exits_2_naming_it(fakes: Fakes, spawn: Any) -> None:
    child = await spawn(AMOCRM_ACCESS_TOKEN="a-token-amocrm-does-not-know")
    code, log = await exit_code(child)

    assert code == 2, log
    assert "AMOCRM_ACCESS_TOKEN" in log and "401" in log
    assert "a-token-amocrm-does-not-know" not in log
    assert_clean(log)
    assert fakes.amojo.connects == []


# ---- transient failures: retried, health answers meanwhile -----------------------------------


async def test_sources_api_refusal_exits_2_saying_what_to_fix(fakes: Fakes, spawn: Any) -> None:
    fakes.crm.fail("/api/v4/sources", 403, times=10)
    child = await spawn(AMOCRM_SOURCES="true")
    code, log = await exit_code(child)

    assert code == 2, log
    assert "AMOCRM_SOURCES" in log and "403" in log
    assert "administrator" in log and "lead_sources" in log
    assert_clean(log)
    assert not fakes.amojo.messages


async def test_crm_503_during_the_account_lookup_is_retried_without_a_restart(
    fakes: Fakes, spawn: Any
) -> None:
    fakes.crm.fail("/api/v4/account", 503, times=1)
    child = await spawn()
    await child.wait_healthy()

    assert len(fakes.crm.requests_to("/api/v4/account")) == 2
    assert len(fakes.amojo.connects) == 1
    log = child.log()
    assert "amoCRM at 127.0.0.1" in log and "503" in log
    assert_clean(log)


async def test_unreachable_crm_on_a_first_start_is_waited_for_with_health_saying_so(
    fakes: Fakes, spawn: Any
) -> None:
    down = free_port()
    child = await spawn(AMOCRM_BASE_URL=f"http://127.0.0.1:{down}")
    status, body = await child.wait_health(
        has_problem(f"waiting for amoCRM at 127.0.0.1:{down}"), what="a start-up wait"
    )
    assert status == 503
    assert body["status"] == "unhealthy"
    async with aiohttp.ClientSession() as http, http.get(f"{child.url}/metrics") as response:
        assert response.status == 200
        assert "bridge_amojo_hooks_total" in await response.text()

    code = await child.stop_with(signal.SIGTERM, STOP_WITHIN_SECONDS)
    log = child.log()
    assert code == 0, log
    assert "amojo unreachable" not in log
    assert f"amoCRM at 127.0.0.1:{down}" in log
    assert_clean(log)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_while_start_up_waits_for_amojo_exits_0(
    fakes: Fakes, spawn: Any, sig: signal.Signals
) -> None:
    fakes.amojo.set_down(503)
    child = await spawn()
    await child.wait_health(has_problem("waiting for amojo"), what="the connect wait")

    started = time.monotonic()
    code = await child.stop_with(sig, STOP_WITHIN_SECONDS)
    assert code == 0, child.log()
    assert time.monotonic() - started < STOP_WITHIN_SECONDS
    assert_clean(child.log())


async def test_sigterm_while_telegram_is_down_exits_0(fakes: Fakes, spawn: Any) -> None:
    fakes.telegram.set_down(True)
    child = await spawn()
    status, _ = await child.wait_health(has_problem("Telegram failing"), what="Telegram outage")
    assert status == 200  # degraded: hooks are taken, a few minutes are tolerated

    code = await child.stop_with(signal.SIGTERM, STOP_WITHIN_SECONDS)
    assert code == 0, child.log()
    assert_clean(child.log())


async def test_sigterm_as_soon_as_a_restart_listens_exits_0(fakes: Fakes, spawn: Any) -> None:
    first = await spawn()
    await first.wait_healthy()
    assert await first.stop_with(signal.SIGTERM) == 0

    # A stored scope: it listens before aiogram is even imported (a cold start, as in life).
    second = await spawn(warm=False)
    await second.wait_health(lambda status, body: True, what="the early listener")
    code = await second.stop_with(signal.SIGTERM, STOP_WITHIN_SECONDS)
    assert code == 0, second.log()
    assert_clean(second.log())


# ---- health tells the truth while running (in-process) ------------------------------------


async def test_telegram_outage_is_degraded_then_unhealthy_then_over(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    running = await bridges.start()
    fakes.telegram.set_down(True)
    status, body = await wait_health(running.url, has_problem("Telegram failing for"))
    assert status == 200 and body["status"] == "degraded"

    outage = running.bridge.metrics.outages.failing("Telegram")
    assert outage is not None
    outage.since -= 10 * 60  # ten minutes of failures later
    status, body = await wait_health(running.url, has_problem("Telegram failing for 6"))
    assert status == 503 and body["status"] == "unhealthy"

    fakes.telegram.set_down(False)
    status, body = await wait_health(
        running.url, lambda _, body: not any("Telegram" in p for p in body["problems"])
    )
    assert status == 200


async def test_revoked_token_makes_health_unhealthy_naming_it(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    running = await bridges.start()
    fakes.telegram.token = "123456:another-token"  # revoked in @BotFather
    status, body = await wait_health(running.url, has_problem("TELEGRAM_BOT_TOKEN"))
    assert status == 503
    assert any("revoked" in problem for problem in body["problems"])


async def test_restart_while_crm_is_down_takes_hooks_then_connects_in_background(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    scope_id = first.scope_id
    await first.stop()
    fakes.crm.fail("/api/v4/account", 503, times=2)

    second = await bridges.start()
    assert second.scope_id == scope_id
    hook = fakes.amojo.message_hook("tg-1501", text="while amoCRM is down")
    fakes.telegram.push_update(private_message_update(1501, 1, text="hi"))
    status, _ = await fakes.amojo.post_hook(second.url, scope_id, hook)
    assert status == 200
    await wait_until(lambda: len(fakes.amojo.connects) == 2, timeout=15, what="the re-connect")
    status, _ = await wait_health(
        second.url, lambda _, body: not any("connect" in p for p in body["problems"])
    )
    assert status == 200


async def test_an_unexpected_error_exits_1_instead_of_hanging(fakes: Fakes, tmp_path: Path) -> None:
    # A value the settings check would refuse, slipped past it: aiogram raises inside start-up.
    script = (
        "import asyncio, os, sys\n"
        "from bot.launch import main\n"
        "from bot.common.settings import load_settings\n"
        "settings = load_settings(_env_file=None)\n"
        "object.__setattr__(settings, 'TELEGRAM_BOT_TOKEN', "
        "type(settings.TELEGRAM_BOT_TOKEN)('123456:with space'))\n"
        "sys.exit(asyncio.run(main(settings)))\n"
    )
    env = {
        "PATH": os.environ.get("PATH", ""),
        **bridge_env(fakes, tmp_path / "b.sqlite3", free_port()),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1, output.decode()
    assert "unexpected error" in output.decode()


@pytest.mark.parametrize("stage", ["connect-wait", "restart-listening"])
async def test_two_quick_signals_still_exit_0(fakes: Fakes, spawn: Any, stage: str) -> None:
    if stage == "restart-listening":
        first = await spawn()
        await first.wait_healthy()
        assert await first.stop_with(signal.SIGTERM) == 0
    else:
        fakes.amojo.set_down(503)
    child = await spawn(warm=stage != "restart-listening")  # cold: signals while importing
    await child.wait_health(lambda status, body: True, what="the listener")
    child.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.02)
    code = await child.stop_with(signal.SIGTERM, STOP_WITHIN_SECONDS)
    assert code == 0, child.log()
    assert_clean(child.log())


async def test_telegram_409_conflict_is_unhealthy(fakes: Fakes, bridges: BridgeFactory) -> None:
    running = await bridges.start()
    fakes.telegram.fail(
        "getUpdates",
        status=409,
        description="Conflict: terminated by other getUpdates request",
        times=1000,
    )
    status, body = await wait_health(running.url, has_problem("409 Conflict"))
    assert status == 503 and body["status"] == "unhealthy"


async def test_cancelled_inside_startup_hooks_still_gives_sends_their_grace(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    settings = bridges.settings(free_port())
    bridge = await create_bridge(settings, backoff=FAST_BACKOFF)
    blocked = asyncio.Event()

    async def slow_startup_hook() -> None:  # e.g. setMyCommands on a slow Telegram
        blocked.set()
        await asyncio.Event().wait()

    bridge.dp.startup.register(slow_startup_hook)
    task = asyncio.create_task(bridge.run_polling(handle_signals=False))
    await asyncio.wait_for(blocked.wait(), 10)
    assert bridge.workers_running
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not bridge.workers_running  # on_shutdown ran: workers stopped with their grace
    assert not bridge.listener.running
    await bridge.close()


class FlakyCrm(httpx.AsyncBaseTransport):
    """amoCRM through a proxy: first 503, then an answer nobody expects, then the real one."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls == 1:
            return httpx.Response(503)
        if self.calls == 2:
            return httpx.Response(200, text="<html>maintenance</html>")
        if self.calls == 3:
            raise RuntimeError("a proxy bug")
        return await self.inner.handle_async_request(request)


async def test_background_connect_survives_unexpected_answers(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    await first.stop()
    bridges.running.clear()
    flaky = FlakyCrm()
    bridge = await create_bridge(
        bridges.settings(free_port()), backoff=FAST_BACKOFF, transports=Transports(crm=flaky)
    )
    task = asyncio.create_task(bridge.run_polling(handle_signals=False))
    try:
        await wait_until(
            lambda: len(fakes.amojo.connects) == 2 and bridge.listener.deps.connect_pending is None,
            timeout=20,
            what="the background re-connect done",
        )
        assert bridge.connected
    finally:
        with contextlib.suppress(RuntimeError):
            await bridge.dp.stop_polling()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        await bridge.close()
        await flaky.inner.aclose()
