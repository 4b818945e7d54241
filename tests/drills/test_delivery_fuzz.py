"""Drills: hypothesis throws odd getUpdates batches and odd signed hooks at a running bridge.

Telegram → amoCRM: raw updates of unknown types, with fields missing, extra or of the wrong
type. Intake never stalls (an ordinary message after each batch reaches amoCRM), every update
is confirmed, and no log line carries a name, a text or a phone from them.

amoCRM → Telegram: signed hooks of arbitrary JSON shapes. The listener never answers 5xx,
no worker spins (CPU time measured while idle afterwards), and an ordinary hook to the same
chat after each one is always delivered.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.launch import QUIET_LOGGERS
from simulators.factories import make_message, make_user
from storage import JobState
from tests.drills.background import Background, background_bridge

SECRET_NAME = "Zoltan Quixby"
SECRET_TEXT = "SECRET-PAYLOAD-4417"
SECRET_PHONE = "+79164417000"
CPU_IDLE_LIMIT = 0.35  # seconds of CPU in a quiet second: a spinning worker takes ~1

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))


@st.composite
def mutated(draw: st.DrawFn, template: dict[str, Any], extra_keys: list[str]) -> dict[str, Any]:
    """A template with a few fields deleted, replaced by random JSON, or added."""
    value: dict[str, Any] = copy.deepcopy(template)
    for _ in range(draw(st.integers(0, 4))):
        paths = list(_paths(value))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.sampled_from(extra_keys))] = draw(json_values)
    return value


# ---- Telegram → amoCRM ------------------------------------------------------------------

CUSTOMER = make_user(4001, first_name="Zoltan", last_name="Quixby")
UPDATE_TEMPLATES: list[dict[str, Any]] = [
    {"message": make_message(4001, 1, user=CUSTOMER, text=SECRET_TEXT)},
    {"edited_message": {**make_message(4001, 1, user=CUSTOMER, text=SECRET_TEXT), "edit_date": 2}},
    {
        "message": make_message(
            4001,
            2,
            user=CUSTOMER,
            contact={"phone_number": SECRET_PHONE, "first_name": "Zoltan", "user_id": 4001},
        )
    },
    {
        "message": make_message(
            4001,
            3,
            user=CUSTOMER,
            caption=SECRET_TEXT,
            forward_origin={"type": "user", "date": 1, "sender_user": CUSTOMER},
            photo=[{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}],
        )
    },
    {
        "message_reaction": {
            "chat": {"id": 4001, "type": "private", "first_name": "Zoltan"},
            "message_id": 1,
            "user": CUSTOMER,
            "date": 1,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": "👍"}],
        }
    },
    {"callback_query": {"id": "cb", "from": CUSTOMER, "chat_instance": "ci", "data": "amo:0:0"}},
]
EXTRA_UPDATE_KEYS = ["message", "poll", "forward_origin", "reply_to_story", "story", "x_new"]


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Background, list[str]]]:
    """A bridge, and every log line it writes (as it would at LOG_LEVEL=DEBUG)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *QUIET_LOGGERS)}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with background_bridge(tmp_path_factory.mktemp("intake") / "bridge.sqlite3") as bg:
            yield bg, lines
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


_markers = itertools.count(1)


def test_odd_update_batches_never_stall_intake_nor_reach_the_log(
    intake: tuple[Background, list[str]],
) -> None:
    bg, lines = intake
    telegram, amojo = bg.fakes.telegram, bg.fakes.amojo

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        batch=st.lists(
            st.one_of(
                *(
                    mutated(template, EXTRA_UPDATE_KEYS).filter(bool)
                    for template in UPDATE_TEMPLATES
                ),
                st.dictionaries(st.sampled_from(["brand_new", "x"]), json_values, min_size=1),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def example(batch: list[dict[str, Any]]) -> None:
        marker = next(_markers)

        async def push_and_wait() -> None:
            for update in batch:
                telegram.push_update(update)
            before = len(amojo.messages_for("tg-4900"))
            sentinel = telegram.push_update(
                {"message": make_message(4900, 10_000 + marker, text=f"after batch {marker}")}
            )
            await telegram.wait_for(lambda: telegram.confirmed_offset > sentinel, timeout=20)
            await amojo.wait_for(lambda: len(amojo.messages_for("tg-4900")) > before, timeout=20)

        bg.run(push_and_wait)

    example()
    logged = "\n".join(lines)
    for secret in (SECRET_NAME, "Quixby", SECRET_TEXT, SECRET_PHONE, SECRET_PHONE[1:]):
        assert secret not in logged, [line for line in lines if secret in line][:3]
    assert "aiogram cannot read" in logged  # the drill did reach what it is about


# ---- amoCRM → Telegram ------------------------------------------------------------------

EXTRA_HOOK_KEYS = ["message", "receiver", "markup", "reply_to", "file_size", "type", "x_new"]


def hook_template(chat: int, amo_id: str) -> dict[str, Any]:
    """A documented message hook (spec §11.4 shape) to our chat `chat`."""
    return {
        "account_id": "52e591f7-c98f-4255-8495-827210138c81",
        "time": int(time.time()),
        "message": {
            "receiver": {"id": "r1", "client_id": f"tg-{chat}", "phone": "79161234567"},
            "sender": {"id": "manager"},
            "conversation": {"id": f"amo-{chat}", "client_id": f"tg-{chat}"},
            "timestamp": int(time.time()),
            "msec_timestamp": int(time.time() * 1000),
            "message": {
                "id": amo_id,
                "type": "text",
                "text": "Здравствуйте",
                "markup": {"buttons": [[{"text": "Да"}]]},
                "media": "",
                "file_name": "",
                "file_size": 0,
            },
        },
    }


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """A bridge taking hooks."""
    with background_bridge(tmp_path_factory.mktemp("delivery") / "bridge.sqlite3") as bg:
        yield bg


_chats = itertools.count(5001)


def test_odd_signed_hooks_never_fail_spin_or_block_their_chat(delivery: Background) -> None:
    bg = delivery
    amojo, telegram = bg.fakes.amojo, bg.fakes.telegram

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def example(data: st.DataObject) -> None:
        chat = next(_chats)
        odd = data.draw(
            st.one_of(
                mutated(hook_template(chat, f"odd-{chat}"), EXTRA_HOOK_KEYS),
                json_values.map(lambda value: {"message": value}),
            )
        )
        ordinary = hook_template(chat, f"ordinary-{chat}")
        ordinary["message"]["message"]["text"] = f"ordinary {chat}"

        async def post_both() -> tuple[int, int]:
            raw = json.dumps(odd).encode()
            odd_status, _ = await amojo.post_hook(bg.bridge.url, bg.bridge.scope_id, raw)
            good_status, _ = await amojo.post_hook(bg.bridge.url, bg.bridge.scope_id, ordinary)
            await telegram.wait_for(
                lambda: any(
                    c.params.get("text") == f"ordinary {chat}" for c in telegram.sent_messages(chat)
                ),
                timeout=20,
                what=f"the ordinary hook to {chat}",
            )
            return odd_status, good_status

        odd_status, good_status = bg.run(post_both)
        assert odd_status in (200, 400), odd_status
        assert good_status == 200

    example()

    async def due() -> list[Any]:
        return [
            job
            for job in await bg.bridge.bridge.repo.jobs(state=JobState.PENDING)
            if job.next_attempt_at <= time.time()
        ]

    deadline = time.monotonic() + 20
    while bg.run(due) and time.monotonic() < deadline:
        time.sleep(0.2)
    started_cpu, started = time.process_time(), time.monotonic()
    time.sleep(1.0)
    cpu = (time.process_time() - started_cpu) / (time.monotonic() - started)
    assert cpu < CPU_IDLE_LIMIT, f"{cpu:.2f} s of CPU per idle second: something spins"
