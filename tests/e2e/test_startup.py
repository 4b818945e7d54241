"""Startup: the account id from the CRM, and a refused connect that stops the process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from simulators.factories import private_message_update
from tests.harness import (
    ACCOUNT_ID,
    CHANNEL_SECRET,
    CRM_TOKEN,
    BridgeFactory,
    BridgeProcess,
    Fakes,
    RunningBridge,
    spawn_bridge,
    wait_until,
)


async def test_account_id_is_read_from_the_crm_with_the_bearer_token(
    fakes: Fakes, bridge: RunningBridge
) -> None:
    requests = fakes.crm.requests_to("/api/v4/account", "GET")

    assert len(requests) == 1
    assert requests[0].query.get("with") == "amojo_id"
    assert requests[0].headers.get("Authorization") == f"Bearer {CRM_TOKEN}"
    assert [connect["account_id"] for connect in fakes.amojo.connects] == [ACCOUNT_ID]
    assert fakes.amojo.connects[0]["hook_api_version"] == "v2"
    assert bridge.bridge.channel.account_id == ACCOUNT_ID


async def test_configured_account_id_skips_the_crm(fakes: Fakes, bridges: BridgeFactory) -> None:
    await bridges.start(AMOJO_ACCOUNT_ID=ACCOUNT_ID)

    assert fakes.crm.requests_to("/api/v4/account") == []
    assert [connect["account_id"] for connect in fakes.amojo.connects] == [ACCOUNT_ID]


async def run_until_exit(child: BridgeProcess) -> tuple[int, str]:
    """Exit code and log of a child expected to stop by itself."""
    try:
        code = await child.wait_exit(60)
    finally:
        await child.kill()
    return code, child.log()


@pytest.mark.parametrize(
    ("extra", "named", "status"),
    [
        pytest.param(
            {"AMOJO_CHANNEL_SECRET": "0123456789abcdef0123456789abcdef01234567"},
            "AMOJO_CHANNEL_SECRET",
            "403",
            id="wrong-secret",
        ),
        pytest.param(
            {"AMOJO_CHANNEL_ID": "00000000-1111-2222-3333-444444444444"},
            "AMOJO_CHANNEL_ID",
            "404",
            id="unknown-channel",
        ),
    ],
)
async def test_refused_connect_stops_with_exit_code_2(
    fakes: Fakes, tmp_path: Path, extra: dict[str, Any], named: str, status: str
) -> None:
    child = await spawn_bridge(fakes, tmp_path / "bridge.sqlite3", tmp_path / "bridge.log", **extra)
    code, log = await run_until_exit(child)

    assert code == 2, log
    assert named in log
    assert status in log
    assert "Traceback" not in log
    for secret in (CHANNEL_SECRET, "0123456789abcdef0123456789abcdef01234567", CRM_TOKEN):
        assert secret not in log
    assert fakes.amojo.connects == []
    assert fakes.telegram.calls_of("getUpdates") == []


async def test_restart_while_amojo_is_down_uses_the_stored_scope(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    first = await bridges.start()
    scope_id = first.scope_id
    await first.stop()
    fakes.amojo.set_down(503)

    second = await bridges.start()  # does not wait for amojo: hooks must be accepted meanwhile
    assert second.scope_id == scope_id
    fakes.telegram.push_update(private_message_update(1401, 1, text="пока amoCRM лежит"))
    hook = fakes.amojo.message_hook("tg-1401", text="manager while amojo is down")
    status, _ = await fakes.amojo.post_hook(second.url, scope_id, hook)
    assert status == 200
    await fakes.telegram.wait_for(
        lambda: any(
            c.params.get("text") == "manager while amojo is down"
            for c in fakes.telegram.sent_messages(1401)
        ),
        what="manager message delivered while amojo is down",
    )
    assert fakes.amojo.messages == []

    fakes.amojo.set_down(None)
    await fakes.amojo.wait_for(lambda: len(fakes.amojo.messages) == 1, timeout=10, what="sent")
    assert fakes.amojo.messages[0]["msgid"] == "tg-1401-1"


async def test_first_start_waits_for_amojo_then_connects(
    fakes: Fakes, bridges: BridgeFactory
) -> None:
    fakes.amojo.set_down(503)
    starting = asyncio.create_task(bridges.start())
    await wait_until(
        lambda: any(r.path.endswith("/connect") for r in fakes.amojo.requests),
        what="a connect attempt",
    )
    assert not starting.done()
    assert fakes.amojo.connects == []

    fakes.amojo.set_down(None)
    running = await asyncio.wait_for(starting, timeout=15)
    assert running.scope_id == fakes.amojo.scope_id
    assert len(fakes.amojo.connects) == 1
