"""Property-based fuzzing of the hook listener: never a 5xx, nothing stored unless signed."""

from __future__ import annotations

import asyncio
import http.client
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.amocrm.amojo import hook_signature
from bot.amocrm.channel import Channel
from bot.amocrm.hooks import HookReceiver
from bot.common.metrics import Metrics
from storage import open_repository

SECRET = "fuzz-secret"
SCOPE = "channel_account"

VALID_HOOK: dict[str, Any] = {
    "account_id": "account",
    "time": 1700000000,
    "message": {
        "receiver": {"id": "r1", "client_id": "tg-5"},
        "sender": {"id": "manager"},
        "conversation": {"id": "amo-conv", "client_id": "tg-5"},
        "timestamp": 1700000000,
        "msec_timestamp": 1700000000000,
        "message": {"id": "amo-msg-1", "type": "text", "text": "hi", "markup": None},
    },
}
TYPING_HOOK: dict[str, Any] = {
    "account_id": "account",
    "time": 1700000000,
    "action": {
        "typing": {
            "user": {"id": "manager"},
            "conversation": {"id": "amo-conv", "client_id": "tg-5"},
            "expired_at": 1700000005,
        }
    },
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))


@st.composite
def mutated_hooks(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message or typing hook with a few fields deleted or replaced by random JSON."""
    hook: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from([VALID_HOOK, TYPING_HOOK]))))
    for _ in range(draw(st.integers(0, 3))):
        paths = list(_paths(hook))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = hook
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return hook


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    mutated_hooks().map(lambda hook: json.dumps(hook).encode()),
)
header_names = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=20,
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)


@dataclass
class Listener:
    """The hook route on a real socket, served from a background event loop."""

    port: int
    db_path: Path

    def jobs(self) -> int:
        """How many jobs are stored."""
        with sqlite3.connect(self.db_path) as conn:
            return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    """Serve HookReceiver on 127.0.0.1 from a thread (hypothesis drives it synchronously)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        repo = await open_repository(tmp_path / "fuzz.sqlite3")
        receiver = HookReceiver(
            repo, Channel(scope_id=SCOPE, account_id="account"), SECRET, Metrics()
        )
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/amojo/{scope_id}", receiver.receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = runner.addresses[0][1]
        state["stop"] = asyncio.Event()
        ready.set()
        await state["stop"].wait()
        await runner.cleanup()
        await repo.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    assert ready.wait(10)
    try:
        yield Listener(port=int(state["port"]), db_path=tmp_path / "fuzz.sqlite3")
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)
        loop.close()


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST and return the status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    signature=st.sampled_from(["valid", "valid-upper", "missing", "other-body", "random"]),
    random_signature=st.text(max_size=50),
    scope=st.sampled_from([SCOPE, SCOPE, "other", "x" * 300]),
    extra=st.dictionaries(header_names, header_values, max_size=3),
    content_type=st.sampled_from(["application/json", "text/plain", "", "application/json; x"]),
)
@example(
    body=b"{}",
    signature="random",
    random_signature="\u00a1",
    scope=SCOPE,
    extra={},
    content_type="application/json",
)
@example(
    body=b'{"action":{"typing":{"conversation":{"id":"a","client_id":true}}}}',
    signature="valid",
    random_signature="",
    scope=SCOPE,
    extra={},
    content_type="application/json",
)
def test_hook_listener_never_fails_and_stores_only_signed_hooks(
    listener: Listener,
    body: bytes,
    signature: str,
    random_signature: str,
    scope: str,
    extra: dict[str, str],
    content_type: str,
) -> None:
    headers = {k: v for k, v in extra.items() if k.lower() not in ("content-length", "host")}
    headers = {k: v for k, v in headers.items() if k.lower() != "x-signature"}
    if content_type:
        headers["Content-Type"] = content_type
    match signature:
        case "valid":
            headers["X-Signature"] = hook_signature(SECRET, body)
        case "valid-upper":
            headers["X-Signature"] = hook_signature(SECRET, body).upper()
        case "other-body":
            headers["X-Signature"] = hook_signature(SECRET, body + b" ")
        case "random":
            value = random_signature.encode("latin-1", "ignore").decode("latin-1").strip()
            if value and value.isprintable():
                headers["X-Signature"] = value
    signed = signature in ("valid", "valid-upper")
    before = listener.jobs()

    status = post(listener.port, f"/amojo/{scope}", body, headers)

    assert status < 500, (status, body, headers)
    if not signed or scope != SCOPE:
        assert status in (401, 404), status
        assert listener.jobs() == before
    elif status != 200:
        assert status == 400, status
        assert listener.jobs() == before
